package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
)

func TestPlanRefresh(t *testing.T) {
	cfg, err := config.Parse([]byte("instances:\n- name: main\n  url: https://a.example\n  registryHosts: [a.example]\n"))
	if err != nil {
		t.Fatal(err)
	}
	flags := func(enabled bool, ns string, lease time.Duration) *leaderFlags {
		return &leaderFlags{enabled: enabled, namespace: ns, leaseDuration: lease, renewDeadline: 10 * time.Second,
			retryPeriod: 2 * time.Second, namespaceFile: filepath.Join(t.TempDir(), "absent")}
	}
	t.Setenv("POD_NAMESPACE", "")
	tests := []struct {
		name    string
		flags   *leaderFlags
		want    refreshPlan
		wantErr string
	}{
		{"elected with a namespace", flags(true, "apw", 15*time.Second), refreshPlan{enabled: true, elected: true}, ""},
		{"every replica when election is off", flags(false, "", 15*time.Second), refreshPlan{enabled: true}, ""},
		{"off when no Lease namespace is known", flags(true, "", 15*time.Second), refreshPlan{}, ""},
		{"renew deadline not below the lease", flags(true, "apw", 10*time.Second), refreshPlan{}, "renew deadline"},
		{"tokens that cannot outlive a failover", flags(true, "apw", time.Hour), refreshPlan{}, "lease duration 1h0m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planRefresh(cfg, tt.flags)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("planRefresh = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
