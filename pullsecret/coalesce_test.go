package pullsecret

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// laggingCache is an informer cache that has not yet seen any write since
// snapshot was taken, until caughtUp is set.
type laggingCache struct {
	client.Reader
	mu       sync.Mutex
	snapshot *corev1.Secret // nil: the Secret did not exist
	caughtUp bool
}

func (c *laggingCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.mu.Lock()
	live, snap := c.caughtUp, c.snapshot
	c.mu.Unlock()
	if live {
		return managedOnly{c.Reader}.Get(ctx, key, obj, opts...)
	}
	if snap == nil {
		return emptyCache{}.Get(ctx, key, obj, opts...)
	}
	reduced, _ := SecretTransform()(snap.DeepCopy())
	*obj.(*corev1.Secret) = *reduced.(*corev1.Secret)
	return nil
}

func (c *laggingCache) catchUp() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.caughtUp = true
}

// lagging rewires h's store to read a cache frozen at the Secret's current
// state.
func lagging(t *testing.T, h *harness, existing *corev1.Secret) *laggingCache {
	t.Helper()
	c := &laggingCache{Reader: h.api, snapshot: existing}
	h.store.reader = c
	return c
}

func TestConcurrentEnsureAndSyncOnAStaleSecretWriteItOnce(t *testing.T) {
	existing := managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts)
	h := newHarness(t, interceptor.Funcs{}, existing)
	h.now = t0.Add(50 * time.Minute) // due for refresh
	h.tokens.cred = credAt(h.now, rawToken)
	lagging(t, h, existing)

	const callers = 32
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Go(func() {
			var err error
			if i%4 == 0 { // the refresher, racing admissions
				_, err = h.store.Sync(context.Background(), ns, instance())
			} else {
				_, err = h.store.Ensure(context.Background(), ns, instance(), false)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Admissions after the burst, before the cache shows the write.
	for range 3 {
		if res, err := h.store.Ensure(context.Background(), ns, instance(), false); err != nil || res.Action != ActionReused {
			t.Fatalf("back-to-back Ensure: action %q, err %v; want reused", res.Action, err)
		}
	}
	if h.calls["update"] != 1 || h.calls["create"] != 0 {
		t.Errorf("writes = %v for %d concurrent callers and 3 more, want exactly 1 update", h.calls, callers)
	}
	if _, tok, _ := ParseDockerConfigJSON(h.secret(t).Data[corev1.DockerConfigJsonKey], "acme.jfrog.io"); tok.Reveal() != rawToken {
		t.Error("the Secret does not carry the new token")
	}
}

func TestWriteRecordIsDroppedOnceTheCacheShowsTheWrite(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{})
	cache := lagging(t, h, nil)
	if res, err := h.store.Ensure(context.Background(), ns, instance(), false); err != nil || res.Action != ActionCreated {
		t.Fatalf("first Ensure: %q, %v", res.Action, err)
	}
	if res, _ := h.store.Ensure(context.Background(), ns, instance(), false); res.Action != ActionReused || h.calls["create"] != 1 {
		t.Fatalf("Ensure before the cache caught up: %q, calls %v; want reused without a write", res.Action, h.calls)
	}
	cache.catchUp()
	if res, _ := h.store.Ensure(context.Background(), ns, instance(), false); res.Action != ActionReused {
		t.Fatalf("Ensure once caught up: %q", res.Action)
	}
	if n := len(h.store.written); n != 0 {
		t.Errorf("%d write records left once the cache shows the write, want 0", n)
	}
}

func TestStaleCacheAfterTheWriteRecordExpiredCostsAReadNotAWrite(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{})
	lagging(t, h, nil)
	if _, err := h.store.Ensure(context.Background(), ns, instance(), false); err != nil {
		t.Fatal(err)
	}
	h.now = h.now.Add(recentWrite)
	res, err := h.store.Ensure(context.Background(), ns, instance(), false)
	if err != nil || res.Action != ActionReused || h.calls["create"] != 2 || h.calls["update"] != 0 {
		t.Errorf("action %q, err %v, calls %v: want the server's fresh Secret reused after a failed create, no update",
			res.Action, err, h.calls)
	}
}

func TestRefresherRecreatesASecretDeletedRightAfterItsWrite(t *testing.T) {
	h := newRefresherHarness(t, true, namespaceWith(optedInLabels))
	h.r.rememberDeleted(secretKey)
	h.reconcile(t) // creates it; the Store records the write
	if err := h.api.Delete(context.Background(), h.secret(t)); err != nil {
		t.Fatal(err)
	}
	deleted := &corev1.Secret{}
	deleted.Namespace, deleted.Name, deleted.Labels = ns, secretKey.Name, map[string]string{ManagedByLabel: ManagedByValue}
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	h.r.secretEvents().Delete(context.Background(), event.DeleteEvent{Object: deleted}, q)
	h.reconcile(t)
	if err := h.api.Get(context.Background(), secretKey, &corev1.Secret{}); err != nil {
		t.Error("the Secret deleted before the cache showed its write was not recreated")
	}
}

func TestUpdateKeepsLabelsAndAnnotationsTheWebhookDoesNotOwn(t *testing.T) {
	existing := managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts)
	existing.Labels["team"] = "a"
	existing.Annotations["backup.example/policy"] = "daily"
	h := newHarness(t, interceptor.Funcs{}, existing)
	h.now = t0.Add(50 * time.Minute)
	h.tokens.cred = credAt(h.now, rawToken)
	if res, err := h.store.Ensure(context.Background(), ns, instance(), false); err != nil || res.Action != ActionUpdated {
		t.Fatalf("Ensure: %q, %v", res.Action, err)
	}
	s := h.secret(t)
	if s.Labels["team"] != "a" || s.Annotations["backup.example/policy"] != "daily" {
		t.Errorf("labels %v annotations %v: the update dropped metadata the cache does not hold", s.Labels, s.Annotations)
	}
	if _, ok := s.Annotations[AnnotationDataSHA256]; ok {
		t.Error("the cache-only digest annotation was written to the API server")
	}
}
