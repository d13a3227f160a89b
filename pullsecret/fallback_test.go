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

func (slowTokens) Get(ctx context.Context, _ credentials.Key) (credentials.Credential, error) {
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
