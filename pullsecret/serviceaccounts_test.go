package pullsecret

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

const saRole = "arn:aws:iam::111122223333:role/team-a-puller"

// countingReader counts Gets.
type countingReader struct {
	client.Reader
	gets atomic.Int32
}

func (c *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.gets.Add(1)
	return c.Reader.Get(ctx, key, obj, opts...)
}

func saObject(ns, name string, annotations map[string]string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations}}
}

func TestServiceAccountsResolveTheRoleFromTheCacheWithoutAPIReads(t *testing.T) {
	cache := fake.NewClientBuilder().WithObjects(saObject("team-a", "default", map[string]string{config.RoleARNAnnotation: saRole})).Build()
	api := &countingReader{Reader: fake.NewClientBuilder().Build()}
	sas := NewServiceAccounts(cache, api, "", nil)
	id, err := sas.Identity(context.Background(), "team-a", "")
	if err != nil || id != (credentials.Identity{RoleARN: saRole, Namespace: "team-a", ServiceAccount: "default"}) {
		t.Fatalf("identity %+v, %v; want the default ServiceAccount's role", id, err)
	}
	if n := api.gets.Load(); n != 0 {
		t.Errorf("%d API reads for a cached ServiceAccount, want 0", n)
	}
}

func TestServiceAccountsReadAMissOnceAndRememberAMissingOneBriefly(t *testing.T) {
	cache := fake.NewClientBuilder().Build()
	api := &countingReader{Reader: fake.NewClientBuilder().WithObjects(saObject("team-a", "fresh", map[string]string{config.RoleARNAnnotation: saRole})).Build()}
	now := time.Now()
	sas := NewServiceAccounts(cache, api, "", func() time.Time { return now })
	ctx := context.Background()

	// Created just before its pod: the informer lags, the API has it.
	if id, err := sas.Identity(ctx, "team-a", "fresh"); err != nil || id.RoleARN != saRole {
		t.Fatalf("fresh ServiceAccount: %+v, %v", id, err)
	}
	// Missing: one API read for a burst of pods, then another after the TTL.
	api.gets.Store(0)
	for range 20 {
		_, err := sas.Identity(ctx, "team-a", "ghost")
		if !errors.Is(err, credentials.ErrNoRole) || !errors.Is(err, ErrNoServiceAccount) || !strings.Contains(err.Error(), "team-a/ghost") {
			t.Fatalf("missing ServiceAccount: %v; want ErrNoRole and ErrNoServiceAccount naming it", err)
		}
	}
	if n := api.gets.Load(); n != 1 {
		t.Errorf("%d API reads for 20 pods naming a missing ServiceAccount, want 1", n)
	}
	// Confirmed (the refresher, before deleting) always asks.
	if _, err := sas.Confirmed(ctx, "team-a", "ghost"); !errors.Is(err, ErrNoServiceAccount) || api.gets.Load() != 2 {
		t.Errorf("Confirmed: %v after %d reads; want a fresh API read", err, api.gets.Load())
	}
	now = now.Add(missingTTL)
	if _, err := sas.Identity(ctx, "team-a", "ghost"); !errors.Is(err, ErrNoServiceAccount) || api.gets.Load() != 3 {
		t.Errorf("after the TTL: %v, %d reads; want one more read", err, api.gets.Load())
	}
}

func TestServiceAccountsHonourTheOptInAnnotation(t *testing.T) {
	cache := fake.NewClientBuilder().WithObjects(
		saObject("team-a", "migrated", map[string]string{config.RoleARNAnnotation: saRole, "JFrogExchange": "true"}),
		saObject("team-a", "unmarked", map[string]string{config.RoleARNAnnotation: saRole}),
	).Build()
	sas := NewServiceAccounts(cache, nil, "JFrogExchange", nil)
	if _, err := sas.Identity(context.Background(), "team-a", "migrated"); err != nil {
		t.Errorf("ServiceAccount with JFrogExchange: \"true\": %v", err)
	}
	if _, err := sas.Identity(context.Background(), "team-a", "unmarked"); !errors.Is(err, credentials.ErrNoRole) || !strings.Contains(err.Error(), "JFrogExchange") {
		t.Errorf("ServiceAccount without the opt-in: %v; want ErrNoRole naming JFrogExchange", err)
	}
}

// A ServiceAccount's Secret is recognised only under the exact name its
// annotations give, so a tenant's Secret never stands for another target.
func TestTargetsRecogniseAServiceAccountsSecretOnlyByItsExactName(t *testing.T) {
	team := config.Instance{Name: "team", SecretName: "team-pull", Identity: config.IdentityServiceAccount, RegistryHosts: []string{"r.example"}}
	plain := config.Instance{Name: "plain", SecretName: "plain-pull", Identity: config.IdentityWebhook}
	ts := newTargets([]config.Instance{team, plain})
	sec := func(name, instance, sa, identity string, perSA bool) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name, Labels: map[string]string{ManagedByLabel: ManagedByValue},
			Annotations: map[string]string{AnnotationInstance: instance, AnnotationServiceAccount: sa, AnnotationIdentity: identity}}}
		if perSA {
			s.Labels[LabelPerServiceAccount] = "true"
		}
		return s
	}
	if tg, ok := ts.of(sec("team-pull-api", "team", "api", "role:"+saRole, true)); !ok || tg.id.RoleARN != saRole || tg.id.ServiceAccount != "api" || tg.id.Namespace != "team-a" || tg.inst.Name != "team" {
		t.Errorf("a ServiceAccount's Secret: %+v %v", tg, ok)
	}
	if tg, ok := ts.of(sec("plain-pull", "", "", "", false)); !ok || !tg.id.IsWebhook() || tg.inst.Name != "plain" {
		t.Errorf("an instance's Secret: %+v %v", tg, ok)
	}
	for name, s := range map[string]*corev1.Secret{
		"another ServiceAccount's name":   sec("team-pull-worker", "team", "api", "role:"+saRole, true),
		"without the label":               sec("team-pull-api", "team", "api", "role:"+saRole, false),
		"of a webhook-identity instance":  sec("plain-pull-api", "plain", "api", "role:"+saRole, true),
		"without a role":                  sec("team-pull-api", "team", "api", "webhook", true),
		"without a ServiceAccount":        sec("team-pull-", "team", "", "role:"+saRole, true),
		"of an instance that is not ours": sec("x-api", "x", "api", "role:"+saRole, true),
	} {
		if tg, ok := ts.of(s); ok {
			t.Errorf("%s: recognised as %+v", name, tg)
		}
	}
}

func TestTargetsTellTheOIDCServiceAccountsSecretFromARolesOne(t *testing.T) {
	oidc := config.Instance{Name: "o", SecretName: "o-pull", Identity: config.IdentityServiceAccount, Exchange: config.ExchangeOIDC}
	aws := config.Instance{Name: "a", SecretName: "a-pull", Identity: config.IdentityServiceAccount, Exchange: config.ExchangeAWS}
	ts := newTargets([]config.Instance{oidc, aws})
	sec := func(name, instance, identity string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name,
			Labels:      map[string]string{ManagedByLabel: ManagedByValue, LabelPerServiceAccount: "true"},
			Annotations: map[string]string{AnnotationInstance: instance, AnnotationServiceAccount: "api", AnnotationIdentity: identity}}}
	}
	if tg, ok := ts.of(sec("o-pull-api", "o", "sa:team-a/api")); !ok || tg.id != (credentials.Identity{Namespace: "team-a", ServiceAccount: "api"}) {
		t.Errorf("OIDC ServiceAccount's Secret: %+v %v", tg, ok)
	}
	for name, s := range map[string]*corev1.Secret{
		"a role's identity on an OIDC instance":     sec("o-pull-api", "o", "role:"+saRole),
		"a ServiceAccount's identity on an AWS one": sec("a-pull-api", "a", "sa:team-a/api"),
		"another namespace's ServiceAccount":        sec("o-pull-api", "o", "sa:team-b/api"),
		"another ServiceAccount of the namespace":   sec("o-pull-api", "o", "sa:team-a/worker"),
	} {
		if tg, ok := ts.of(s); ok {
			t.Errorf("%s: recognised as %+v", name, tg)
		}
	}
}
