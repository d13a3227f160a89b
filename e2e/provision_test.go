package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// provisioning turns provisionOnOptIn (the product's default) on in one of
// the tests' configurations, which turn it off so that a namespace's
// Secret is written by admission where they count its writes.
func provisioning(cfg string) string {
	out := strings.Replace(cfg, "provisionOnOptIn: false\n", "provisionOnOptIn: true\n", 1)
	if out == cfg {
		panic("config has no provisionOnOptIn: false line")
	}
	return out
}

// TestNamespaceGetsItsSecretWhenItOptsInBeforeAnyPod: with
// provisionOnOptIn a namespace that opts in gets its pull Secret from the
// leader at once — one already opted in at start too — so its first pod
// is admitted with no exchange and no write; opting out takes it away and
// opting in again brings it back.
func TestNamespaceGetsItsSecretWhenItOptsInBeforeAnyPod(t *testing.T) {
	ctx := context.Background()
	run := runInstance("prov")
	secret := "pull-" + run
	before := namespace(t, map[string]string{harness.OptInLabel: "enabled"}) // opted in before the webhook starts
	provisioned := metric(t, "artifactory_pull_lifecycle_actions_total", map[string]string{"instance": run, "action": "provisioned"})
	startLifecycleWebhook(t, provisioning(lifecycleConfig(run, "1h", 0.5)))

	eventually(t, 15*time.Second, "the Secret of a namespace opted in at start", func() bool {
		_, ok := getSecret(t, before, secret)
		return ok
	})

	ns := namespace(t, nil)
	var nsObj corev1.Namespace
	if err := stack.Cluster.Client.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		t.Fatal(err)
	}
	if _, ok := getSecret(t, ns, secret); ok {
		t.Fatal("a namespace that did not opt in has the Secret")
	}
	nsObj.Labels = map[string]string{harness.OptInLabel: "enabled"}
	start := time.Now()
	if err := stack.Cluster.Client.Update(ctx, &nsObj); err != nil {
		t.Fatal(err)
	}
	var sec *corev1.Secret
	eventually(t, 15*time.Second, "the Secret after opt-in", func() bool {
		var ok bool
		sec, ok = getSecret(t, ns, secret)
		return ok
	})
	t.Logf("Secret present %s after the opt-in label", time.Since(start).Round(time.Millisecond))
	if err := pull(ns, stack.Image, []string{secret}); err != nil {
		t.Errorf("the provisioned Secret does not pull: %v", err)
	}
	for _, n := range []string{before, ns} {
		eventually(t, 10*time.Second, "a PullSecretProvisioned Event in "+n, func() bool {
			return namespaceEventContains(t, n, pullsecret.ReasonProvisioned, "provisioned pull secret "+secret)
		})
	}
	// (Other opted-in namespaces the suite left get theirs too: at least these two.)
	if d := metric(t, "artifactory_pull_lifecycle_actions_total", map[string]string{"instance": run, "action": "provisioned"}) - provisioned; d < 2 {
		t.Errorf("lifecycle_actions_total{action=provisioned} grew by %v, want at least 2", d)
	}

	exchanges := stack.Emu.Artifactory.ExchangesFor(stack.Emu.Username)
	got, warnings := createPod(t, ns, pod("first", stack.Image))
	if !slices.Equal(pullSecretNames(got), []string{secret}) || len(warnings) != 0 {
		t.Errorf("first pod: imagePullSecrets %v, warnings %v", pullSecretNames(got), warnings)
	}
	if d := stack.Emu.Artifactory.ExchangesFor(stack.Emu.Username) - exchanges; d != 0 {
		t.Errorf("the first pod cost %d exchanges, want 0", d)
	}
	after, _ := getSecret(t, ns, secret)
	if after == nil || after.ResourceVersion != sec.ResourceVersion {
		t.Errorf("the first pod's admission wrote the Secret (resourceVersion %s → %v), want no write", sec.ResourceVersion, after)
	}

	// Opt out: cleaned up; opt in again: provisioned again.
	setLabels := func(labels map[string]string) {
		t.Helper()
		if err := stack.Cluster.Client.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
			t.Fatal(err)
		}
		nsObj.Labels = labels
		if err := stack.Cluster.Client.Update(ctx, &nsObj); err != nil {
			t.Fatal(err)
		}
	}
	setLabels(nil)
	eventually(t, 15*time.Second, "the Secret deleted at opt-out", func() bool {
		_, ok := getSecret(t, ns, secret)
		return !ok
	})
	setLabels(map[string]string{harness.OptInLabel: "enabled"})
	eventually(t, 15*time.Second, "the Secret provisioned again at opt-in", func() bool {
		_, ok := getSecret(t, ns, secret)
		return ok
	})
}
