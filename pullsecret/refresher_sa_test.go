package pullsecret

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// perSARefresher runs a Refresher for instance() with identity
// serviceAccount over h, reading ServiceAccounts from h's API server.
func perSARefresher(t *testing.T, h *harness) (*refresherHarness, config.Instance) {
	t.Helper()
	inst := instance()
	inst.Identity = config.IdentityServiceAccount
	rh := &refresherHarness{harness: h, retry: &fakeRetry{}, events: events.NewFakeRecorder(20)}
	r, err := NewRefresher(RefresherOptions{
		Config:          &config.Config{Instances: []config.Instance{inst}, NamespaceLabel: config.DefaultNamespaceLabel, BackoffCap: config.Duration{Duration: time.Minute}},
		Store:           h.store,
		Reader:          informerCache{h.api},
		Retry:           rh.retry,
		ServiceAccounts: NewServiceAccounts(h.api, h.api, "", func() time.Time { return h.now }),
		Recorder:        rh.events,
		Now:             func() time.Time { return h.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	rh.r = r
	return rh, inst
}

func TestRefresherFollowsTheServiceAccountsRole(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, namespaceWith(optedInLabels), saObject(ns, "api", map[string]string{config.RoleARNAnnotation: teamRole}))
	rh, inst := perSARefresher(t, h)
	ctx := context.Background()
	api := credentials.Identity{RoleARN: teamRole, Namespace: ns, ServiceAccount: "api"}
	if _, err := h.store.EnsureAs(ctx, ns, inst, api, false); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: ns, Name: "artifactory-pull-api"}
	reconcileKey := func() (reconcile.Result, error) {
		return rh.r.Reconcile(ctx, reconcile.Request{NamespacedName: key})
	}

	// The ServiceAccount names another role: the Secret is rewritten for it.
	const newRole = "arn:aws:iam::123456789012:role/team-a-v2"
	sa := &corev1.ServiceAccount{}
	if err := h.api.Get(ctx, key, sa); err == nil {
		t.Fatal("precondition: no ServiceAccount is named like the Secret")
	}
	if err := h.api.Get(ctx, client.ObjectKey{Namespace: ns, Name: "api"}, sa); err != nil {
		t.Fatal(err)
	}
	sa.Annotations[config.RoleARNAnnotation] = newRole
	if err := h.api.Update(ctx, sa); err != nil {
		t.Fatal(err)
	}
	h.tokens.cred = credAt(t0, "token-of-the-new-role")
	if _, err := reconcileKey(); err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := h.api.Get(ctx, key, &s); err != nil || s.Annotations[AnnotationIdentity] != "role:"+newRole {
		t.Fatalf("Secret after the role changed: %v, identity %q; want role:%s", err, s.Annotations[AnnotationIdentity], newRole)
	}
	if ids := h.tokens.ids; ids[len(ids)-1].RoleARN != newRole {
		t.Errorf("token asked as %+v, want the new role", ids[len(ids)-1])
	}

	// The proof is refused (the role's trust no longer names it): retried
	// later and later, not every second.
	h.tokens.err = errors.New("sts:AssumeRoleWithWebIdentity: AccessDenied")
	var waits []time.Duration
	for range 4 {
		res, err := reconcileKey()
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, res.RequeueAfter)
	}
	// As for mints: the first failure may be a blip, retried soon; then
	// the base wait (halved at most by jitter), doubling.
	if waits[0] < minRetry || waits[1] < DefaultWriteBackoffBase/2 || waits[3] <= waits[1] || waits[3] > time.Minute {
		t.Errorf("retries after refused proofs %v: want %s, then at least %s, growing, at most the backoff cap", waits, minRetry, DefaultWriteBackoffBase/2)
	}
	h.tokens.err = nil

	// The annotation is removed: the Secret goes.
	if err := h.api.Get(ctx, client.ObjectKey{Namespace: ns, Name: "api"}, sa); err != nil {
		t.Fatal(err)
	}
	delete(sa.Annotations, config.RoleARNAnnotation)
	if err := h.api.Update(ctx, sa); err != nil {
		t.Fatal(err)
	}
	if _, err := reconcileKey(); err != nil {
		t.Fatal(err)
	}
	if err := h.api.Get(ctx, key, &s); err == nil {
		t.Error("the Secret of a ServiceAccount that dropped its role is still there")
	}
	// A Secret planted under another ServiceAccount's name is not ours.
	if reqs := rh.r.secretsOfServiceAccount(ctx, sa); len(reqs) != 1 || reqs[0].NamespacedName != key {
		t.Errorf("a ServiceAccount maps to %v, want its Secret %s", reqs, key)
	}
}

func TestRefresherDeletesTheSecretOfADeletedServiceAccount(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, namespaceWith(optedInLabels), saObject(ns, "api", map[string]string{config.RoleARNAnnotation: teamRole}))
	rh, inst := perSARefresher(t, h)
	ctx := context.Background()
	if _, err := h.store.EnsureAs(ctx, ns, inst, credentials.Identity{RoleARN: teamRole, Namespace: ns, ServiceAccount: "api"}, false); err != nil {
		t.Fatal(err)
	}
	if err := h.api.Delete(ctx, saObject(ns, "api", nil)); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: ns, Name: "artifactory-pull-api"}
	if _, err := rh.r.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := h.api.Get(ctx, key, &s); err == nil {
		t.Error("the Secret of a deleted ServiceAccount is still there")
	}
	if e := rh.event(); e == "" {
		t.Error("no Event for the deletion")
	}
}

// A ServiceAccount that switches to a role it cannot assume does not keep
// pulling as the role it gave up; nor does a Secret stay once its token
// expired unrefreshed (an expired Secret pulls nothing, and would hold the
// expiry gauge at "expired").
func TestRefresherDeletesASecretOfARoleGivenUpOrExpiredWhenNoTokenCanBeHad(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(h *harness, sa *corev1.ServiceAccount)
	}{
		{"switched to a role it cannot assume", func(h *harness, sa *corev1.ServiceAccount) {
			sa.Annotations[config.RoleARNAnnotation] = "arn:aws:iam::123456789012:role/not-trusting"
		}},
		{"expired, refresh refused", func(h *harness, _ *corev1.ServiceAccount) { h.now = t0.Add(2 * time.Hour) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, interceptor.Funcs{}, namespaceWith(optedInLabels), saObject(ns, "api", map[string]string{config.RoleARNAnnotation: teamRole}))
			rh, inst := perSARefresher(t, h)
			ctx := context.Background()
			if _, err := h.store.EnsureAs(ctx, ns, inst, credentials.Identity{RoleARN: teamRole, Namespace: ns, ServiceAccount: "api"}, false); err != nil {
				t.Fatal(err)
			}
			sa := &corev1.ServiceAccount{}
			if err := h.api.Get(ctx, client.ObjectKey{Namespace: ns, Name: "api"}, sa); err != nil {
				t.Fatal(err)
			}
			tc.change(h, sa)
			if err := h.api.Update(ctx, sa); err != nil {
				t.Fatal(err)
			}
			h.tokens.err = errors.New("sts:AssumeRoleWithWebIdentity: AccessDenied")
			key := types.NamespacedName{Namespace: ns, Name: "artifactory-pull-api"}
			if _, err := rh.r.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
				t.Fatal(err)
			}
			var s corev1.Secret
			if err := h.api.Get(ctx, key, &s); err == nil {
				t.Errorf("Secret still there, holding %s", s.Annotations[AnnotationIdentity])
			}
		})
	}
	// A refused refresh of a still-valid Secret of the role it names keeps it.
	h := newHarness(t, interceptor.Funcs{}, namespaceWith(optedInLabels), saObject(ns, "api", map[string]string{config.RoleARNAnnotation: teamRole}))
	rh, inst := perSARefresher(t, h)
	ctx := context.Background()
	if _, err := h.store.EnsureAs(ctx, ns, inst, credentials.Identity{RoleARN: teamRole, Namespace: ns, ServiceAccount: "api"}, false); err != nil {
		t.Fatal(err)
	}
	h.now = t0.Add(50 * time.Minute)
	h.tokens.err = errors.New("sts:AssumeRoleWithWebIdentity: AccessDenied")
	key := types.NamespacedName{Namespace: ns, Name: "artifactory-pull-api"}
	if _, err := rh.r.Reconcile(ctx, reconcile.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := h.api.Get(ctx, key, &s); err != nil {
		t.Errorf("a still-valid Secret was deleted after one refused refresh: %v", err)
	}
}
