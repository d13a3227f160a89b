package metrics

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

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
	got := samples(t, reg, "artifactory_pull_role_assumptions_total") // by "result role": labels in name order
	if len(got) != MaxRoleLabels+1+2 {
		t.Errorf("%d series, want %d named roles, other, and unproven refused and error", len(got), MaxRoleLabels)
	}
	for k, want := range map[string]float64{
		"success arn:aws:iam::111122223333:role/r0": 2,
		"success " + RoleOther:                      20, // 10 roles beyond the bound, twice each
		RoleRefused + " " + RoleUnproven:            MaxRoleLabels + 10,
		RoleError + " " + RoleUnproven:              MaxRoleLabels + 10,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
}
