package pullsecret

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// A Secret past its refresh point whose rewrite the API server refuses
// (Forbidden, a timeout, a policy) still serves the pod: its token is valid.
func TestEnsureKeepsAStillValidSecretWhenWritingItsRefreshFails(t *testing.T) {
	for name, refusal := range map[string]error{
		"forbidden": apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "artifactory-pull", errors.New("denied by policy")),
		"timeout":   apierrors.NewTimeoutError("request did not complete within 1s", 0),
		"throttled": apierrors.NewTooManyRequests("too many requests", 1),
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, interceptor.Funcs{Update: func(context.Context, client.WithWatch, client.Object, ...client.UpdateOption) error {
				return refusal
			}}, managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts))
			h.now = t0.Add(50 * time.Minute) // due for refresh, valid for 10 more minutes
			h.tokens.cred = credAt(h.now, rawToken)

			res, err := h.store.Ensure(context.Background(), ns, instance(), false)
			if err != nil || res.Action != ActionFallback || res.SecretName != "artifactory-pull" {
				t.Fatalf("Ensure = %+v, %v; want the still-valid Secret as a fallback", res, err)
			}
			if !strings.Contains(res.Warning, "valid until 2026-05-01T13:00:00Z") || !strings.Contains(res.Warning, refusal.Error()) ||
				strings.Contains(res.Warning, rawToken) {
				t.Errorf("warning %q: want the refusal, the expiry and no token", res.Warning)
			}
		})
	}
}

// slowTokens is a token source whose mint outlasts every caller.
type slowTokens struct{}

func (slowTokens) GetAs(ctx context.Context, _ credentials.Identity, _ credentials.Key) (credentials.Credential, error) {
	<-ctx.Done()
	return credentials.Credential{}, ctx.Err()
}

// A mint slower than the admission's deadline must not cost the pod a
// still-valid Secret: Ensure stops waiting in time to fall back.
func TestEnsureFallsBackBeforeTheDeadlineWhenTheMintIsSlow(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts))
	h.now = t0.Add(50 * time.Minute)
	h.store.tokens = slowTokens{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()

	res, err := h.store.Ensure(ctx, ns, instance(), false)
	if err != nil || res.Action != ActionFallback {
		t.Fatalf("Ensure = %+v, %v; want the still-valid Secret as a fallback", res, err)
	}
	if ctx.Err() != nil {
		t.Errorf("Ensure answered only at the admission's deadline (%v): the handler would already have given up", ctx.Err())
	}
	if !strings.Contains(res.Warning, "deadline exceeded") {
		t.Errorf("warning %q does not say the mint timed out", res.Warning)
	}
}

// A Secret the cache still shows but the API server no longer has is
// recreated, never handed out as a fallback the pod could not pull with.
func TestEnsureRecreatesASecretDeletedBehindTheCache(t *testing.T) {
	existing := managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts)
	h := newHarness(t, interceptor.Funcs{}, existing)
	h.now = t0.Add(50 * time.Minute) // due for refresh, still valid
	h.tokens.cred = credAt(h.now, rawToken)
	lagging(t, h, existing)
	if err := h.api.Delete(context.Background(), existing); err != nil {
		t.Fatal(err)
	}
	res, err := h.store.Ensure(context.Background(), ns, instance(), false)
	if err != nil || res.Action != ActionCreated {
		t.Fatalf("Ensure = %+v, %v; want the deleted Secret created again", res, err)
	}
	if h.secret(t).Annotations[AnnotationExpiresAt] != formatTime(h.tokens.cred.Expiry) {
		t.Error("the recreated Secret does not carry the new token")
	}
}

// An admission that joins a write already in flight (the refresher's,
// against a slow API server) still falls back before its deadline, and its
// giving up is not recorded as a failed write.
func TestAdmissionJoiningASlowSharedWriteFallsBackInTime(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	h := newHarness(t, interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
		started <- struct{}{}
		<-release
		return c.Update(ctx, obj, opts...)
	}}, managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts))
	h.now = t0.Add(50 * time.Minute)
	h.tokens.cred = credAt(h.now, rawToken)

	syncDone := make(chan error, 1)
	go func() { _, err := h.store.Sync(context.Background(), ns, instance()); syncDone <- err }()
	<-started // the refresher's write is in flight

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	res, err := h.store.Ensure(ctx, ns, instance(), false)
	if err != nil || res.Action != ActionFallback || ctx.Err() != nil {
		t.Errorf("Ensure = %+v, %v (deadline passed: %v); want the fallback before the deadline", res, err, ctx.Err() != nil)
	}
	if err := h.store.held(secretKey); err != nil {
		t.Errorf("an admission that stopped waiting was recorded as a failed write: %v", err)
	}
	close(release)
	if err := <-syncDone; err != nil {
		t.Errorf("the shared write failed after the admission left: %v", err)
	}
}

// Secrets written before fingerprints existed (or under another tokenTTL)
// are rewritten, but still serve as the fallback while minting fails.
func TestASecretOfAnotherFingerprintIsStillAFallback(t *testing.T) {
	legacy := managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts)
	delete(legacy.Annotations, AnnotationFingerprint)
	h := newHarness(t, interceptor.Funcs{}, legacy)
	h.now = t0.Add(10 * time.Minute)
	h.tokens.err = errors.New(mintError)
	res, err := h.store.Ensure(context.Background(), ns, instance(), false)
	if err != nil || res.Action != ActionFallback {
		t.Errorf("Ensure = %+v, %v; want the legacy Secret, valid for 50 more minutes, as the fallback", res, err)
	}
}
