package pullsecret

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// sharingCache hands out shallow copies of one stored object per key, as
// the informer cache does with UnsafeDisableDeepCopy: a reader that writes
// into a map it got would change the cache.
type sharingCache struct {
	client.Reader
	mu       sync.Mutex
	objs     map[client.ObjectKey]client.Object
	snapshot map[client.ObjectKey]client.Object
}

func (c *sharingCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	stored, ok := c.objs[key]
	if !ok {
		fresh := obj.DeepCopyObject().(client.Object)
		if err := (informerCache{c.Reader}).Get(ctx, key, fresh, opts...); err != nil {
			return err
		}
		stored = fresh
		c.objs[key], c.snapshot[key] = stored, stored.DeepCopyObject().(client.Object)
	}
	switch o := obj.(type) {
	case *corev1.Secret:
		*o = *stored.(*corev1.Secret)
	case *metav1.PartialObjectMetadata:
		*o = *stored.(*metav1.PartialObjectMetadata)
	}
	return nil
}

func TestStoreAndRefresherNeverMutateWhatTheyReadFromTheCache(t *testing.T) {
	for name, existing := range map[string]*corev1.Secret{
		"fresh":  managedSecret(t, credAt(t0.Add(45*time.Minute), rawToken), instance().RegistryHosts),
		"due":    managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts),
		"edited": managedSecret(t, credAt(t0.Add(50*time.Minute), "edited"), []string{"acme.jfrog.io"}),
	} {
		t.Run(name, func(t *testing.T) {
			h := newRefresherHarness(t, true, namespaceWith(optedInLabels), existing)
			h.now = t0.Add(50 * time.Minute)
			h.tokens.cred = credAt(h.now, rawToken)
			cache := &sharingCache{Reader: h.api, objs: map[client.ObjectKey]client.Object{}, snapshot: map[client.ObjectKey]client.Object{}}
			h.store.reader, h.r.reader = cache, cache
			ctx := context.Background()

			if _, err := h.store.Ensure(ctx, ns, instance(), false); err != nil {
				t.Fatal(err)
			}
			if _, err := h.store.Sync(ctx, ns, instance()); err != nil {
				t.Fatal(err)
			}
			h.reconcile(t)
			h.r.secretsOf(ctx, namespaceWith(optedInLabels))
			// The frozen cache's resourceVersion fails the precondition:
			// only what Delete does to the cached object matters here.
			_, _ = h.store.Delete(ctx, ns, instance())
			for key, obj := range cache.objs {
				if !reflect.DeepEqual(obj, cache.snapshot[key]) {
					t.Errorf("cached %T %s was modified by its reader", obj, key)
				}
			}
		})
	}
}
