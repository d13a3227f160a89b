package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// Scenario names, in the order they run at each concurrency level.
const (
	scRaw     = "raw"
	scFloor   = "floor"
	scDecode  = "decode"
	scWarm    = "warm"
	scWarmSA  = "warm-sa" // warm, instance identity serviceAccount
	scNoMatch = "no-match"
	scCold    = "cold"
)

// scenarioRun is one scenario at one concurrency level.
type scenarioRun struct {
	Scenario    string  `json:"scenario"`
	Concurrency int     `json:"concurrency"`
	Requests    int     `json:"requests"`
	Throughput  float64 `json:"throughput_per_s"`
	P50         float64 `json:"p50_ms"`
	P99         float64 `json:"p99_ms"`
	P999        float64 `json:"p999_ms"`
}

func newRun(scenario string, conc int, r runResult) scenarioRun {
	return scenarioRun{Scenario: scenario, Concurrency: conc, Requests: len(r.Latencies), Throughput: r.throughput(),
		P50: ms(r.percentile(0.50)), P99: ms(r.percentile(0.99)), P999: ms(r.percentile(0.999))}
}

// warmCosts is what warm admissions cost beyond their latency: API requests
// (client-go's count in the webhook), token exchanges (Artifactory) and
// sts:AssumeRoleWithWebIdentity calls (STS), per 1,000 measured admissions
// of the warm and the per-ServiceAccount warm scenario; and what priming the
// per-ServiceAccount namespaces cost (one first admission each).
type warmCosts struct {
	APIPer1000, ExchangesPer1000, AssumePer1000       float64
	SAAPIPer1000, SAExchangesPer1000, SAAssumePer1000 float64
	SAPrime                                           primeCost
}

// primeCost is what the first admission of ServiceAccounts, each in its
// namespace and all naming one role, cost.
type primeCost struct {
	ServiceAccounts                 int
	APIRequests, Exchanges, Assumed float64
}

// counters are the webhook's API requests, the exchanges Artifactory
// answered and the role assumptions STS received so far.
type counters struct{ api, exchanges, assumed float64 }

func (b *bench) counters() (counters, error) {
	api, err := b.apiRequests()
	return counters{api: api, exchanges: float64(b.stack.Emu.Artifactory.Exchanges()),
		assumed: float64(len(b.stack.Emu.STS.WebIdentityTokens()))}, err
}

func (c counters) sub(o counters) counters {
	return counters{api: c.api - o.api, exchanges: c.exchanges - o.exchanges, assumed: c.assumed - o.assumed}
}

// latency runs every scenario at every concurrency level, the floors first so
// that each ratio compares runs minutes apart at most. It returns the runs
// and what the warm admissions cost.
func (b *bench) latency(ctx context.Context) ([]scenarioRun, warmCosts, error) {
	var costs warmCosts
	n := b.o.count
	warmNS, err := b.createNamespaces(ctx, "bench-warm", warmNamespaces, nil)
	if err != nil {
		return nil, costs, err
	}
	// The per-ServiceAccount namespaces: the pod's ServiceAccount in each,
	// annotated with the team's role.
	warmSANS, err := b.createNamespaces(ctx, warmSAPrefix, warmNamespaces, nil)
	if err != nil {
		return nil, costs, err
	}
	if err := b.createServiceAccounts(ctx, warmSANS, podSA, map[string]string{config.RoleARNAnnotation: teamRole}); err != nil {
		return nil, costs, err
	}
	noMatchNS, err := b.createNamespaces(ctx, "bench-nomatch", 1, nil)
	if err != nil {
		return nil, costs, err
	}
	// Prime: one admission per warm namespace writes its Secret (for the
	// per-ServiceAccount ones: the ServiceAccount's, minted as its role);
	// then wait until a round of admissions costs no API request (Secrets,
	// ServiceAccounts and tokens cached).
	prime, err := b.reviews(warmNamespaces, func(i int) string { return warmNS[i] }, b.host)
	if err != nil {
		return nil, costs, err
	}
	primeSA, err := b.reviews(warmNamespaces, func(i int) string { return warmSANS[i] }, teamHost)
	if err != nil {
		return nil, costs, err
	}
	wantSA := want{patched: true, secret: teamSecret}
	if _, err := b.hook.run(ctx, 1, prime, want{patched: true}); err != nil {
		return nil, costs, err
	}
	c0, err := b.counters()
	if err != nil {
		return nil, costs, err
	}
	for i := range primeSA {
		// One at a time, each answer decoded: every pod must get its
		// ServiceAccount's Secret.
		if err := b.hook.post(ctx, primeSA[i], wantSA, true); err != nil {
			return nil, costs, fmt.Errorf("priming %s: %w", warmSANS[i], err)
		}
	}
	c1, err := b.counters()
	if err != nil {
		return nil, costs, err
	}
	d := c1.sub(c0)
	costs.SAPrime = primeCost{ServiceAccounts: len(warmSANS), APIRequests: d.api, Exchanges: d.exchanges, Assumed: d.assumed}
	if err := b.checkTeamSecrets(ctx, warmSANS); err != nil {
		return nil, costs, err
	}
	if err := poll(ctx, time.Minute, "the warm Secrets to be cached", func() (bool, error) {
		before, err := b.apiRequests()
		if err != nil {
			return false, err
		}
		if _, err := b.hook.run(ctx, 4, prime, want{patched: true}); err != nil {
			return false, err
		}
		if _, err := b.hook.run(ctx, 4, primeSA, wantSA); err != nil {
			return false, err
		}
		after, err := b.apiRequests()
		return after == before, err
	}); err != nil {
		return nil, costs, err
	}

	warm, err := b.reviews(n, func(i int) string { return warmNS[i%len(warmNS)] }, b.host)
	if err != nil {
		return nil, costs, err
	}
	warmSA, err := b.reviews(n, func(i int) string { return warmSANS[i%len(warmSANS)] }, teamHost)
	if err != nil {
		return nil, costs, err
	}
	noMatch, err := b.reviews(n, func(int) string { return noMatchNS[0] }, "ghcr.io")
	if err != nil {
		return nil, costs, err
	}
	var runs []scenarioRun
	var warmRequests, warmSARequests float64
	var warmCost, warmSACost counters
	for _, conc := range b.o.levels {
		// Fresh namespaces for the cold runs, created (and cached by the
		// webhook) before anything is measured at this level.
		coldNS, err := b.createNamespaces(ctx, fmt.Sprintf("bench-cold-c%d", conc), n, nil)
		if err != nil {
			return nil, costs, err
		}
		cold, err := b.reviews(n, func(i int) string { return coldNS[i] }, b.host)
		if err != nil {
			return nil, costs, err
		}
		for _, sc := range []struct {
			name   string
			t      *target
			bodies [][]byte
			want   want
		}{
			{scRaw, b.raw, warm, want{}},
			{scFloor, b.floor, warm, want{}},
			{scDecode, b.decode, warm, want{patched: true}},
			{scWarm, b.hook, warm, want{patched: true}},
			{scWarmSA, b.hook, warmSA, wantSA},
			{scNoMatch, b.hook, noMatch, want{}},
			{scCold, b.hook, cold, want{patched: true}},
		} {
			// Warm-up: open the connections and let the scheduler settle.
			wu := sc.bodies
			if sc.name == scCold {
				wu = warm
			}
			if _, err := sc.t.run(ctx, conc, wu[:min(len(wu), max(4*conc, n/10))], sc.want); err != nil {
				return nil, costs, fmt.Errorf("%s warm-up at concurrency %d: %w", sc.name, conc, err)
			}
			before, err := b.counters()
			if err != nil {
				return nil, costs, err
			}
			res, err := sc.t.run(ctx, conc, sc.bodies, sc.want)
			if err != nil {
				return nil, costs, fmt.Errorf("%s at concurrency %d: %w", sc.name, conc, err)
			}
			after, err := b.counters()
			if err != nil {
				return nil, costs, err
			}
			switch d := after.sub(before); sc.name {
			case scWarm:
				warmRequests += float64(len(sc.bodies))
				warmCost = warmCost.add(d)
			case scWarmSA:
				warmSARequests += float64(len(sc.bodies))
				warmSACost = warmSACost.add(d)
			}
			r := newRun(sc.name, conc, res)
			fmt.Fprintf(os.Stderr, ">> c=%-3d %-8s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms\n", conc, sc.name, r.Throughput, r.P50, r.P99)
			runs = append(runs, r)
		}
	}
	per1000 := func(v, n float64) float64 { return v * 1000 / n }
	costs.APIPer1000 = per1000(warmCost.api, warmRequests)
	costs.ExchangesPer1000 = per1000(warmCost.exchanges, warmRequests)
	costs.AssumePer1000 = per1000(warmCost.assumed, warmRequests)
	costs.SAAPIPer1000 = per1000(warmSACost.api, warmSARequests)
	costs.SAExchangesPer1000 = per1000(warmSACost.exchanges, warmSARequests)
	costs.SAAssumePer1000 = per1000(warmSACost.assumed, warmSARequests)
	return runs, costs, nil
}

func (c counters) add(o counters) counters {
	return counters{api: c.api + o.api, exchanges: c.exchanges + o.exchanges, assumed: c.assumed + o.assumed}
}

// checkTeamSecrets makes sure the per-ServiceAccount scenario is what it
// says: each namespace holds its ServiceAccount's Secret, labelled and
// annotated as one, minted as the team's role for the team's Artifactory
// user, and no Secret of the webhook's own identity for that instance.
func (b *bench) checkTeamSecrets(ctx context.Context, namespaces []string) error {
	for _, ns := range namespaces {
		s, err := b.secret(ctx, ns, teamSecret)
		if err != nil {
			return err
		}
		if s.Labels[pullsecret.LabelPerServiceAccount] != "true" || s.Annotations[pullsecret.AnnotationServiceAccount] != podSA ||
			s.Annotations[pullsecret.AnnotationIdentity] != "role:"+teamRole {
			return fmt.Errorf("Secret %s/%s is not %s's: labels %v, annotations %v", ns, teamSecret, podSA, s.Labels, s.Annotations)
		}
		user, _, err := pullsecret.ParseDockerConfigJSON(s.Data[corev1.DockerConfigJsonKey], teamHost)
		if err != nil || user != teamUser {
			return fmt.Errorf("Secret %s/%s: user %q (%v), want the role's user %q", ns, teamSecret, user, err, teamUser)
		}
		if _, err := b.kube.CoreV1().Secrets(ns).Get(ctx, teamSecretPrefix, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("namespace %s holds the webhook identity's Secret %s of the per-ServiceAccount instance (%v)", ns, teamSecretPrefix, err)
		}
	}
	return nil
}

// rotationResult counts what admitting pods over fresh namespaces costs
// Artifactory and the API server, first with no token (mint), then once the
// token must be replaced (rotation).
type rotationResult struct {
	Pods, Namespaces       int
	MintExchanges          int
	MintWritesPerNS        float64
	RotationExchanges      int
	RotationWritesPerNS    float64
	RotationWaited         time.Duration
	MintTook, RotationTook time.Duration
}

func (b *bench) rotation(ctx context.Context) (rotationResult, error) {
	r := rotationResult{Pods: b.o.rotPods, Namespaces: b.o.rotNS}
	conc := min(64, b.o.levels[len(b.o.levels)-1])
	ns, err := b.createNamespaces(ctx, "bench-rotate", r.Namespaces, nil)
	if err != nil {
		return r, err
	}
	rotCounters := func() (exchanges int, writes float64, err error) {
		writes, err = b.stack.Webhook.Metric("artifactory_pull_secret_writes_total", nil)
		return b.stack.Emu.Artifactory.Exchanges(), writes, err
	}
	phase := func(name string) (took time.Duration, err error) {
		bodies, err := b.reviews(r.Pods, func(i int) string { return ns[i%len(ns)] }, rotateHost)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		if _, err := b.hook.run(ctx, conc, bodies, want{patched: true}); err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		return time.Since(start), nil
	}
	fmt.Fprintf(os.Stderr, ">> rotation: %d pods over %d fresh namespaces, then again once the %s token is due\n", r.Pods, r.Namespaces, rotateTTL)
	ex0, w0, err := rotCounters()
	if err != nil {
		return r, err
	}
	minted := time.Now()
	if r.MintTook, err = phase("first mint"); err != nil {
		return r, err
	}
	ex1, w1, err := rotCounters()
	if err != nil {
		return r, err
	}
	r.MintExchanges, r.MintWritesPerNS = ex1-ex0, (w1-w0)/float64(len(ns))
	// The token (and the Secrets) are due once less than refreshFraction of
	// their life is left; a second of margin covers RFC 3339's whole seconds.
	// The rotation figures count everything from the end of the first mint:
	// the leader's refresher usually rotates the Secrets before the pods of
	// the second phase arrive, and those writes belong to the rotation.
	due := minted.Add(time.Duration(float64(rotateTTL)*(1-refreshFraction)) + time.Second)
	r.RotationWaited = time.Until(due)
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(r.RotationWaited):
	}
	if r.RotationTook, err = phase("rotation"); err != nil {
		return r, err
	}
	ex2, w2, err := rotCounters()
	if err != nil {
		return r, err
	}
	r.RotationExchanges, r.RotationWritesPerNS = ex2-ex1, (w2-w1)/float64(len(ns))
	// The namespaces opt out, so that their Secrets, rotated every few
	// seconds, are not written during the later scenarios.
	return r, b.optOut(ctx, ns, "artifactory-pull-rotate")
}

// optOut removes the opt-in label of namespaces and waits until the webhook
// has deleted their Secret named secret.
func (b *bench) optOut(ctx context.Context, namespaces []string, secret string) error {
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:null}}}`, harness.OptInLabel)
	if err := parallel(ctx, 32, len(namespaces), func(i int) error {
		_, err := b.kube.CoreV1().Namespaces().Patch(ctx, namespaces[i], types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("opting namespaces out: %w", err)
	}
	for _, ns := range namespaces {
		if err := poll(ctx, time.Minute, "the webhook to delete "+ns+"/"+secret, func() (bool, error) {
			_, err := b.kube.CoreV1().Secrets(ns).Get(ctx, secret, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return false, err
		}); err != nil {
			return err
		}
	}
	return nil
}

// memoryResult is the webhook's memory with its caches synced, before and
// after adding Namespaces managed namespaces (each with a managed Secret).
type memoryResult struct {
	Namespaces                        int
	BaselineRSS, RSS                  float64
	BaselineHeap, Heap                float64
	HeapMetric                        string
	RSSPerNamespace, HeapPerNamespace float64
	names                             []string // the managed namespaces, each with instance scale's Secret
}

func (b *bench) memory(ctx context.Context) (memoryResult, error) {
	m := memoryResult{Namespaces: b.o.namespaces}
	// The Secret every managed namespace gets: instance scale's, as the
	// webhook wrote it for a first pod.
	tmplNS, err := b.createNamespaces(ctx, "bench-scale-tmpl", 1, nil)
	if err != nil {
		return m, err
	}
	body, err := b.review(tmplNS[0], podJSON(scaleHost, tmplNS[0]), false)
	if err != nil {
		return m, err
	}
	if err := b.hook.post(ctx, body, want{patched: true, secret: scaleSecret}, true); err != nil {
		return m, err
	}
	tmpl, err := b.secret(ctx, tmplNS[0], scaleSecret)
	if err != nil {
		return m, err
	}
	fmt.Fprintln(os.Stderr, ">> memory: restarting the webhook for a baseline (instance rotate, opted out, no longer configured)")
	if b.rate, err = b.rateFor(m.Namespaces); err != nil { // the same rate for both starts
		return m, err
	}
	b.adjust = b.adjustFor(scaleTTL, false)
	if err := b.stack.StartWebhook(ctx, harness.PodIdentity, b.adjust); err != nil {
		return m, err
	}
	if m.BaselineRSS, m.BaselineHeap, m.HeapMetric, err = b.sampleMemory(ctx); err != nil {
		return m, err
	}
	fmt.Fprintf(os.Stderr, ">> memory: creating %d namespaces, each with a managed Secret\n", m.Namespaces)
	start := time.Now()
	if m.names, err = b.createNamespaces(ctx, "bench-mem", m.Namespaces, tmpl); err != nil {
		return m, err
	}
	m.names = append(m.names, tmplNS[0]) // every namespace with instance scale's Secret
	fmt.Fprintf(os.Stderr, ">> memory: created in %s; restarting the webhook to sync them\n", time.Since(start).Round(time.Second))
	if err := b.stack.StartWebhook(ctx, harness.PodIdentity, b.adjust); err != nil {
		return m, err
	}
	if m.RSS, m.Heap, _, err = b.sampleMemory(ctx); err != nil {
		return m, err
	}
	m.RSSPerNamespace = (m.RSS - m.BaselineRSS) / float64(m.Namespaces)
	m.HeapPerNamespace = (m.Heap - m.BaselineHeap) / float64(m.Namespaces)
	return m, nil
}

// sampleMemory reads the ready webhook's resident set and live heap three
// times a second apart and keeps the smallest of each: the start-up LIST
// leaves garbage that the runtime frees and returns over a few seconds.
func (b *bench) sampleMemory(ctx context.Context) (rss, heap float64, heapMetric string, err error) {
	heapMetric = "go_gc_heap_live_bytes" // live heap after the last GC
	for i := range 3 {
		if i > 0 {
			select {
			case <-ctx.Done():
				return 0, 0, "", ctx.Err()
			case <-time.After(time.Second):
			}
		}
		text, err := b.stack.Webhook.MetricsText()
		if err != nil {
			return 0, 0, "", err
		}
		r, err := harness.MetricValue(text, "process_resident_memory_bytes", nil)
		if err != nil {
			return 0, 0, "", err
		}
		h, err := harness.MetricValue(text, heapMetric, nil)
		if err != nil {
			return 0, 0, "", err
		}
		if r == 0 || h == 0 {
			return 0, 0, "", fmt.Errorf("the webhook's /metrics has no process_resident_memory_bytes or %s", heapMetric)
		}
		if i == 0 || r < rss {
			rss = r
		}
		if i == 0 || h < heap {
			heap = h
		}
	}
	return rss, heap, heapMetric, nil
}

// microResult is the handler micro-benchmark (webhook.BenchmarkHandleWarm).
type microResult struct {
	NsPerOp     float64
	BytesPerOp  float64
	AllocsPerOp float64
}

var benchLine = regexp.MustCompile(`BenchmarkHandleWarm\S*\s+\d+\s+([\d.]+) ns/op\s+(\d+) B/op\s+(\d+) allocs/op`)

// microBenchmark runs the handler's warm micro-benchmark (fakes for the
// cache and the Secret store) for its allocations per admission.
func microBenchmark(ctx context.Context, benchtime string) (microResult, error) {
	fmt.Fprintln(os.Stderr, ">> go test -bench BenchmarkHandleWarm ./webhook")
	cmd := exec.CommandContext(ctx, "go", "test", "-run=^$", "-bench=^BenchmarkHandleWarm$", "-benchmem",
		"-benchtime="+benchtime, "./webhook")
	cmd.Dir = harness.ModuleRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return microResult{}, fmt.Errorf("running the handler micro-benchmark: %w\n%s", err, out)
	}
	m := benchLine.FindSubmatch(out)
	if m == nil {
		return microResult{}, fmt.Errorf("no BenchmarkHandleWarm result in:\n%s", out)
	}
	var r microResult
	r.NsPerOp, _ = strconv.ParseFloat(string(m[1]), 64)
	r.BytesPerOp, _ = strconv.ParseFloat(string(m[2]), 64)
	r.AllocsPerOp, _ = strconv.ParseFloat(string(m[3]), 64)
	return r, nil
}
