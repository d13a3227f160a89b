package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// scaleResult is a rotation of instance scale's Secret in every managed
// namespace of the memory scenario, all due at once, as the API server saw
// it, and what warm admissions cost during and after it.
type scaleResult struct {
	Secrets         int
	WritesPerSecond float64 // configured (refresh.writesPerSecond)
	// Took is from the restarted webhook being ready to the last Secret
	// written; Window is the new token's refresh window (expiry − refresh
	// point).
	Took, Window time.Duration
	// Projected is the webhook's own projection of a rotation
	// (artifactory_pull_rotation_projected_seconds), in seconds.
	Projected float64
	// PeakWrites is the most Secret writes (create, update, patch) the API
	// server counted in one sampling interval of about a second, per second
	// (apiserver_request_total).
	PeakWrites float64
	// WritesPerSecret is the Secret writes the webhook made per rotated
	// Secret.
	WritesPerSecret float64
	// Warm admissions offered at the same rate during the rotation (from
	// rotationSettle after the restart) and after it, and the webhook's
	// garbage collections in each window.
	During, After       runResult
	GCsDuring, GCsAfter float64
}

// rotationAtScale restarts the webhook with instance scale's tokenTTL
// changed, as an operator's configuration change would: that changes the
// instance's fingerprint, so every managed Secret of scale is due at once
// as the webhook starts, the worst case of a rotation. It waits until the
// webhook has rewritten them all, sampling the API server's Secret writes,
// while warm admissions (instance main, whose Secrets stay fresh) are
// offered at a fixed rate; then offers them again with the rotation over.
func (b *bench) rotationAtScale(ctx context.Context, managed []string) (scaleResult, error) {
	r := scaleResult{Secrets: len(managed)}
	r.Window = time.Duration(float64(scaleRotatedTTL) * refreshFraction)
	rate, err := b.rateFor(0)
	if err != nil {
		return r, err
	}
	b.rate, r.WritesPerSecond = rate, rate
	warmNS := make([]string, warmNamespaces)
	for i := range warmNS {
		warmNS[i] = fmt.Sprintf("bench-warm-%d", i)
	}
	bodies, err := b.reviews(1000, func(i int) string { return warmNS[i%len(warmNS)] }, b.host)
	if err != nil {
		return r, err
	}
	apiWrites0, _, err := b.apiServerSecretWrites(ctx)
	if err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, ">> rotation at scale: restarting the webhook with instance scale's tokenTTL %s → %s (%d Secrets due at once), %v writes/s\n",
		scaleTTL, scaleRotatedTTL, r.Secrets, r.WritesPerSecond)
	b.adjust = b.adjustFor(scaleRotatedTTL, false)
	if err := b.stack.StartWebhook(ctx, harness.PodIdentity, b.adjust); err != nil {
		return r, err
	}
	start := time.Now()
	// The sampler's first interval starts here: writes made before (the
	// first of the rotation, while readiness was polled; the old process's
	// last) are not charged to it.
	apiWritesAtStart, startAt, err := b.apiServerSecretWrites(ctx)
	if err != nil {
		return r, err
	}

	// The API server's count of Secret writes, sampled about every second,
	// through the rotation and the admissions after it (the same
	// background load for both). The rotation is over when the API server
	// has counted a write per Secret: the webhook's own /metrics is not
	// polled meanwhile (each read lists the managed Secrets).
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	var sampled sync.WaitGroup
	var sampleErr error
	var peak float64                 // the sampler's until sampled.Wait
	counted := make(chan float64, 1) // writes since before the start, at each sample
	sampled.Go(func() {
		defer close(counted)
		last, lastAt := apiWritesAtStart, startAt
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-sampleCtx.Done():
				return
			case <-tick.C:
			}
			n, at, err := b.apiServerSecretWrites(sampleCtx)
			if err != nil {
				if sampleCtx.Err() == nil {
					sampleErr = err
				}
				return
			}
			peak = max(peak, (n-last)/at.Sub(lastAt).Seconds())
			last, lastAt = n, at
			select {
			case <-counted: // the newest count only
			default:
			}
			counted <- n - apiWrites0
		}
	})
	// Admissions offered while the webhook rotates, until every Secret is
	// written: new connections first, then a moment for the start to
	// settle.
	rotated := make(chan struct{})
	var duringErr error
	var offered sync.WaitGroup
	offered.Go(func() {
		if _, duringErr = b.hook.run(ctx, 4, bodies[:100], want{patched: true}); duringErr != nil {
			return
		}
		select {
		case <-rotated:
			duringErr = fmt.Errorf("the rotation was over %s after the start: offer fewer -rotation-settle or more -namespaces", time.Since(start))
			return
		case <-time.After(time.Until(start.Add(b.o.rotationSettle))):
		}
		gc0, err := b.stack.Webhook.Metric("go_gc_duration_seconds", nil)
		if err != nil {
			duringErr = err
			return
		}
		r.During, duringErr = b.hook.paced(ctx, b.o.admissionRate, bodies, rotated, 0, want{patched: true})
		gc1, err := b.stack.Webhook.Metric("go_gc_duration_seconds", nil)
		r.GCsDuring, duringErr = gc1-gc0, errors.Join(duringErr, err)
	})
	// At most the refresh window: past it the rotation failed anyway.
	over, deadline := false, time.After(r.Window)
wait:
	for !over {
		select {
		case n, ok := <-counted:
			if !ok {
				break wait
			}
			over = n >= float64(r.Secrets)
		case <-deadline:
			break wait
		}
	}
	r.Took = time.Since(start)
	close(rotated)
	offered.Wait()
	if !over { // the sampler ended (an error, or ctx), or the window passed
		stopSampling()
		for range counted {
		}
		sampled.Wait()
		return r, fmt.Errorf("the rotation of %d Secrets did not end within %s (sampling: %w)", r.Secrets, r.Window, errors.Join(sampleErr, ctx.Err()))
	}
	if duringErr != nil {
		return r, fmt.Errorf("admissions during the rotation: %w", duringErr)
	}
	// The webhook's own count: every Secret written (the API server's
	// count also holds the checkpoint's writes).
	if err := poll(ctx, time.Minute, fmt.Sprintf("the webhook to have written %d Secrets", r.Secrets), func() (bool, error) {
		n, err := b.stack.Webhook.Metric("artifactory_pull_secret_writes_total", nil)
		return n >= float64(r.Secrets), err
	}); err != nil {
		return r, err
	}
	if r.Projected, err = b.stack.Webhook.Metric("artifactory_pull_rotation_projected_seconds", nil); err != nil {
		return r, err
	}
	// Everything the webhook wrote since its start was a Secret of the
	// rotation.
	writes, err := b.stack.Webhook.Metric("artifactory_pull_secret_writes_total", nil)
	if err != nil {
		return r, err
	}
	r.WritesPerSecret = writes / float64(r.Secrets)
	if err := b.checkRotated(ctx, managed); err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, ">> rotation at scale: %d Secrets in %s (projected %.0f s); admissions with the rotation over\n",
		r.Secrets, r.Took.Round(time.Second), r.Projected)
	// As many as during the rotation: the same window length, the same
	// chances of a slow moment on a shared machine.
	n := len(r.During.Latencies)
	gc0, err := b.stack.Webhook.Metric("go_gc_duration_seconds", nil)
	if err != nil {
		return r, err
	}
	if r.After, err = b.hook.paced(ctx, b.o.admissionRate, bodies, nil, n, want{patched: true}); err != nil {
		return r, fmt.Errorf("admissions after the rotation: %w", err)
	}
	gc1, err := b.stack.Webhook.Metric("go_gc_duration_seconds", nil)
	if err != nil {
		return r, err
	}
	r.GCsAfter = gc1 - gc0
	stopSampling()
	for range counted { // drain: the sampler ends
	}
	sampled.Wait()
	r.PeakWrites = peak
	if sampleErr != nil {
		return r, fmt.Errorf("sampling the API server's metrics: %w", sampleErr)
	}
	return r, nil
}

// checkRotated reads every managed namespace's Secret of instance scale
// back from the API server: each must carry the webhook's current
// fingerprint of the instance, that of a first pod's Secret written now.
func (b *bench) checkRotated(ctx context.Context, managed []string) error {
	nsName, err := b.createNamespaces(ctx, "bench-scale-check", 1, nil)
	if err != nil {
		return err
	}
	body, err := b.review(nsName[0], podJSON(scaleHost, nsName[0]), false)
	if err != nil {
		return err
	}
	if err := b.hook.post(ctx, body, want{patched: true, secret: scaleSecret}, true); err != nil {
		return err
	}
	fresh, err := b.secret(ctx, nsName[0], scaleSecret)
	if err != nil {
		return err
	}
	current := fresh.Annotations[pullsecret.AnnotationFingerprint]
	list, err := b.kube.CoreV1().Secrets("").List(ctx, metav1.ListOptions{
		LabelSelector: pullsecret.ManagedByLabel + "=" + pullsecret.ManagedByValue, FieldSelector: "metadata.name=" + scaleSecret})
	if err != nil {
		return err
	}
	prints := map[string]string{}
	for i := range list.Items {
		prints[list.Items[i].Namespace] = list.Items[i].Annotations[pullsecret.AnnotationFingerprint]
	}
	for _, ns := range managed {
		p, ok := prints[ns]
		switch {
		case !ok:
			return fmt.Errorf("namespace %s has no Secret %s after the rotation", ns, scaleSecret)
		case p != current:
			return fmt.Errorf("Secret %s/%s was not rewritten in the rotation: fingerprint %q, the webhook's %q", ns, scaleSecret, p, current)
		}
	}
	return nil
}

// apiServerSecretWrites is the API server's count of successful Secret
// creates, updates and patches so far (apiserver_request_total), read from
// its own /metrics: what it received, not what the webhook says it sent;
// at is the middle of the request that read it. The lines are scanned
// rather than parsed whole: the page is large and read every second.
func (b *bench) apiServerSecretWrites(ctx context.Context) (n float64, at time.Time, err error) {
	t0 := time.Now()
	page, err := b.kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, t0, fmt.Errorf("reading the API server's /metrics: %w", err)
	}
	at = t0.Add(time.Since(t0) / 2)
	n, err = secretWrites(page)
	return n, at, err
}

var (
	requestTotal = []byte("apiserver_request_total{")
	writeVerb    = regexp.MustCompile(`\bverb="(POST|PUT|PATCH|APPLY)"`)
	successCode  = regexp.MustCompile(`\bcode="2\d\d"`)
)

// secretWrites sums apiserver_request_total over the series of successful
// Secret writes (resource secrets, no subresource, code 2xx) in a /metrics
// page.
func secretWrites(page []byte) (float64, error) {
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(page))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, requestTotal) || !bytes.Contains(line, []byte(`resource="secrets"`)) ||
			!bytes.Contains(line, []byte(`subresource=""`)) || !writeVerb.Match(line) || !successCode.Match(line) {
			continue
		}
		i := bytes.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(string(line[i+1:]), 64)
		if err != nil {
			return 0, fmt.Errorf("apiserver_request_total: %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// paced offers bodies (round robin) at rate per second, each on its own
// request, until stop is closed (stop nil: until n requests were sent),
// and records every latency. Unlike run it does not wait for an answer
// before sending the next request: the offered load stays the same however
// slow the answers get.
func (t *target) paced(ctx context.Context, rate int, bodies [][]byte, stop <-chan struct{}, n int, w want) (runResult, error) {
	var (
		mu       sync.Mutex
		lat      []time.Duration
		firstErr error
		wg       sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	start := time.Now()
send:
	for i := 0; stop != nil || i < n; i++ {
		if i > 0 { // the first at once: a run has at least one
			select {
			case <-stop:
				break send
			case <-ctx.Done():
				break send
			case <-tick.C:
			}
		}
		body := bodies[i%len(bodies)]
		wg.Go(func() {
			t0 := time.Now()
			err := t.post(ctx, body, w, false)
			d := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
				cancel()
			}
			lat = append(lat, d)
		})
	}
	wg.Wait()
	if firstErr != nil {
		return runResult{}, firstErr
	}
	return runResult{Latencies: lat, Wall: time.Since(start)}, nil
}

// memorySAResult is what per-ServiceAccount Secrets cost the webhook: RSS
// and live heap per Secret of instance team (identity serviceAccount), each
// with its ServiceAccount naming a role, over the memory scenario's figures
// for the same namespaces.
type memorySAResult struct {
	Secrets                     int
	RSS, Heap                   float64
	RSSPerSecret, HeapPerSecret float64
	// Proofs is the role assumptions the restarted webhook made (one per
	// ServiceAccount: the refresher proves each before handing it the
	// role's token); Writes the Secret writes (none: every Secret carries
	// the role's current token).
	Proofs, Writes float64
	Rate           float64 // refresh.writesPerSecond the webhook started with
}

// memorySA gives every managed namespace of the memory scenario
// ServiceAccount podSA naming teamRole and its Secret of instance team (a
// copy of one the webhook wrote), restarts the webhook, waits until the
// refresher has proven every ServiceAccount, and samples its memory.
func (b *bench) memorySA(ctx context.Context, managed []string, base memoryResult) (memorySAResult, error) {
	m := memorySAResult{Secrets: len(managed)}
	tmpl, err := b.secret(ctx, warmSAPrefix+"-0", teamSecret)
	if err != nil {
		return m, err
	}
	// The rate the webhook can start with once they exist.
	if m.Rate, err = b.rateFor(m.Secrets); err != nil {
		return m, err
	}
	fmt.Fprintf(os.Stderr, ">> memory-sa: %d ServiceAccounts naming a role, each with its Secret\n", m.Secrets)
	start := time.Now()
	if err := b.createServiceAccounts(ctx, managed, podSA, map[string]string{config.RoleARNAnnotation: teamRole}); err != nil {
		return m, err
	}
	if err := parallel(ctx, 32, len(managed), func(i int) error {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: tmpl.Name, Namespace: managed[i], Labels: tmpl.Labels, Annotations: tmpl.Annotations},
			Type:       tmpl.Type, Data: tmpl.Data,
		}
		_, err := b.kube.CoreV1().Secrets(managed[i]).Create(ctx, s, metav1.CreateOptions{})
		return err
	}); err != nil {
		return m, fmt.Errorf("creating the ServiceAccounts' Secrets: %w", err)
	}
	b.rate = m.Rate
	b.adjust = b.adjustFor(scaleRotatedTTL, false)
	fmt.Fprintf(os.Stderr, ">> memory-sa: created in %s; restarting the webhook (refresh.writesPerSecond %v) to sync and prove them\n",
		time.Since(start).Round(time.Second), m.Rate)
	if err := b.stack.StartWebhook(ctx, harness.PodIdentity, b.adjust); err != nil {
		return m, err
	}
	if err := poll(ctx, 30*time.Minute, fmt.Sprintf("the refresher to prove %d ServiceAccounts", m.Secrets), func() (bool, error) {
		n, err := b.stack.Webhook.Metric("artifactory_pull_role_assumptions_total", map[string]string{"result": "success"})
		m.Proofs = n
		return n >= float64(m.Secrets), err
	}); err != nil {
		return m, err
	}
	if m.Writes, err = b.stack.Webhook.Metric("artifactory_pull_secret_writes_total", nil); err != nil {
		return m, err
	}
	if m.RSS, m.Heap, _, err = b.sampleMemory(ctx); err != nil {
		return m, err
	}
	m.RSSPerSecret = (m.RSS - base.RSS) / float64(m.Secrets)
	m.HeapPerSecret = (m.Heap - base.Heap) / float64(m.Secrets)
	return m, nil
}

// rateFor is the refresh.writesPerSecond the webhook must start with once
// extra more managed Secrets exist: the configured one, or more when the
// webhook would refuse to start with it (config.CheckRotation: it cannot
// rewrite every managed Secret within a quarter of the smallest refresh
// window of the configuration of the rotation at scale), with a tenth of
// margin, read from the running webhook's count.
func (b *bench) rateFor(extra int) (float64, error) {
	managed, err := b.stack.Webhook.Metric("artifactory_pull_rotation_managed_secrets", nil)
	if err != nil {
		return 0, err
	}
	cfg, err := config.Parse([]byte(b.config(scaleRotatedTTL, false)))
	if err != nil {
		return 0, fmt.Errorf("the benchmark's configuration: %w", err)
	}
	n := int(managed) + extra
	budget, _ := cfg.RotationBudget()
	needed := config.NeededRate(n+n/10, budget)
	if needed <= b.o.writesPerSecond {
		return b.o.writesPerSecond, nil
	}
	fmt.Fprintf(os.Stderr, ">> %d managed Secrets: starting the webhook at refresh.writesPerSecond %v, not %v (it would refuse to start)\n",
		n, needed, b.o.writesPerSecond)
	return needed, nil
}
