package pullsecret

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// refreshClient gives h's Store a refresher client of its own on the same
// fake API server, counting its requests by verb apart from the Writer's.
func refreshClient(h *harness, pace Pacer) *pacedClient {
	c := &pacedClient{calls: map[string]int{}}
	c.Client = interceptor.NewClient(h.api, interceptor.Funcs{
		Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			c.count("create")
			return cl.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			c.count("update")
			return cl.Update(ctx, obj, opts...)
		},
		Delete: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			c.count("delete")
			return cl.Delete(ctx, obj, opts...)
		},
	})
	h.store.refresh, h.store.pace = c, pace
	return c
}

type pacedClient struct {
	client.Client
	mu    sync.Mutex
	calls map[string]int
	at    []time.Time // of every write
}

func (c *pacedClient) count(verb string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[verb]++
	c.at = append(c.at, time.Now())
}

func (c *pacedClient) writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.at)
}

// The refresher's writes go through its own client, at its pace: 20
// Secrets at 10 writes per second (burst 1) take at least 1.9s, whatever
// the number of workers. A token bucket never lets a write through early,
// so the lower bound cannot flake.
func TestRefresherWritesArePacedThroughItsOwnClient(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{})
	rc := refreshClient(h, flowcontrol.NewTokenBucketRateLimiter(10, 1))
	const secrets, workers = 20, 4 // the refresher's MaxConcurrentReconciles
	work := make(chan string, secrets)
	for i := range secrets {
		work <- fmt.Sprintf("team-%02d", i)
	}
	close(work)
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for namespace := range work {
				if res, err := h.store.Sync(context.Background(), namespace, instance()); err != nil || res.Action != ActionCreated {
					t.Errorf("Sync(%s) = %+v, %v", namespace, res, err)
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if took < 1890*time.Millisecond {
		t.Errorf("%d Secrets at 10/s written in %s, want at least 1.9s", secrets, took)
	}
	if rc.writes() != secrets || rc.calls["create"] != secrets {
		t.Errorf("refresher client writes = %v, want %d creates", rc.calls, secrets)
	}
	if n := h.calls["create"] + h.calls["update"]; n != 0 {
		t.Errorf("%d refresher writes went through the admission client", n)
	}
	// Deletes by the refresher are paced too, through its client.
	start = time.Now()
	for i := range 3 {
		if _, err := h.store.Delete(context.Background(), fmt.Sprintf("team-%02d", i), instance()); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 190*time.Millisecond {
		t.Errorf("3 deletes at 10/s took %s, want at least 0.2s (the bucket was empty)", took)
	}
	if rc.calls["delete"] != 3 || h.calls["delete"] != 0 {
		t.Errorf("deletes: refresher client %d, admission client %d; want 3, 0", rc.calls["delete"], h.calls["delete"])
	}
}

// blockingPace is a refresher saturated for as long as the test likes:
// every Wait blocks until release is closed.
type blockingPace struct {
	waiting chan struct{}
	release chan struct{}
}

func (p *blockingPace) Wait(ctx context.Context) error {
	select {
	case p.waiting <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-p.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// While the refresher waits for its pace, admissions write at once,
// through their own client, even a Secret the refresher is about to write
// (it waits outside the shared write, so the admission does not join its
// wait); the refresher then finds the write done and writes nothing.
func TestAdmissionIsNotSlowedWhileTheRefresherIsSaturated(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{})
	pace := &blockingPace{waiting: make(chan struct{}), release: make(chan struct{})}
	rc := refreshClient(h, pace)
	namespaces := []string{ns, "team-b", "team-c", "team-d"} // ns is the one admission writes too
	results := make(chan SyncResult, len(namespaces))
	var wg sync.WaitGroup
	for _, namespace := range namespaces {
		wg.Go(func() {
			res, err := h.store.Sync(context.Background(), namespace, instance())
			if err != nil {
				t.Errorf("Sync(%s): %v", namespace, err)
			}
			if namespace == ns {
				results <- res
			}
		})
	}
	for range namespaces { // every worker is waiting for the pace
		<-pace.waiting
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	res, err := h.store.Ensure(ctx, ns, instance(), false)
	took := time.Since(start)
	if err != nil || res.Action != ActionCreated {
		t.Fatalf("Ensure = %+v, %v; want created", res, err)
	}
	if took > 2*time.Second {
		t.Errorf("admission took %s while the refresher was saturated", took)
	}
	if h.calls["create"] != 1 || rc.writes() != 0 {
		t.Errorf("admission client creates %d, refresher client writes %d; want 1, 0", h.calls["create"], rc.writes())
	}

	close(pace.release)
	wg.Wait()
	if got := <-results; got.Action != ActionReused {
		t.Errorf("the refresher's Sync of the Secret admission wrote = %s, want reused (the write is shared)", got.Action)
	}
	if rc.calls["create"] != len(namespaces)-1 || rc.calls["update"] != 0 {
		t.Errorf("refresher client writes = %v, want %d creates (the other namespaces) and no update", rc.calls, len(namespaces)-1)
	}
	var s corev1.Secret
	if err := h.api.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: instance().SecretName}, &s); err != nil {
		t.Fatal(err)
	}
}

// A refresher stopped (or losing its lease) while it waits for its pace
// has not failed to refresh: no error for the controller to log, no failed
// action, no Warning Event.
func TestRefresherStoppedWhileWaitingForItsPaceHasNotFailed(t *testing.T) {
	h := newRefresherHarness(t, true, namespaceWith(optedInLabels),
		managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts))
	h.now = t0.Add(46 * time.Minute) // due
	h.tokens.cred = credAt(h.now, rawToken)
	pace := &blockingPace{waiting: make(chan struct{}), release: make(chan struct{})}
	refreshClient(h.harness, pace)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := h.r.Reconcile(ctx, reconcile.Request{NamespacedName: secretKey})
		done <- err
	}()
	<-pace.waiting
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Reconcile = %v, want nil: stopping is not a failure", err)
	}
	if e := h.event(); e != "" {
		t.Errorf("event %q, want none", e)
	}
}
