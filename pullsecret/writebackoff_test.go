package pullsecret

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
)

// refusingUpdates is an API server that answers every Secret update with
// 409 Conflict while refusing is set, as one under contention does.
type refusingUpdates struct{ refusing atomic.Bool }

func (r *refusingUpdates) funcs() interceptor.Funcs {
	return interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
		if r.refusing.Load() {
			return apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, obj.GetName(),
				errors.New("the object has been modified; please apply your changes to the latest version and try again"))
		}
		return c.Update(ctx, obj, opts...)
	}}
}

// failingWritesHarness is a Store (with metrics and a fixed-jitter write
// backoff) on an API server that refuses updates of an expired Secret.
func failingWritesHarness(t *testing.T) (*harness, *refusingUpdates, *prometheus.Registry) {
	t.Helper()
	api := &refusingUpdates{}
	api.refusing.Store(true)
	h := newHarness(t, api.funcs(), managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts))
	h.now = t0.Add(70 * time.Minute) // expired: no still-valid Secret to fall back to
	h.tokens.cred = credAt(h.now, rawToken)
	reg := prometheus.NewRegistry()
	h.store.metrics = metrics.New(reg)
	h.store.backoff = credentials.Backoff{Base: 4 * time.Second, Cap: time.Minute, Rand: func() float64 { return 1 }}
	return h, api, reg
}

func writes(t *testing.T, reg *prometheus.Registry, writer string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "artifactory_pull_secret_writes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "writer" && l.GetValue() == writer {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

func TestAFailedAdmissionWriteHoldsTheRefresherUntilTheSecretsBackoffEnds(t *testing.T) {
	h, api, reg := failingWritesHarness(t)
	ctx := context.Background()

	_, err := h.store.Ensure(ctx, ns, instance(), false)
	var werr *WriteError
	if !errors.As(err, &werr) || werr.Held || werr.Failures != 1 || !apierrors.IsConflict(err) {
		t.Fatalf("Ensure against refused updates: %v; want a WriteError wrapping the conflict, first failure", err)
	}
	if got := writes(t, reg, metrics.WriterAdmission); got != 5 {
		t.Errorf("admission made %v update requests, want the 5 of its conflict retries", got)
	}
	if want := h.now.Add(4 * time.Second); !werr.RetryAt.Equal(want) {
		t.Errorf("RetryAt = %s, want %s (the first failure backs off Base)", werr.RetryAt, want)
	}

	// The refresher, moments later: no request, the admission's failure told.
	h.now = h.now.Add(time.Second)
	_, err = h.store.Sync(ctx, ns, instance())
	if !errors.As(err, &werr) || !werr.Held || !strings.Contains(err.Error(), "the object has been modified") {
		t.Fatalf("Sync during the backoff: %v; want a held WriteError naming the latest failure", err)
	}
	if got := writes(t, reg, metrics.WriterRefresher); got != 0 {
		t.Errorf("the refresher made %v write requests during the backoff, want 0", got)
	}

	// An admission does not wait: its pod is at stake.
	if _, err := h.store.Ensure(ctx, ns, instance(), false); err == nil {
		t.Fatal("Ensure succeeded against refused updates")
	}
	if got := writes(t, reg, metrics.WriterAdmission); got != 10 {
		t.Errorf("admission update requests = %v, want 10: a second admission tries again", got)
	}
	if !errors.As(err, &werr) {
		t.Fatal(err)
	}

	// After the backoff (now doubled by the second failure) the refresher tries once more.
	h.now = h.now.Add(7 * time.Second)
	if _, err := h.store.Sync(ctx, ns, instance()); !errors.As(err, &werr) || !werr.Held {
		t.Fatalf("Sync 7s after the second failure: %v; want held (second failure backs off 8s)", err)
	}
	h.now = h.now.Add(time.Second)
	_, err = h.store.Sync(ctx, ns, instance())
	if !errors.As(err, &werr) || werr.Held || werr.Failures != 3 {
		t.Fatalf("Sync after the backoff: %v; want a write attempted and failed, the third in a row", err)
	}
	if got := writes(t, reg, metrics.WriterRefresher); got != 5 {
		t.Errorf("the refresher made %v update requests after the backoff, want 5", got)
	}

	// A success ends the backoff for both.
	api.refusing.Store(false)
	if res, err := h.store.Ensure(ctx, ns, instance(), false); err != nil || res.Action != ActionUpdated {
		t.Fatalf("Ensure once updates pass: %q, %v", res.Action, err)
	}
	if n := len(h.store.failed); n != 0 {
		t.Errorf("%d failure records left after a successful write, want 0", n)
	}
}

func TestRefresherWaitsOutTheWriteBackoffWithoutTheRateLimiterAndWarnsOnce(t *testing.T) {
	h, _, reg := failingWritesHarness(t)
	rh := refresherOn(t, h, true)
	if err := h.api.Create(context.Background(), namespaceWith(optedInLabels)); err != nil {
		t.Fatal(err)
	}

	res := rh.reconcile(t) // fails: no error for the rate limiter, a requeue at the backoff
	if res.RequeueAfter != 4*time.Second {
		t.Errorf("RequeueAfter = %s after a failed write, want the Secret's 4s backoff", res.RequeueAfter)
	}
	e := rh.event()
	if !strings.HasPrefix(e, "Warning "+ReasonWriteFailed) || !strings.Contains(e, "the object has been modified") ||
		strings.Contains(e, rawToken) || strings.Contains(e, "old-token") {
		t.Errorf("event = %q, want a warning naming the API server's reason and no token", e)
	}

	h.now = h.now.Add(3 * time.Second)
	if res := rh.reconcile(t); res.RequeueAfter != time.Second {
		t.Errorf("RequeueAfter = %s during the backoff, want the 1s left", res.RequeueAfter)
	}
	if e := rh.event(); e != "" {
		t.Errorf("event %q while backing off: one warning per failed write, not per look", e)
	}
	if got := writes(t, reg, metrics.WriterRefresher); got != 5 {
		t.Errorf("refresher update requests = %v, want the 5 of one failed write", got)
	}
}
