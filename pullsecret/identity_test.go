package pullsecret

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

const teamRole = "arn:aws:iam::123456789012:role/team-a-puller"

// A ServiceAccount's identity gets a Secret of its own, named for it and
// annotated with it, holding the token of its role; ServiceAccounts of one
// role share the token, not the Secret.
func TestEnsureAsAServiceAccountWritesItsOwnSecretWithItsRolesToken(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{})
	api := credentials.Identity{RoleARN: teamRole, Namespace: ns, ServiceAccount: "api"}
	worker := credentials.Identity{RoleARN: teamRole, Namespace: ns, ServiceAccount: "worker"}
	ctx := context.Background()

	for _, id := range []credentials.Identity{api, worker, {}} {
		res, err := h.store.EnsureAs(ctx, ns, instance(), id, false)
		if err != nil || res.SecretName != SecretName(instance(), id) || res.Action != ActionCreated {
			t.Fatalf("EnsureAs(%s) = %+v, %v", id, res, err)
		}
	}
	want := map[string]credentials.Identity{"artifactory-pull-api": api, "artifactory-pull-worker": worker, "artifactory-pull": {}}
	for name, id := range want {
		var s corev1.Secret
		if err := h.api.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
			t.Fatalf("Secret %s: %v", name, err)
		}
		if s.Annotations[AnnotationIdentity] != id.Name() || s.Annotations[AnnotationServiceAccount] != id.ServiceAccount {
			t.Errorf("Secret %s annotations %v, want identity %q and ServiceAccount %q", name, s.Annotations, id.Name(), id.ServiceAccount)
		}
	}
	roleKey := api.Key(instance().Name, testPrints[instance().Name])
	if k := h.tokens.keys; len(k) != 3 || k[0] != roleKey || k[1] != roleKey || k[2] == roleKey {
		t.Errorf("tokens asked for %v, want the role's key twice, then the webhook's", k)
	}
	if ids := h.tokens.ids; len(ids) != 3 || ids[0] != api || ids[1] != worker || ids[2] != (credentials.Identity{}) {
		t.Errorf("tokens asked as %v, want each ServiceAccount, then the webhook", ids)
	}
	// Each identity's Secret is fresh for it alone.
	for _, id := range []credentials.Identity{api, worker, {}} {
		if res, err := h.store.EnsureAs(ctx, ns, instance(), id, false); err != nil || res.Action != ActionReused {
			t.Errorf("second EnsureAs(%s) = %q, %v; want its Secret reused", id, res.Action, err)
		}
	}
}

func TestSecretNameIsPerServiceAccountAndAlwaysAValidName(t *testing.T) {
	inst := instance()
	if got := SecretName(inst, credentials.Identity{}); got != inst.SecretName {
		t.Errorf("webhook identity: %q, want %q", got, inst.SecretName)
	}
	long := strings.Repeat("a", 200) + "." + strings.Repeat("b", 52) // a valid 253-character ServiceAccount name
	// Cut where the 236th character of the name is a '.': trimmed, not kept.
	dotAtCut := strings.Repeat("c", 218) + "." + strings.Repeat("d", 30)
	names := map[string]bool{}
	for _, sa := range []string{"api", long, long[:252] + "c", dotAtCut} {
		got := SecretName(inst, credentials.Identity{RoleARN: teamRole, Namespace: ns, ServiceAccount: sa})
		if msgs := validation.IsDNS1123Subdomain(got); len(msgs) > 0 {
			t.Errorf("SecretName for %d-character %q… = %q: %v", len(sa), sa[:10], got, msgs)
		}
		if names[got] {
			t.Errorf("two ServiceAccounts share the Secret name %q", got)
		}
		names[got] = true
	}
}
