package e2e

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// TestServiceAccountSafetyNetGivesPodsTheSecretWhileTheWebhookIsDown runs
// patchServiceAccounts: default against a second API server that, unlike
// envtest's default, runs the ServiceAccount admission plugin (the one that
// copies a ServiceAccount's imagePullSecrets into a pod naming none), as
// every real cluster does. With the webhook process stopped, a pod created
// without imagePullSecrets gets the pull Secret from its ServiceAccount and
// pulls with it. A GitOps tool's server-side apply that leaves
// imagePullSecrets alone keeps the entry; one that applies the list (atomic:
// it owns all of it) is not fought; opt-out removes only the webhook's entry.
func TestServiceAccountSafetyNetGivesPodsTheSecretWhileTheWebhookIsDown(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cluster, err := harness.StartCluster(dir, func(env *envtest.Environment) {
		env.ControlPlane.GetAPIServer().Configure().Disable("disable-admission-plugins")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Stop() })
	c := cluster.Client
	if err := cluster.CreateNamespace(ctx, harness.WebhookNamespace, nil); err != nil {
		t.Fatal(err)
	}
	run := runInstance("sapatch")
	secret := "pull-" + run
	cfg := provisioning(lifecycleConfig(run, "1h", 0.5)) + "patchServiceAccounts: default\n"
	start := func() *harness.Webhook {
		t.Helper()
		o, err := stack.WebhookOptions(ctx, harness.PodIdentity)
		if err != nil {
			t.Fatal(err)
		}
		o.Kubeconfig, o.Config, o.Dir, o.Addr = cluster.Kubeconfig, cfg, filepath.Join(dir, "webhook"), ""
		o.Args = append(o.Args, leaderArgs...)
		w, err := harness.StartWebhook(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
		return w
	}
	defaultSA := func(ns string) *corev1.ServiceAccount {
		t.Helper()
		var sa corev1.ServiceAccount
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default"}, &sa); err != nil {
			t.Fatal(err)
		}
		return &sa
	}
	refs := func(sa *corev1.ServiceAccount) []string {
		var out []string
		for _, r := range sa.ImagePullSecrets {
			out = append(out, r.Name)
		}
		return out
	}
	w := start()
	ns := "sapatch-" + run
	if err := cluster.CreateNamespace(ctx, ns, map[string]string{harness.OptInLabel: "enabled"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the default ServiceAccount naming the provisioned pull Secret", func() bool {
		return slices.Equal(refs(defaultSA(ns)), []string{secret})
	})

	w.Stop() // every replica unreachable: failurePolicy Ignore admits pods without the webhook
	p := pod("while-down", stack.Image)
	p.Namespace = ns
	if err := c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got := pullSecretNames(p); !slices.Equal(got, []string{secret}) {
		t.Fatalf("pod created while the webhook is down has imagePullSecrets %v, want %s from its ServiceAccount", got, secret)
	}
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: secret}, &sec); err != nil {
		t.Fatal(err)
	}
	if err := stack.Emu.Registry.PullManifest(ctx, stack.Image, []corev1.Secret{sec}); err != nil {
		t.Errorf("the pod's Secret does not pull: %v", err)
	}

	// A GitOps tool applies the ServiceAccount without imagePullSecrets:
	// the entry stays, its labels land.
	w = start()
	apply := func(manager string, fields map[string]any) {
		t.Helper()
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ServiceAccount",
			"metadata": map[string]any{"name": "default", "namespace": ns, "labels": map[string]any{"team": "a"}}}}
		for k, v := range fields {
			u.Object[k] = v
		}
		u.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "ServiceAccount"})
		if err := c.Patch(ctx, u, client.Apply, client.FieldOwner(manager), client.ForceOwnership); err != nil {
			t.Fatal(err)
		}
	}
	apply("gitops", nil)
	sa := defaultSA(ns)
	if !slices.Equal(refs(sa), []string{secret}) || sa.Labels["team"] != "a" {
		t.Errorf("after an apply of labels: imagePullSecrets %v, labels %v", refs(sa), sa.Labels)
	}
	// It applies the list too (its manifest's, without ours): the webhook
	// does not put its entry back, and says what to add to the manifest.
	apply("gitops", map[string]any{"imagePullSecrets": []any{map[string]any{"name": "team-registry"}}})
	// Something the patcher watches: the pull Secret deleted, restored by
	// the refresher.
	if err := c.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: secret}}); err != nil {
		t.Fatal(err)
	}
	var nsObj corev1.Namespace
	eventually(t, 15*time.Second, "a ServiceAccountNotPatched Event naming the tool", func() bool {
		var list corev1.EventList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(list.Items, func(e corev1.Event) bool {
			return e.Reason == pullsecret.ReasonServiceAccountNotPatched &&
				strings.Contains(e.Message, "field manager gitops") && strings.Contains(e.Message, "add "+secret+" to its manifest")
		})
	})
	if got := refs(defaultSA(ns)); !slices.Equal(got, []string{"team-registry"}) {
		t.Errorf("the webhook fought the applied list: %v", got)
	}

	// Opt-out of a namespace whose default ServiceAccount another writer
	// gave an entry too: only the webhook's goes.
	ns2 := "sapatch2-" + run
	if err := cluster.CreateNamespace(ctx, ns2, map[string]string{harness.OptInLabel: "enabled"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the second namespace's ServiceAccount patched", func() bool {
		return slices.Equal(refs(defaultSA(ns2)), []string{secret})
	})
	sa = defaultSA(ns2)
	sa.ImagePullSecrets = append(sa.ImagePullSecrets, corev1.LocalObjectReference{Name: "team-registry"})
	if err := c.Update(ctx, sa); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: ns2}, &nsObj); err != nil {
		t.Fatal(err)
	}
	delete(nsObj.Labels, harness.OptInLabel)
	if err := c.Update(ctx, &nsObj); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "only the webhook's entry removed at opt-out", func() bool {
		sa := defaultSA(ns2)
		return slices.Equal(refs(sa), []string{"team-registry"}) && sa.Annotations[pullsecret.AnnotationPatchedPullSecrets] == ""
	})
}
