package deploy

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// TestChartLetsTheWebhookChangeOnlyItsPullSecretsOnDefaultServiceAccounts
// installs a release with patchServiceAccounts: default and impersonates
// its ServiceAccount: it may add and remove its pull Secret on a default
// ServiceAccount (and its own annotation), and the API server refuses any
// other entry, a label or annotation change, and any other ServiceAccount.
func TestChartLetsTheWebhookChangeOnlyItsPullSecretsOnDefaultServiceAccounts(t *testing.T) {
	ctx := context.Background()
	_, cs := applied(t, "apw-sapatch", `
serviceAccount:
  irsaRoleArn: arn:aws:iam::123456789012:role/artifactory-puller
config:
  instances:
  - name: main
    url: https://example.jfrog.io
    registryHosts: [example.jfrog.io]
  patchServiceAccounts: default
`)
	tenant := newNamespace(t, "sapatch", map[string]string{harness.OptInLabel: "enabled"}) // with its default ServiceAccount
	sas := cs.CoreV1().ServiceAccounts(tenant)
	// A tenant's unnamed entry ({}: name is omitempty) must not make every
	// update fail the policy.
	var own corev1.ServiceAccount
	if err := stack.Cluster.Client.Get(ctx, client.ObjectKey{Namespace: tenant, Name: "default"}, &own); err != nil {
		t.Fatal(err)
	}
	own.ImagePullSecrets = []corev1.LocalObjectReference{{}}
	if err := stack.Cluster.Client.Update(ctx, &own); err != nil {
		t.Fatal(err)
	}
	edit := func(f func(*corev1.ServiceAccount), dryRun bool) error {
		sa, err := sas.Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			return err
		}
		f(sa)
		o := metav1.UpdateOptions{FieldManager: pullsecret.ServiceAccountFieldManager}
		if dryRun {
			o.DryRun = []string{metav1.DryRunAll}
		}
		_, err = sas.Update(ctx, sa, o)
		return err
	}
	addRef := func(name string) func(*corev1.ServiceAccount) {
		return func(sa *corev1.ServiceAccount) {
			sa.ImagePullSecrets = append(sa.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
		}
	}
	refused := func(err error) bool {
		return err != nil && strings.Contains(err.Error(), "artifactory-pull-webhook may")
	}
	// The policy is loaded from a watch: wait until it refuses another entry.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return refused(edit(addRef("team-registry"), true)), nil
	}); err != nil {
		t.Fatalf("the ServiceAccount write policy is not enforced: %v", err)
	}

	if err := edit(func(sa *corev1.ServiceAccount) {
		addRef("artifactory-pull")(sa)
		if sa.Annotations == nil {
			sa.Annotations = map[string]string{}
		}
		sa.Annotations[pullsecret.AnnotationPatchedPullSecrets] = "artifactory-pull"
	}, false); err != nil {
		t.Fatalf("adding its pull Secret and annotation: %v", err)
	}
	for name, f := range map[string]func(*corev1.ServiceAccount){
		"another entry": addRef("team-registry"),
		"a label":       func(sa *corev1.ServiceAccount) { sa.Labels = map[string]string{"team": "x"} },
		"an annotation": func(sa *corev1.ServiceAccount) {
			sa.Annotations["eks.amazonaws.com/role-arn"] = "arn:aws:iam::1:role/x"
		},
		"its secrets":     func(sa *corev1.ServiceAccount) { sa.Secrets = []corev1.ObjectReference{{Name: "token"}} },
		"automount token": func(sa *corev1.ServiceAccount) { sa.AutomountServiceAccountToken = new(bool) },
		"owner references": func(sa *corev1.ServiceAccount) {
			sa.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "gone", UID: "0000"}}
		},
		"finalizers": func(sa *corev1.ServiceAccount) { sa.Finalizers = []string{"example.com/block"} },
	} {
		if err := edit(f, false); !refused(err) {
			t.Errorf("changing %s: %v, want the policy's refusal", name, err)
		}
	}
	if err := edit(func(sa *corev1.ServiceAccount) {
		sa.ImagePullSecrets = sa.ImagePullSecrets[:1] // the tenant's unnamed entry stays
		delete(sa.Annotations, pullsecret.AnnotationPatchedPullSecrets)
	}, false); err != nil {
		t.Errorf("removing its pull Secret: %v", err)
	}
	// In a namespace that does not opt in it may add nothing.
	other := newNamespace(t, "sapatch", nil)
	sa, err := cs.CoreV1().ServiceAccounts(other).Get(ctx, "default", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addRef("artifactory-pull")(sa)
	if _, err := cs.CoreV1().ServiceAccounts(other).Update(ctx, sa, metav1.UpdateOptions{}); !refused(err) {
		t.Errorf("adding its pull Secret where the namespace does not opt in: %v, want the policy's refusal", err)
	}
	if err := stack.Cluster.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: tenant}}); err != nil {
		t.Fatal(err)
	}
	if _, err := sas.Get(ctx, "api", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("reading ServiceAccount api: %v, want Forbidden (resourceNames default)", err)
	}
}
