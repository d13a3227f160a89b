package config

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestRefreshWritesPerSecondDefaultsTo50(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Refresh.WritesPerSecond != DefaultWritesPerSecond || DefaultWritesPerSecond != 50 {
		t.Errorf("refresh.writesPerSecond = %v, want 50", c.Refresh.WritesPerSecond)
	}
	c, err = Parse([]byte(minimal + "refresh: {writesPerSecond: 2.5}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Refresh.WritesPerSecond != 2.5 {
		t.Errorf("refresh.writesPerSecond = %v, want 2.5", c.Refresh.WritesPerSecond)
	}
	if _, err := Parse([]byte(minimal + "refresh: {writesPerSecnd: 2}\n")); err == nil {
		t.Error("a misspelt refresh key was accepted")
	}
}

func TestRefreshWritesPerSecondBounds(t *testing.T) {
	ttl := func(d string) string { return "  tokenTTL: " + d + "\n" }
	cases := []struct {
		name, doc string
		want      string // "" = accepted
	}{
		{"negative", minimal + "refresh: {writesPerSecond: -1}\n", "refresh.writesPerSecond: must be a positive number up to 10000, got -1"},
		// Too small to write one Secret in the age of the universe: the time
		// it takes must not overflow into a negative duration that passes.
		{"vanishing", minimal + "refresh: {writesPerSecond: 1e-10}\n", "refresh.writesPerSecond: 1e-10 writes one Secret every"},
		{"too large for the limiter", minimal + "refresh: {writesPerSecond: 1e300}\n", "must be a positive number up to 10000, got 1e+300"},
		{"the largest", minimal + "refresh: {writesPerSecond: 10000}\n", ""},
		{"tiny but positive", minimal + ttl("24h") + "refresh: {writesPerSecond: 0.001}\n", ""},
		// 10s × 0.25 = 2.5s window, a quarter is 625ms: one write every 625ms is 1.6/s.
		{"one write per quarter window", minimal + ttl("10s") + "requestTimeout: 2s\nbackoffCap: 1s\nrefresh: {writesPerSecond: 1.6}\n", ""},
		{"slower than one write per quarter window", minimal + ttl("10s") + "requestTimeout: 2s\nbackoffCap: 1s\nrefresh: {writesPerSecond: 1.5}\n",
			"refresh.writesPerSecond: 1.5 writes one Secret every 0.667s, more than a quarter (0.625s) of the 2.5s between refresh point " +
				"and expiry of instances[0]; set refresh.writesPerSecond to at least 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("rejected: %v", err)
			case tc.want != "" && err == nil:
				t.Error("accepted")
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %q\n does not say %q", err, tc.want)
			}
		})
	}
	// Not finite: YAML cannot carry it through JSON, Validate still refuses it.
	for _, w := range []float64{math.Inf(1), math.NaN()} {
		c, err := Parse([]byte(minimal))
		if err != nil {
			t.Fatal(err)
		}
		c.Refresh.WritesPerSecond = w
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "refresh.writesPerSecond") {
			t.Errorf("writesPerSecond %v: Validate() = %v, want an error naming refresh.writesPerSecond", w, err)
		}
	}
}

func TestCheckRotationNamesTheNeededRate(t *testing.T) {
	// Two instances: the smallest refresh window decides (3h × 0.25 = 45m).
	c, err := Parse([]byte(minimal + `- name: other
  url: https://other.jfrog.io
  registryHosts: [other.jfrog.io]
  secretName: other
  tokenTTL: 12h
`))
	if err != nil {
		t.Fatal(err)
	}
	if b, w := c.RotationBudget(); b != 675*time.Second || w != 45*time.Minute {
		t.Fatalf("RotationBudget() = %s, %s, want 675s, 45m", b, w)
	}
	if d := c.RotationDuration(40000); d != 800*time.Second {
		t.Errorf("RotationDuration(40000) = %s, want 800s", d)
	}
	want := "refresh.writesPerSecond 50 rotates 40000 managed Secrets in 800s, more than a quarter (675s) of the 45m " +
		"between refresh point and expiry; set refresh.writesPerSecond to at least 60"
	if err := c.CheckRotation(40000); err == nil || err.Error() != want {
		t.Errorf("CheckRotation(40000) = %v,\nwant %s", err, want)
	}
	// 675s × 50/s = 33750 Secrets fit exactly.
	if err := c.CheckRotation(33750); err != nil {
		t.Errorf("CheckRotation(33750) = %v, want nil", err)
	}
	if err := c.CheckRotation(33751); err == nil {
		t.Error("CheckRotation(33751) = nil, want an error")
	}
	tiny := *c
	tiny.Refresh.WritesPerSecond = 1e-10 // set past Validate: the time must saturate, not overflow into a pass
	if err := tiny.CheckRotation(40000); err == nil {
		t.Error("CheckRotation(40000) at 1e-10 writes/s = nil, want an error")
	}
	if err := c.CheckRotation(0); err != nil {
		t.Errorf("CheckRotation(0) = %v", err)
	}
}
