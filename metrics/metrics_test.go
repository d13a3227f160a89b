package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestTokenExpiryGaugeIsReadFromItsSourceAtScrapeTime(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m.expiry.now = func() time.Time { return now }
	gauge := func() map[string]float64 { return samples(t, reg, "artifactory_pull_token_expiry_seconds") }
	if g := gauge(); len(g) != 0 {
		t.Fatalf("gauge without a source = %v, want no sample", g)
	}
	held := map[string]time.Time{"main": now.Add(10 * time.Minute)}
	m.SetTokenExpirySource(func() map[string]time.Time { return held })
	if g := gauge(); len(g) != 1 || g["main"] != 600 {
		t.Fatalf("gauge = %v, want main: 600", g)
	}
	now = now.Add(15 * time.Minute) // nothing refreshed the Secrets
	held["other"] = now.Add(time.Hour)
	if g := gauge(); g["main"] != -300 || g["other"] != 3600 {
		t.Fatalf("gauge = %v, want main: -300 (expired), other: 3600", g)
	}
}

// samples is metric name in reg by its label values, space-joined in the
// order of the label names (as Prometheus sorts them), counters and gauges
// alike.
func samples(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var values []string
			for _, l := range m.GetLabel() {
				values = append(values, l.GetValue())
			}
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			out[strings.Join(values, " ")] = v
		}
	}
	return out
}
