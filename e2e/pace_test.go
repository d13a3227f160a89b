package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// apiSecretUpdates reads the kube-apiserver's own count of Secret updates
// (apiserver_request_total{resource="secrets",verb="PUT"}: the API server labels requests by HTTP method; all codes).
func apiSecretUpdates(ctx context.Context, cs *kubernetes.Clientset) (float64, error) {
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	return harness.MetricValue(string(raw), "apiserver_request_total", map[string]string{"resource": "secrets", "verb": "PUT"})
}

type updateSample struct {
	from, to time.Time // the scrape started, ended
	n        float64
}

// A rotation of 20 managed Secrets at refresh.writesPerSecond 5 reaches
// the API server no faster than that: its own request counter, sampled
// while the refresher rewrites them, never grows by more than 1.1 × 5/s
// over a sampled span plus the burst and a margin (a write in flight at
// each end of the span, the checkpoint's update of the new token). Unpaced,
// the 20 updates land within a fraction of a second. Then a restart with a
// rate too low for 20 Secrets says so at start, naming the rate needed, and
// serves all the same (tenants add to the count: it must not stop the
// webhook).
func TestRefresherRotationIsPacedAtTheAPIServer(t *testing.T) {
	const (
		secrets = 20
		rate    = 5.0
		burst   = 1
	)
	instance := runInstance("pace")
	secret := "pull-" + instance
	// 40s tokens refreshed at half-life: a 20s window, whose quarter (5s)
	// holds 20 writes at 5/s (4s).
	cfg := lifecycleConfig(instance, "40s", 0.5) + fmt.Sprintf("refresh: {writesPerSecond: %v}\n", rate)
	startLifecycleWebhook(t, cfg)
	nss := make([]string, secrets)
	for i := range nss {
		nss[i] = optedIn(t)
		patchedPod(t, nss[i], "app", secret)
	}
	first, _ := getSecret(t, nss[0], secret)
	firstToken := token(t, first)
	refreshAt := annotationTime(t, first, pullsecret.AnnotationIssuedAt).Add(20 * time.Second)

	eventually(t, 10*time.Second, "the rotation gauges to count the Secrets", func() bool {
		n, err := stack.Webhook.Metric("artifactory_pull_rotation_managed_secrets", nil)
		return err == nil && n == secrets
	})
	if p, err := stack.Webhook.Metric("artifactory_pull_rotation_projected_seconds", nil); err != nil || p != secrets/rate {
		t.Errorf("artifactory_pull_rotation_projected_seconds = %v (%v), want %v", p, err, secrets/rate)
	}
	if b, err := stack.Webhook.Metric("artifactory_pull_rotation_budget_seconds", nil); err != nil || b != 5 {
		t.Errorf("artifactory_pull_rotation_budget_seconds = %v (%v), want 5", b, err)
	}

	cs, err := stack.Cluster.Clientset(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var mu sync.Mutex
	var samples []updateSample
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			from := time.Now()
			n, err := apiSecretUpdates(ctx, cs)
			if err == nil {
				mu.Lock()
				samples = append(samples, updateSample{from: from, to: time.Now(), n: n})
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	rotated := func() bool {
		for _, ns := range nss {
			s, ok := getSecret(t, ns, secret)
			if !ok || token(t, s) == firstToken {
				return false
			}
		}
		return true
	}
	time.Sleep(time.Until(refreshAt.Add(-2 * time.Second)))
	eventually(t, 30*time.Second, "every Secret to carry the rotated token", rotated)
	time.Sleep(time.Second) // a last sample after the last write
	close(stop)
	<-sampled

	mu.Lock()
	defer mu.Unlock()
	if len(samples) < 10 {
		t.Fatalf("%d samples of the API server's metrics, want at least 10", len(samples))
	}
	if total := samples[len(samples)-1].n - samples[0].n; total < secrets {
		t.Fatalf("the API server counted %v Secret updates during the rotation, want at least %d", total, secrets)
	}
	worst := 0.0
	for i := range samples {
		for j := i + 1; j < len(samples); j++ {
			// Writes counted between the two samples were let through
			// between the start of one scrape and the end of the other.
			span := samples[j].to.Sub(samples[i].from).Seconds()
			if span < 1 {
				continue
			}
			n := samples[j].n - samples[i].n
			limit := 1.1*rate*span + burst + 3
			worst = max(worst, n/span)
			if n > limit {
				t.Errorf("the API server saw %v Secret updates in %.2fs, more than %.1f (refresh.writesPerSecond %v, burst %d)",
					n, span, limit, rate, burst)
			}
		}
	}
	t.Logf("%d samples; highest rate over a span of 1s or more: %.2f/s (configured %v/s)", len(samples), worst, rate)

	// 20 Secrets at 2/s take 10s, more than a quarter of the 20s window.
	err = stack.StartWebhook(context.Background(), harness.PodIdentity, func(o *harness.WebhookOptions) {
		o.Config = lifecycleConfig(instance, "40s", 0.5) + "refresh: {writesPerSecond: 2}\n"
		o.Args = append(o.Args, leaderArgs...)
	})
	if err != nil {
		t.Fatalf("start with a rate too low for the managed Secrets: %v (the count must not stop the webhook)", err)
	}
	want := "refresh.writesPerSecond 2 rotates 20 managed Secrets in 10s, more than a quarter (5s) of the 20s between " +
		"refresh point and expiry; set refresh.writesPerSecond to at least 4"
	if logs := stack.Webhook.Logs(); !strings.Contains(logs, want) {
		t.Errorf("the webhook's start log does not say %q", want)
	}
}
