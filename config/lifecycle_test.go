package config

import (
	"strings"
	"testing"
	"time"
)

const oneInstance = `instances:
- name: main
  url: https://example.jfrog.io
  registryHosts: [example.jfrog.io]
`

func TestLifecycleDefaultsCleanUpAndCapBackoffAtFiveMinutes(t *testing.T) {
	c, err := Parse([]byte(oneInstance))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Cleanup() || c.BackoffCap.Duration != DefaultBackoffCap {
		t.Errorf("Cleanup() = %v, backoffCap = %s; want true, %s", c.Cleanup(), c.BackoffCap, DefaultBackoffCap)
	}
	c, err = Parse([]byte(oneInstance + "cleanupOnOptOut: false\nbackoffCap: 30s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cleanup() || c.BackoffCap.Duration != 30*time.Second {
		t.Errorf("Cleanup() = %v, backoffCap = %s; want false, 30s", c.Cleanup(), c.BackoffCap)
	}
}

func TestTokenTTLMustLeaveRoomForRetriesAndFailover(t *testing.T) {
	cases := []struct {
		name, doc string
		field     []string
	}{
		{"backoff cap below a second", oneInstance + "backoffCap: 10ms\n", []string{"backoffCap"}},
		{"refresh window within the backoff cap", oneInstance + "  tokenTTL: 10m\n", []string{"instances[0].tokenTTL", "backoffCap 5m0s"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, f := range tc.field {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("error %q does not name %q", err, f)
				}
			}
		})
	}

	c, err := Parse([]byte(oneInstance + "  tokenTTL: 40s\nrefreshThreshold: 0.5\nrequestTimeout: 2s\nbackoffCap: 4s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckFailover(15 * time.Second); err != nil {
		t.Errorf("a 20s refresh window outlives a 15s lease plus 2s: %v", err)
	}
	err = c.CheckFailover(30 * time.Second)
	if err == nil || !strings.Contains(err.Error(), "instances[0].tokenTTL") || !strings.Contains(err.Error(), "lease duration 30s") {
		t.Errorf("CheckFailover(30s) = %v, want an error naming tokenTTL and the lease", err)
	}
}
