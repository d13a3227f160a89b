package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// secretCaches holds one informer cache per configured pull Secret name
// (retired names included).
// Each lists and watches the Secrets of that name only, with a
// metadata.name field selector (still selected by the managed-by label and
// reduced by pullsecret.SecretTransform). Kubernetes authorizes a list or
// watch carrying such a selector as a request for that name, so RBAC can
// grant list/watch with resourceNames: the webhook's ServiceAccount cannot
// list any other Secret, whatever label selector it sends.
//
// As a client.Reader it answers Secret reads from the cache of the
// requested name (NotFound for any other name) and Secret lists from all of
// them; every other kind goes to next (the manager's cache).
//
// With an instance of identity serviceAccount, one more cache holds the
// Secrets of ServiceAccounts' identities, whose names are not known in
// advance: selected by the per-service-account label across all
// namespaces (which RBAC cannot narrow; the chart grants the wider read
// only then). Reads of names no instance uses go to it.
type secretCaches struct {
	byName map[string]cache.Cache
	names  []string    // config order
	perSA  cache.Cache // nil without serviceAccount instances
	next   client.Reader
}

// newSecretCaches builds a cache per Secret name of cfg and adds them to
// mgr, which starts them with its other caches and waits for their sync.
func newSecretCaches(mgr manager.Manager, restCfg *rest.Config, cfg *config.Config) (*secretCaches, error) {
	managed := labels.SelectorFromSet(labels.Set{pullsecret.ManagedByLabel: pullsecret.ManagedByValue})
	s := &secretCaches{byName: map[string]cache.Cache{}, next: mgr.GetClient()}
	newCache := func(by cache.ByObject) (cache.Cache, error) {
		by.Transform = pullsecret.SecretTransform()
		by.UnsafeDisableDeepCopy = ptr.To(true)
		c, err := cache.New(restCfg, cache.Options{
			Scheme:     mgr.GetScheme(),
			Mapper:     mgr.GetRESTMapper(),
			HTTPClient: mgr.GetHTTPClient(),
			ByObject:   map[client.Object]cache.ByObject{&corev1.Secret{}: by},
		})
		if err != nil {
			return nil, err
		}
		return c, mgr.Add(managerCache{c})
	}
	for _, name := range secretNames(cfg) {
		c, err := newCache(cache.ByObject{Label: managed, Field: fields.OneTermEqualSelector("metadata.name", name)})
		if err != nil {
			return nil, fmt.Errorf("secret cache for %q: %w", name, err)
		}
		s.byName[name] = c
		s.names = append(s.names, name)
	}
	if cfg.PerServiceAccount() {
		perSA := labels.SelectorFromSet(labels.Set{pullsecret.ManagedByLabel: pullsecret.ManagedByValue, pullsecret.LabelPerServiceAccount: "true"})
		c, err := newCache(cache.ByObject{Label: perSA})
		if err != nil {
			return nil, fmt.Errorf("secret cache of ServiceAccounts' identities: %w", err)
		}
		s.perSA = c
	}
	return s, nil
}

// secretNames are the distinct Secret names of cfg's instances (pull and
// generic token Secrets), then its retired Secret names (watched so that
// the refresher deletes them).
func secretNames(cfg *config.Config) []string {
	var names []string
	for _, in := range cfg.Instances {
		for _, n := range []string{in.SecretName, in.TokenSecretName} {
			if n != "" && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	for _, n := range cfg.RetiredSecretNames {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// Caches are the per-name caches, in config order.
func (s *secretCaches) Caches() []cache.Cache {
	out := make([]cache.Cache, 0, len(s.names)+1)
	for _, n := range s.names {
		out = append(out, s.byName[n])
	}
	if s.perSA != nil {
		out = append(out, s.perSA)
	}
	return out
}

// WaitForSync creates the Secret informers and waits for them to sync.
func (s *secretCaches) WaitForSync(ctx context.Context) error {
	for _, c := range s.Caches() {
		if _, err := c.GetInformer(ctx, &corev1.Secret{}); err != nil {
			return err
		}
		if !c.WaitForCacheSync(ctx) {
			return errors.New("a secret cache did not sync")
		}
	}
	return nil
}

func (s *secretCaches) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); !ok {
		return s.next.Get(ctx, key, obj, opts...)
	}
	c, ok := s.byName[key.Name]
	if !ok {
		if s.perSA != nil {
			return s.perSA.Get(ctx, key, obj, opts...)
		}
		return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
	}
	return c.Get(ctx, key, obj, opts...)
}

func (s *secretCaches) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	secrets, ok := list.(*corev1.SecretList)
	if !ok {
		return s.next.List(ctx, list, opts...)
	}
	lo := (&client.ListOptions{}).ApplyOptions(opts)
	if lo.Limit != 0 || lo.Continue != "" || lo.FieldSelector != nil {
		return errors.New("secret caches: a list across the per-name caches takes no limit, continue or field selector")
	}
	var all []corev1.Secret
	for _, c := range s.Caches() {
		var part corev1.SecretList
		if err := c.List(ctx, &part, opts...); err != nil {
			return err
		}
		all = append(all, part.Items...)
	}
	secrets.Items = all
	return nil
}

// managerCache makes a cache a manager runnable of the caches group: the
// manager starts it before the webhook server and controllers and waits
// for it to sync.
type managerCache struct{ cache.Cache }

func (m managerCache) GetCache() cache.Cache { return m.Cache }
