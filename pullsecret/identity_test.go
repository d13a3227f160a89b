package pullsecret

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
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
		if got, want := s.Labels[LabelPerServiceAccount], map[bool]string{true: "", false: "true"}[id.IsWebhook()]; got != want {
			t.Errorf("Secret %s label %s = %q, want %q (the per-ServiceAccount informer selects by it)", name, LabelPerServiceAccount, got, want)
		}
		// The cache keeps the label and the ServiceAccount it is for.
		reduced, err := SecretTransform()(&s)
		if err != nil {
			t.Fatal(err)
		}
		if r := reduced.(*corev1.Secret); r.Labels[LabelPerServiceAccount] != s.Labels[LabelPerServiceAccount] ||
			r.Annotations[AnnotationServiceAccount] != s.Annotations[AnnotationServiceAccount] {
			t.Errorf("cached Secret %s: labels %v annotations %v", name, r.Labels, r.Annotations)
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

// The expiry gauge counts ServiceAccounts' Secrets too, and an update
// restores a label the ServiceAccount's Secret lost.
func TestServiceAccountSecretsCountForTheGaugeAndKeepTheirLabel(t *testing.T) {
	key, value, _ := config.SplitLabel(config.DefaultNamespaceLabel)
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{key: value}}}
	h := newHarness(t, interceptor.Funcs{}, nsObj)
	ctx := context.Background()
	perSA := instance()
	perSA.Identity = config.IdentityServiceAccount
	api := credentials.Identity{RoleARN: teamRole, Namespace: ns, ServiceAccount: "api"}
	h.tokens.cred = credAt(t0.Add(-50*time.Minute), rawToken) // 10 min left: due, but the only token there is
	if _, err := h.store.EnsureAs(ctx, ns, perSA, api, false); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{NamespaceLabel: config.DefaultNamespaceLabel, Instances: []config.Instance{perSA}}
	if got := h.store.HeldExpiries(ctx, cfg); !got["acme"].Equal(t0.Add(10 * time.Minute)) {
		t.Errorf("HeldExpiries = %v, want the ServiceAccount's Secret's expiry", got)
	}

	var s corev1.Secret
	if err := h.api.Get(ctx, client.ObjectKey{Namespace: ns, Name: "artifactory-pull-api"}, &s); err != nil {
		t.Fatal(err)
	}
	delete(s.Labels, LabelPerServiceAccount)
	if err := h.api.Update(ctx, &s); err != nil {
		t.Fatal(err)
	}
	// Same token: the label alone makes the refresher rewrite it (out of
	// the per-ServiceAccount informer, nothing else would look at it).
	if _, err := h.store.SyncAs(ctx, ns, perSA, api); err != nil {
		t.Fatal(err)
	}
	if err := h.api.Get(ctx, client.ObjectKey{Namespace: ns, Name: "artifactory-pull-api"}, &s); err != nil {
		t.Fatal(err)
	}
	if s.Labels[LabelPerServiceAccount] != "true" {
		t.Errorf("labels after a sync %v, want %s restored", s.Labels, LabelPerServiceAccount)
	}
	// An admission does not see it (the per-ServiceAccount cache selects
	// by the label): its write finds it on the API server, current but for
	// the label, and restores that.
	delete(s.Labels, LabelPerServiceAccount)
	if err := h.api.Update(ctx, &s); err != nil {
		t.Fatal(err)
	}
	tg := newTarget(perSA, api)
	desired, err := h.store.build(ns, tg, h.tokens.cred)
	if err != nil {
		t.Fatal(err)
	}
	current := func(*corev1.Secret) bool { return false } // the token it holds needs no write
	if _, err := h.store.update(ctx, admissionWriter, client.ObjectKeyFromObject(desired), desired, current); err != nil {
		t.Fatal(err)
	}
	if err := h.api.Get(ctx, client.ObjectKey{Namespace: ns, Name: "artifactory-pull-api"}, &s); err != nil {
		t.Fatal(err)
	}
	if s.Labels[LabelPerServiceAccount] != "true" {
		t.Errorf("labels after an admission's write %v, want %s restored", s.Labels, LabelPerServiceAccount)
	}
}

// The longest secretName config allows for identity serviceAccount keeps
// its prefix in every ServiceAccount's Secret name, cut or not.
func TestSecretNameKeepsTheLongestAllowedPrefix(t *testing.T) {
	inst := instance()
	inst.SecretName = strings.Repeat("p", config.MaxServiceAccountSecretPrefix)
	for _, sa := range []string{"a", strings.Repeat("s", 52), strings.Repeat("s", 53), strings.Repeat("s.-", 80)} {
		name := SecretName(inst, credentials.Identity{RoleARN: teamRole, Namespace: ns, ServiceAccount: sa})
		if !strings.HasPrefix(name, inst.SecretName+"-") || len(name) > 253 {
			t.Errorf("ServiceAccount of %d characters: Secret name %q (%d) loses the prefix %q", len(sa), name, len(name), inst.SecretName+"-")
		}
	}
}
