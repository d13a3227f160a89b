package metrics

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRotationGaugesFollowTheCountAtScrapeTime(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	gauge := func(name string) map[string]float64 { return samples(t, reg, name) }
	if g := gauge("artifactory_pull_rotation_projected_seconds"); len(g) != 0 {
		t.Fatalf("projection without a source = %v, want no sample", g)
	}
	n, err := 0, errors.New("caches not synced")
	m.SetRotationSource(50, 675*time.Second, func() (int, error) { return n, err })
	if g := gauge("artifactory_pull_rotation_managed_secrets"); len(g) != 0 {
		t.Errorf("managed Secrets before the caches sync = %v, want no sample", g)
	}
	if g := gauge("artifactory_pull_rotation_budget_seconds"); g[""] != 675 {
		t.Errorf("budget = %v, want 675", g)
	}
	if g := gauge("artifactory_pull_rotation_writes_per_second"); g[""] != 50 {
		t.Errorf("writes per second = %v, want 50", g)
	}
	n, err = 40000, nil
	if g := gauge("artifactory_pull_rotation_managed_secrets"); g[""] != 40000 {
		t.Errorf("managed Secrets = %v, want 40000", g)
	}
	if g := gauge("artifactory_pull_rotation_projected_seconds"); g[""] != 800 {
		t.Errorf("projected = %v, want 800", g)
	}
	n = 500 // Secrets went: the next scrape says so
	if g := gauge("artifactory_pull_rotation_projected_seconds"); g[""] != 10 {
		t.Errorf("projected = %v, want 10", g)
	}
}
