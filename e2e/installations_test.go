package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// secondOptIn is the opt-in label of the second installation.
const secondOptIn = "apw-e2e/second-installation"

// startSecondInstallation starts another installation of the webhook with
// cfg: its own process, elected in its own namespace system (its Lease and
// its token checkpoint), which the API server does not call. It stops when
// the test ends.
func startSecondInstallation(t *testing.T, cfg, system string) *harness.Webhook {
	t.Helper()
	o, err := stack.WebhookOptions(context.Background(), harness.PodIdentity)
	if err != nil {
		t.Fatal(err)
	}
	o.Config, o.Addr, o.Dir = cfg, "", filepath.Join(stack.Dir, "webhook-second")
	o.Args = append([]string{"--leader-election-namespace=" + system}, leaderArgs[1:]...)
	w, err := harness.StartWebhook(context.Background(), o)
	if err != nil {
		t.Fatalf("starting the second installation: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("second installation logs:\n" + w.Logs())
		}
		w.Stop()
	})
	return w
}

// TestTwoInstallationsOnOneClusterKeepTheirOwnSecrets runs two
// installations of the webhook on one API server, as two Helm releases
// would: one instance name and one Secret name for both, each with its own
// opt-in label and installation name, both refreshers elected. Each
// installation's Secrets stay its own: neither deletes the other's in a
// namespace only the other opts in, neither rewrites the other's where both
// opt in (the second is told why in a warning), and no write loop starts —
// every Secret write is counted, as the API server reports them.
func TestTwoInstallationsOnOneClusterKeepTheirOwnSecrets(t *testing.T) {
	instance := runInstance("two")
	secret := "pull-" + instance
	writes := countSecretWrites(t, secret)
	cfgA := lifecycleConfig(instance, "1h", 0.5) // default installation and opt-in label
	cfgB := cfgA + "installation: second\nnamespaceLabel: " + secondOptIn + "=enabled\n"

	startLifecycleWebhook(t, cfgA) // installation A, called by the API server
	b := startSecondInstallation(t, cfgB, namespace(t, nil))
	leader := map[string]string{"name": "artifactory-pull-webhook"}
	eventually(t, 20*time.Second, "both installations to lead in their own namespaces", func() bool {
		vb, err := b.Metric("leader_election_master_status", leader)
		return err == nil && vb == 1 && metric(t, "leader_election_master_status", leader) == 1
	})

	var onlyA, onlyB []string
	for range 3 {
		onlyA = append(onlyA, optedIn(t))
		onlyB = append(onlyB, namespace(t, map[string]string{secondOptIn: "enabled"}))
	}
	both := namespace(t, map[string]string{harness.OptInLabel: "enabled", secondOptIn: "enabled"})
	for i := range onlyA {
		patchedPod(t, onlyA[i], "app", secret)
		admitVia(t, b, onlyB[i], secret)
	}
	patchedPod(t, both, "app", secret) // A writes it first
	resp := postReviewTo(t, b, podReview(t, both, "app"))
	if !resp.Allowed || strings.Contains(string(resp.Patch), secret) ||
		!strings.Contains(strings.Join(resp.Warnings, "\n"), `belongs to another installation of the webhook ("`+config.DefaultInstallation+`")`) {
		t.Errorf("installation B in a namespace both opt in: allowed=%v patch=%s warnings=%q; want no patch and a warning naming installation A",
			resp.Allowed, resp.Patch, resp.Warnings)
	}
	wantWrites := int64(2*len(onlyA) + 1)

	// Each refresher restores its own Secret when it is deleted: once both
	// have, each has seen the other's Secrets too.
	for _, ns := range []string{onlyA[0], onlyB[0]} {
		s, ok := getSecret(t, ns, secret)
		if !ok {
			t.Fatalf("the Secret in %s, opted in by one installation only, is gone: the other deleted it", ns)
		}
		if err := stack.Cluster.Client.Delete(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "the refresher of its installation to restore the Secret in "+ns, func() bool {
			_, ok := getSecret(t, ns, secret)
			return ok
		})
		wantWrites++
	}
	// What a fight would show within a few of the refreshers' reactions.
	time.Sleep(3 * time.Second)

	if n := writes.Load(); n != wantWrites {
		t.Errorf("%d writes of Secrets %s, want %d: one per namespace and installation, one per restore", n, secret, wantWrites)
	}
	owner := func(ns string) string {
		s, ok := getSecret(t, ns, secret)
		if !ok {
			return "(none)"
		}
		return s.Annotations[pullsecret.AnnotationInstallation]
	}
	for i := range onlyA {
		if got := owner(onlyA[i]); got != config.DefaultInstallation {
			t.Errorf("namespace %s opted in by installation A only holds a Secret of installation %q", onlyA[i], got)
		}
		if got := owner(onlyB[i]); got != "second" {
			t.Errorf("namespace %s opted in by installation B only holds a Secret of installation %q", onlyB[i], got)
		}
	}
	if got := owner(both); got != config.DefaultInstallation {
		t.Errorf("namespace %s opted in by both holds a Secret of installation %q, want A's, which was first", both, got)
	}
}
