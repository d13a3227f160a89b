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

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// TestChartLetsTheWebhookWriteItsTokenSecretsAndNoOtherOpaqueSecret
// installs a release with a generic token Secret (tokenSecretName) and
// impersonates its ServiceAccount: it may create, read and update the
// managed Opaque Secret of that name in a tenant's namespace, and the API
// server refuses it any other Opaque Secret, the name with another type, or
// the name without the managed-by label.
func TestChartLetsTheWebhookWriteItsTokenSecretsAndNoOtherOpaqueSecret(t *testing.T) {
	ctx := context.Background()
	_, cs := applied(t, "apw-tokens", `
serviceAccount:
  irsaRoleArn: arn:aws:iam::123456789012:role/artifactory-puller
config:
  instances:
  - name: main
    url: https://example.jfrog.io
    registryHosts: [example.jfrog.io]
    tokenSecretName: artifactory-token
`)
	tenant := newNamespace(t, "tokens", nil)
	secret := func(name string, typ corev1.SecretType, managed bool) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tenant}, Type: typ,
			Data: map[string][]byte{pullsecret.TokenSecretUsername: []byte("u"), pullsecret.TokenSecretToken: []byte("t")}}
		if typ == corev1.SecretTypeDockerConfigJson {
			s.Data = pullSecret(t, tenant, name).Data // a valid .dockerconfigjson
		}
		if managed {
			s.Labels = map[string]string{pullsecret.ManagedByLabel: pullsecret.ManagedByValue}
		}
		return s
	}
	// The policy is loaded from a watch: wait until it refuses another
	// Opaque Secret (RBAC lets the ServiceAccount create any Secret).
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Secrets(tenant).Create(ctx, secret("other", corev1.SecretTypeOpaque, true), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return deniedByPolicy(err), nil
	})
	if err != nil {
		t.Fatalf("the release's Secret write policy is not enforced: %v", err)
	}

	if _, err := cs.CoreV1().Secrets(tenant).Create(ctx, secret("artifactory-token", corev1.SecretTypeOpaque, true), metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating its token Secret: %v", err)
	}
	got, err := cs.CoreV1().Secrets(tenant).Get(ctx, "artifactory-token", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading its token Secret: %v", err)
	}
	got.Data[pullsecret.TokenSecretToken] = []byte("rotated")
	if _, err := cs.CoreV1().Secrets(tenant).Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Errorf("updating its token Secret: %v", err)
	}
	for _, tc := range []struct {
		name string
		s    *corev1.Secret
	}{
		{"another Opaque Secret", secret("other", corev1.SecretTypeOpaque, true)},
		{"the token name as a pull Secret", func() *corev1.Secret {
			s := secret("artifactory-token", corev1.SecretTypeDockerConfigJson, true)
			s.Namespace = newNamespace(t, "tokens", nil)
			return s
		}()},
		{"the token name without the managed-by label", func() *corev1.Secret {
			s := secret("artifactory-token", corev1.SecretTypeOpaque, false)
			s.Namespace = newNamespace(t, "tokens", nil)
			return s
		}()},
	} {
		if _, err := cs.CoreV1().Secrets(tc.s.Namespace).Create(ctx, tc.s, metav1.CreateOptions{}); !deniedByPolicy(err) {
			t.Errorf("%s: created or refused otherwise (%v), want the policy's refusal", tc.name, err)
		}
	}
	// A tenant's own Secret of the token name, without the label: the
	// webhook may neither take it over nor delete it (RBAC allows both by
	// name in every namespace).
	owner := newNamespace(t, "tokens", nil)
	theirs := secret("artifactory-token", corev1.SecretTypeOpaque, false)
	theirs.Namespace = owner
	if err := stack.Cluster.Client.Create(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	taken, err := cs.CoreV1().Secrets(owner).Get(ctx, theirs.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the tenant's Secret of the token name: %v", err)
	}
	taken.Labels = map[string]string{pullsecret.ManagedByLabel: pullsecret.ManagedByValue}
	if _, err := cs.CoreV1().Secrets(owner).Update(ctx, taken, metav1.UpdateOptions{}); !deniedByPolicy(err) {
		t.Errorf("taking over a tenant's Secret of the token name: %v, want the policy's refusal", err)
	}
	if err := cs.CoreV1().Secrets(owner).Delete(ctx, theirs.Name, metav1.DeleteOptions{}); err == nil ||
		!strings.Contains(err.Error(), "may delete only the Secrets it manages") {
		t.Errorf("deleting a tenant's Secret of the token name: %v, want the policy's refusal", err)
	}
	if err := cs.CoreV1().Secrets(tenant).Delete(ctx, "artifactory-token", metav1.DeleteOptions{}); err != nil {
		t.Errorf("deleting its own token Secret: %v", err)
	}

	plain := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "team-credentials", Namespace: tenant}, Type: corev1.SecretTypeOpaque,
		StringData: map[string]string{"password": "x"}}
	if err := stack.Cluster.Client.Create(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(tenant).Get(ctx, plain.Name, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("reading another Secret of the namespace: %v, want Forbidden", err)
	}
}
