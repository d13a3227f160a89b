package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
)

// report is everything one benchmark run measured.
type report struct {
	Options  options
	Runs     []scenarioRun
	Warm     warmCosts
	Rotation rotationResult
	Memory   memoryResult
	Scale    scaleResult
	MemorySA memorySAResult
	Micro    microResult
	Took     time.Duration
}

// find returns the run of scenario at conc.
func (r *report) find(scenario string, conc int) (scenarioRun, bool) {
	for _, x := range r.Runs {
		if x.Scenario == scenario && x.Concurrency == conc {
			return x, true
		}
	}
	return scenarioRun{}, false
}

// ratios returns scenario's p99 and throughput as ratios to the envelope
// floor's at conc (NaN when either run is missing).
func (r *report) ratios(scenario string, conc int) (p99, throughput float64) {
	return r.ratiosTo(scFloor, scenario, conc)
}

// ratiosTo returns scenario's p99 and throughput as ratios to those of floor
// (scFloor or scRaw) at conc.
func (r *report) ratiosTo(floor, scenario string, conc int) (p99, throughput float64) {
	s, ok1 := r.find(scenario, conc)
	f, ok2 := r.find(floor, conc)
	if !ok1 || !ok2 {
		return math.NaN(), math.NaN()
	}
	return s.P99 / f.P99, s.Throughput / f.Throughput
}

// budgetLevel is the level the budgets are read at: the configured one, or
// the highest level measured when it was not.
func (r *report) budgetLevel() int {
	for _, l := range r.Options.levels {
		if l == r.Options.budgetLevel {
			return l
		}
	}
	return r.Options.levels[len(r.Options.levels)-1]
}

// figures are the headline numbers, keyed as in latest.json.
func (r *report) figures() map[string]float64 {
	c := r.budgetLevel()
	warmP99, warmTP := r.ratios(scWarm, c)
	warmSAP99, warmSATP := r.ratios(scWarmSA, c)
	noMatchP99, noMatchTP := r.ratios(scNoMatch, c)
	coldP99, coldTP := r.ratios(scCold, c)
	_, decodeTP := r.ratios(scDecode, c)
	warmRawP99, warmRawTP := r.ratiosTo(scRaw, scWarm, c)
	floorRawP99, floorRawTP := r.ratiosTo(scRaw, scFloor, c)
	return map[string]float64{
		"warm_raw_p99_ratio":                    warmRawP99,
		"warm_raw_throughput_ratio":             warmRawTP,
		"floor_raw_p99_ratio":                   floorRawP99,
		"floor_raw_throughput_ratio":            floorRawTP,
		"warm_p99_ratio":                        warmP99,
		"warm_throughput_ratio":                 warmTP,
		"warm_sa_p99_ratio":                     warmSAP99,
		"warm_sa_throughput_ratio":              warmSATP,
		"nomatch_p99_ratio":                     noMatchP99,
		"nomatch_throughput_ratio":              noMatchTP,
		"cold_p99_ratio":                        coldP99,
		"cold_throughput_ratio":                 coldTP,
		"decode_throughput_ratio":               decodeTP,
		"api_requests_per_1000_warm":            r.Warm.APIPer1000,
		"exchanges_per_1000_warm":               r.Warm.ExchangesPer1000,
		"api_requests_per_1000_warm_sa":         r.Warm.SAAPIPer1000,
		"exchanges_per_1000_warm_sa":            r.Warm.SAExchangesPer1000,
		"role_assumptions_per_1000_warm_sa":     r.Warm.SAAssumePer1000,
		"warm_sa_prime_service_accounts":        float64(r.Warm.SAPrime.ServiceAccounts),
		"warm_sa_prime_api_requests":            r.Warm.SAPrime.APIRequests,
		"warm_sa_prime_exchanges":               r.Warm.SAPrime.Exchanges,
		"warm_sa_prime_role_assumptions":        r.Warm.SAPrime.Assumed,
		"exchanges_1000_pods_100_ns":            float64(r.Rotation.MintExchanges),
		"exchanges_per_rotation":                float64(r.Rotation.RotationExchanges),
		"secret_writes_per_ns_first_mint":       r.Rotation.MintWritesPerNS,
		"secret_writes_per_ns_per_rotation":     r.Rotation.RotationWritesPerNS,
		"rss_bytes_per_managed_ns":              r.Memory.RSSPerNamespace,
		"heap_bytes_per_managed_ns":             r.Memory.HeapPerNamespace,
		"allocs_per_warm_admission":             r.Micro.AllocsPerOp,
		"handler_ns_per_warm_admission":         r.Micro.NsPerOp,
		"rss_bytes_per_managed_sa_secret":       r.MemorySA.RSSPerSecret,
		"heap_bytes_per_managed_sa_secret":      r.MemorySA.HeapPerSecret,
		"rotation_secrets":                      float64(r.Scale.Secrets),
		"rotation_seconds_10k":                  r.Scale.Took.Seconds(),
		"rotation_window_seconds":               r.Scale.Window.Seconds(),
		"rotation_window_fraction":              r.Scale.Took.Seconds() / r.Scale.Window.Seconds(),
		"rotation_projected_seconds":            r.Scale.Projected,
		"rotation_configured_writes_per_second": r.Scale.WritesPerSecond,
		"rotation_peak_writes_per_second":       r.Scale.PeakWrites,
		"rotation_secret_writes_per_secret":     r.Scale.WritesPerSecret,
		"rotation_admission_p99_ratio":          ratio(r.Scale.During, r.Scale.After),
		"rotation_gcs_during":                   r.Scale.GCsDuring,
		"rotation_gcs_after":                    r.Scale.GCsAfter,
		"rotation_admission_p99_ms":             ms(r.Scale.During.percentile(0.99)),
		"outside_rotation_admission_p99_ms":     ms(r.Scale.After.percentile(0.99)),
		"budget_concurrency":                    float64(c),
		"managed_namespaces":                    float64(r.Memory.Namespaces),
	}
}

// budget is one line of the budget table; ok judges a figure,
// given all of them.
type budget struct {
	figure, key string
	ok          func(v float64, f map[string]float64) bool
	limit       string
	format      string
}

func atMost(limit float64) func(float64, map[string]float64) bool {
	return func(v float64, _ map[string]float64) bool { return v <= limit }
}

func atLeast(limit float64) func(float64, map[string]float64) bool {
	return func(v float64, _ map[string]float64) bool { return v >= limit }
}

var budgets = []budget{
	{"warm throughput / floor throughput", "warm_throughput_ratio", atLeast(0.95), "≥ 0.95", "%.2f"},
	{"warm p99 / floor p99", "warm_p99_ratio", atMost(1.1), "≤ 1.1", "%.2f"},
	{"no-match p99 / floor p99", "nomatch_p99_ratio", atMost(1.0), "≤ 1.0", "%.2f"},
	{"warm-sa (per-ServiceAccount) p99 / floor p99", "warm_sa_p99_ratio", atMost(1.5), "≤ 1.5", "%.2f"},
	{"warm-sa throughput / floor throughput", "warm_sa_throughput_ratio", atLeast(0.75), "≥ 0.75", "%.2f"},
	{"API requests per 1,000 warm admissions", "api_requests_per_1000_warm", atMost(0), "0", "%.1f"},
	{"API requests per 1,000 warm-sa admissions", "api_requests_per_1000_warm_sa", atMost(0), "0", "%.1f"},
	{"token exchanges per 1,000 warm-sa admissions", "exchanges_per_1000_warm_sa", atMost(0), "0", "%.1f"},
	{"exchanges, pods over fresh namespaces, 1 identity", "exchanges_1000_pods_100_ns", func(v float64, _ map[string]float64) bool { return v == 1 }, "1", "%.0f"},
	{"exchanges per rotation (same pods again)", "exchanges_per_rotation", func(v float64, _ map[string]float64) bool { return v == 1 }, "1", "%.0f"},
	{"Secret writes per namespace per rotation", "secret_writes_per_ns_per_rotation", atMost(1), "≤ 1", "%.2f"},
	{"RSS per managed namespace (one Secret each)", "rss_bytes_per_managed_ns", atMost(2048), "≤ 2 KiB", "%.0f B"},
	{"RSS per Secret of a ServiceAccount (per-ServiceAccount mode)", "rss_bytes_per_managed_sa_secret", nil, "report", "%.0f B"},
	{"rotation at scale: duration / refresh window", "rotation_window_fraction", atMost(0.25), "≤ 0.25", "%.3f"},
	{"rotation at scale: peak Secret writes/s (API server)", "rotation_peak_writes_per_second", func(v float64, f map[string]float64) bool {
		return v <= 1.1*f["rotation_configured_writes_per_second"]
	}, "≤ 1.1 × configured", "%.1f"},
	{"rotation at scale: Secret writes per Secret", "rotation_secret_writes_per_secret", atMost(1), "≤ 1", "%.3f"},
	{"rotation at scale: admission p99 during / outside", "rotation_admission_p99_ratio", atMost(1.2), "≤ 1.2", "%.2f"},
	{"allocations per warm admission (micro-benchmark)", "allocs_per_warm_admission", atMost(30), "≤ 30", "%.0f"},
}

func (r *report) print(w io.Writer) {
	m := machine()
	fmt.Fprintf(w, "\n## Benchmark — %s, %s, %d CPUs, %s (took %s)\n\n", m["date"], m["cpu"], runtime.NumCPU(), m["go"], r.Took.Round(time.Second))
	fmt.Fprintf(w, "%d AdmissionReviews (pod of %d bytes) per scenario and concurrency, HTTP/1.1 keep-alive over TLS.\n\n", r.Options.count, len(podJSON("artifactory.example.com", "bench-warm-0")))
	fmt.Fprintln(w, "Floors: raw is TLS + HTTP alone (the body read, a fixed answer); floor adds controller-runtime's AdmissionReview envelope.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | concurrency | req/s | p50 ms | p99 ms | p99.9 ms | throughput / floor | p99 / floor | throughput / raw | p99 / raw |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, x := range r.Runs {
		p99, tp := r.ratios(x.Scenario, x.Concurrency)
		rawP99, rawTP := r.ratiosTo(scRaw, x.Scenario, x.Concurrency)
		fmt.Fprintf(w, "| %s | %d | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", x.Scenario, x.Concurrency, x.Throughput, x.P50, x.P99, x.P999, tp, p99, rawTP, rawP99)
	}
	f := r.figures()
	fmt.Fprintf(w, "\nBudgets (ratios at concurrency %d; pods over fresh namespaces: %d pods over %d; memory: %d managed namespaces):\n\n",
		r.budgetLevel(), r.Rotation.Pods, r.Rotation.Namespaces, r.Memory.Namespaces)
	fmt.Fprintln(w, "| figure | measured | budget | |")
	fmt.Fprintln(w, "|---|---:|---|---|")
	for _, b := range budgets {
		v := f[b.key]
		mark := ""
		if b.ok != nil {
			mark = "✗"
			if b.ok(v, f) {
				mark = "✓"
			}
		}
		fmt.Fprintf(w, "| %s | "+b.format+" | %s | %s |\n", b.figure, v, b.limit, mark)
	}
	fmt.Fprintf(w, "\nAlso: decode reference throughput / floor %.2f; cold p99 / floor %.2f; Secret writes per fresh namespace %.2f; "+
		"live heap per managed namespace %.0f B (%s); RSS %.1f → %.1f MiB, live heap %.1f → %.1f MiB; handler %.1f µs, %.0f B per warm admission.\n",
		f["decode_throughput_ratio"], f["cold_p99_ratio"], f["secret_writes_per_ns_first_mint"], f["heap_bytes_per_managed_ns"], r.Memory.HeapMetric,
		r.Memory.BaselineRSS/(1<<20), r.Memory.RSS/(1<<20), r.Memory.BaselineHeap/(1<<20), r.Memory.Heap/(1<<20),
		r.Micro.NsPerOp/1000, r.Micro.BytesPerOp)
	sc := r.Scale
	fmt.Fprintf(w, "\nRotation at scale: %d managed Secrets due at once (the webhook restarted with their instance's tokenTTL changed), rewritten in %.1f s "+
		"from its readiness to the API server's count of a write each (it projected %.0f s) at refresh.writesPerSecond %v: %.3f of the new token's %s refresh window; the API server's peak was %.1f Secret writes/s; "+
		"%.3f writes per Secret. Warm admissions offered at %d/s: p99 %.2f ms during the rotation (%d admissions, from %s after the start; %.0f garbage collections), %.2f ms after it (%d; %.0f).\n",
		sc.Secrets, sc.Took.Seconds(), sc.Projected, sc.WritesPerSecond, f["rotation_window_fraction"], sc.Window, sc.PeakWrites,
		sc.WritesPerSecret, r.Options.admissionRate, f["rotation_admission_p99_ms"], len(sc.During.Latencies), r.Options.rotationSettle, sc.GCsDuring,
		f["outside_rotation_admission_p99_ms"], len(sc.After.Latencies), sc.GCsAfter)
	ms := r.MemorySA
	fmt.Fprintf(w, "\nPer-ServiceAccount memory: %d more Secrets of an identity serviceAccount instance, one per namespace, each with its "+
		"ServiceAccount naming a role: RSS %.0f B and live heap %.0f B per Secret (ServiceAccount cache entry and proof included); "+
		"the restarted webhook proved %.0f ServiceAccounts and wrote %.0f Secrets (it started at refresh.writesPerSecond %v).\n",
		ms.Secrets, ms.RSSPerSecret, ms.HeapPerSecret, ms.Proofs, ms.Writes, ms.Rate)
	p := r.Warm.SAPrime
	fmt.Fprintf(w, "\nPer-ServiceAccount (warm-sa: an instance with identity serviceAccount; pods of ServiceAccount %s, annotated with one role, "+
		"over %d opted-in namespaces): per 1,000 warm admissions %.1f API requests, %.1f exchanges, %.1f sts:AssumeRoleWithWebIdentity "+
		"(warm: %.1f API requests, %.1f exchanges); the first admission of each of the %d ServiceAccounts (TokenRequest, role assumption, "+
		"Secret write) cost %.0f API requests, %.0f exchange(s) and %.0f role assumptions in all.\n",
		podSA, p.ServiceAccounts, f["api_requests_per_1000_warm_sa"], f["exchanges_per_1000_warm_sa"], f["role_assumptions_per_1000_warm_sa"],
		f["api_requests_per_1000_warm"], f["exchanges_per_1000_warm"], p.ServiceAccounts, p.APIRequests, p.Exchanges, p.Assumed)
}

// ratio is a's p99 over b's (NaN when either has no latency).
func ratio(a, b runResult) float64 {
	if len(a.Latencies) == 0 || len(b.Latencies) == 0 {
		return math.NaN()
	}
	return float64(a.percentile(0.99)) / float64(b.percentile(0.99))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// write stores the figures, the runs and the machine as JSON at path
// (relative to the module root).
func (r *report) write(path string) error {
	if !filepath.IsAbs(path) {
		path = filepath.Join(harness.ModuleRoot(), path)
	}
	doc := map[string]any{"machine": machine(), "runs": r.Runs, "took_s": r.Took.Seconds()}
	for k, v := range r.figures() {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue // JSON has no NaN; a missing key says "not measured"
		}
		doc[k] = v
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	fmt.Fprintln(os.Stderr, ">> wrote", path)
	return nil
}

// machine describes where the run happened: absolute times only mean
// something beside it.
func machine() map[string]string {
	m := map[string]string{
		"date": time.Now().UTC().Format("2006-01-02"), "goos": runtime.GOOS, "goarch": runtime.GOARCH,
		"cpus": fmt.Sprint(runtime.NumCPU()), "go": runtime.Version(), "cpu": "unknown CPU",
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	return m
}
