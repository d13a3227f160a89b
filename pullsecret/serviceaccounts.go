package pullsecret

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// ErrNoServiceAccount is returned (wrapped, with credentials.ErrNoRole) for
// a ServiceAccount that does not exist: it names no role.
var ErrNoServiceAccount = errors.New("ServiceAccount not found")

// missingTTL is how long a ServiceAccount found nowhere is taken as
// missing without asking the API server again: pods naming it (pods may
// be created before their ServiceAccount) cost one read per this time.
const missingTTL = 10 * time.Second

// ServiceAccounts resolves the identity of ServiceAccounts (their IAM role
// annotation) from an informer cache of their metadata. A ServiceAccount
// the cache does not have is read once from the API server (one created
// just before its first pod); one found nowhere is remembered as missing
// for a few seconds, so a burst of pods naming it costs no burst of reads,
// and no token is ever requested for it. It is safe for concurrent use.
type ServiceAccounts struct {
	cache, api client.Reader
	optIn      string
	now        func() time.Time

	mu      sync.Mutex
	missing map[types.NamespacedName]time.Time // until when
}

// NewServiceAccounts reads ServiceAccounts as *metav1.PartialObjectMetadata
// from cache, then api (optional) on a miss. optIn is
// config.ServiceAccounts.OptInAnnotation.
func NewServiceAccounts(cache, api client.Reader, optIn string, now func() time.Time) *ServiceAccounts {
	if now == nil {
		now = time.Now
	}
	return &ServiceAccounts{cache: cache, api: api, optIn: optIn, now: now, missing: map[types.NamespacedName]time.Time{}}
}

// ServiceAccount is what the webhook knows of a ServiceAccount: its name
// and the annotations it reads.
type ServiceAccount struct {
	Namespace, Name string
	annotations     map[string]string
	optIn           string
}

// Lookup reads the ServiceAccount namespace/name (name "" is "default", as
// for a pod). One that does not exist is an error wrapping
// credentials.ErrNoRole and ErrNoServiceAccount.
func (s *ServiceAccounts) Lookup(ctx context.Context, namespace, name string) (ServiceAccount, error) {
	return s.lookup(ctx, namespace, name, false)
}

// Confirmed is Lookup without the memory of missing ServiceAccounts:
// before the refresher deletes a ServiceAccount's Secret, its absence is
// checked with the API server.
func (s *ServiceAccounts) Confirmed(ctx context.Context, namespace, name string) (ServiceAccount, error) {
	return s.lookup(ctx, namespace, name, true)
}

// Identity is the identity of the ServiceAccount namespace/name for the
// AWS exchange (Lookup, then IdentityFor an instance of exchange aws).
func (s *ServiceAccounts) Identity(ctx context.Context, namespace, name string) (credentials.Identity, error) {
	sa, err := s.Lookup(ctx, namespace, name)
	if err != nil {
		return credentials.Identity{}, err
	}
	return sa.IdentityFor(config.Instance{Exchange: config.ExchangeAWS})
}

func (s *ServiceAccounts) lookup(ctx context.Context, namespace, name string, confirm bool) (ServiceAccount, error) {
	if name == "" {
		name = "default"
	}
	obj, err := s.get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, confirm)
	if err != nil {
		return ServiceAccount{}, err
	}
	return ServiceAccount{Namespace: namespace, Name: name, annotations: obj.Annotations, optIn: s.optIn}, nil
}

// IdentityFor is sa's identity for inst: for the AWS exchange the IAM role
// its annotation names (an error wrapping credentials.ErrNoRole when it
// names none, credentials.ErrBadRole when it is no role ARN); for the OIDC
// exchange the ServiceAccount itself, whose token is the subject. Either
// way the configured opt-in annotation, if any, must be "true".
func (sa ServiceAccount) IdentityFor(inst config.Instance) (credentials.Identity, error) {
	if inst.ExchangesOIDC() {
		if sa.optIn != "" && !strings.EqualFold(sa.annotations[sa.optIn], "true") {
			return credentials.Identity{}, fmt.Errorf("%w: ServiceAccount %s/%s does not carry the annotation %s: \"true\"",
				credentials.ErrNoRole, sa.Namespace, sa.Name, sa.optIn)
		}
		return credentials.Identity{Namespace: sa.Namespace, ServiceAccount: sa.Name}, nil
	}
	return credentials.ServiceAccountIdentity(sa.Namespace, sa.Name, sa.annotations, sa.optIn)
}

func (s *ServiceAccounts) get(ctx context.Context, key types.NamespacedName, confirm bool) (*metav1.PartialObjectMetadata, error) {
	sa := ServiceAccountObject()
	err := s.cache.Get(ctx, key, sa)
	if err == nil || !apierrors.IsNotFound(err) {
		if err != nil {
			return nil, fmt.Errorf("reading ServiceAccount %s: %w", key, err)
		}
		return sa, nil
	}
	notFound := fmt.Errorf("%w: %w: %s (create it, or name an existing one in the pod's serviceAccountName)",
		credentials.ErrNoRole, ErrNoServiceAccount, key)
	if s.api == nil {
		return nil, notFound
	}
	now := s.now()
	s.mu.Lock()
	until, known := s.missing[key]
	s.mu.Unlock()
	if known && now.Before(until) && !confirm {
		return nil, notFound
	}
	switch err := s.api.Get(ctx, key, sa); {
	case apierrors.IsNotFound(err):
		s.mu.Lock()
		for k, t := range s.missing {
			if !now.Before(t) {
				delete(s.missing, k)
			}
		}
		s.missing[key] = now.Add(missingTTL)
		s.mu.Unlock()
		return nil, notFound
	case err != nil:
		return nil, fmt.Errorf("reading ServiceAccount %s: %w", key, err)
	}
	s.mu.Lock()
	delete(s.missing, key)
	s.mu.Unlock()
	return sa, nil
}

// ServiceAccountObject is an empty ServiceAccount metadata object, as the
// metadata informer holds them.
func ServiceAccountObject() *metav1.PartialObjectMetadata {
	sa := &metav1.PartialObjectMetadata{}
	sa.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
	return sa
}

// ServiceAccountAnnotations are the annotations of a ServiceAccount the
// webhook reads (its cache transform keeps only these): the role, IRSA's
// regional endpoint choice, and the configured opt-in.
func ServiceAccountAnnotations(optIn string) []string {
	keys := []string{config.RoleARNAnnotation, config.RegionalSTSAnnotation}
	if optIn != "" {
		keys = append(keys, optIn)
	}
	return keys
}

// targets tells the Secrets of this installation apart by what they are
// for: the Secret of an instance (by its secretName), or that of a
// ServiceAccount's identity for an instance with identity serviceAccount.
type targets struct {
	byName map[string]config.Instance // secretName → instance
	perSA  map[string]config.Instance // instance name → instance, identity serviceAccount
	tokens map[string]config.Instance // tokenSecretName → instance
}

func newTargets(instances []config.Instance) targets {
	t := targets{byName: map[string]config.Instance{}, perSA: map[string]config.Instance{}, tokens: map[string]config.Instance{}}
	for _, in := range instances {
		t.byName[in.SecretName] = in
		if in.PerServiceAccount() {
			t.perSA[in.Name] = in
		}
		if in.TokenSecretName != "" {
			t.tokens[in.TokenSecretName] = in
		}
	}
	return t
}

// named is the target of the Secret name of an instance (its secretName or
// tokenSecretName), if it is one.
func (ts targets) named(name string) (target, bool) {
	if in, ok := ts.byName[name]; ok {
		return newTarget(in, credentials.Identity{}), true
	}
	if in, ok := ts.tokens[name]; ok {
		return newTokenTarget(in), true
	}
	return target{}, false
}

// of returns the target of a managed Secret, and whether it is one of an
// instance's. A ServiceAccount's Secret is recognised by its label and
// annotations (tenants can write them): only when its name is the one
// SecretName gives them, so a Secret never stands for another's target.
// Its identity carries the role its identity annotation names.
func (ts targets) of(sec metav1.Object) (target, bool) {
	if t, ok := ts.named(sec.GetName()); ok {
		return t, true
	}
	a := sec.GetAnnotations()
	in, ok := ts.perSA[a[AnnotationInstance]]
	if !ok || sec.GetLabels()[LabelPerServiceAccount] != "true" {
		return target{}, false
	}
	id, ok := credentials.IdentityOfName(a[AnnotationIdentity], sec.GetNamespace(), a[AnnotationServiceAccount])
	if !ok || id.IsWebhook() || id.Shared() == in.ExchangesOIDC() || SecretName(in, id) != sec.GetName() {
		return target{}, false
	}
	return newTarget(in, id), true
}
