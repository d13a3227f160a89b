package metrics

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// roleSamples is role_assumptions_total by "role result".
func roleSamples(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "artifactory_pull_role_assumptions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			out[l["role"]+" "+l["result"]] = m.GetCounter().GetValue()
		}
	}
	return out
}

// Tenants choose the role annotation: failures never name a role, and
// successes name at most MaxRoleLabels of them.
func TestRoleAssumptionsNameABoundedSetOfRoles(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	for i := range MaxRoleLabels + 10 {
		role := fmt.Sprintf("arn:aws:iam::111122223333:role/r%d", i)
		m.RoleAssumption(role, "success")
		m.RoleAssumption(role, "success")
		m.RoleAssumption(role, RoleRefused)
		m.RoleAssumption(role, RoleError)
	}
	got := roleSamples(t, reg)
	if len(got) != MaxRoleLabels+1+2 {
		t.Errorf("%d series, want %d named roles, other, and unproven refused and error", len(got), MaxRoleLabels)
	}
	for k, want := range map[string]float64{
		"arn:aws:iam::111122223333:role/r0 success": 2,
		RoleOther + " success":                      20, // 10 roles beyond the bound, twice each
		RoleUnproven + " " + RoleRefused:            MaxRoleLabels + 10,
		RoleUnproven + " " + RoleError:              MaxRoleLabels + 10,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
}
