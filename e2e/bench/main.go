// Command bench measures the webhook against the cheapest webhook possible on
// the same stack (the floor), and counts what it costs the API server,
// Artifactory and memory. `make bench` runs it in full; `make bench-smoke`
// runs a seconds-long version that checks every scenario still works and
// asserts no timing.
//
// Everything runs locally: envtest's kube-apiserver and etcd, the emulators
// and the real webhook binary (e2e/harness). The benchmark plays the API
// server: it posts AdmissionReviews over TLS straight to /mutate.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

type options struct {
	count       int   // requests per scenario and concurrency level
	levels      []int // concurrency levels
	budgetLevel int   // the level the ratio budgets are read at
	namespaces  int   // managed namespaces for the memory figure
	rotPods     int   // pods per rotation phase
	rotNS       int   // fresh namespaces per rotation phase
	microTime   string
	// writesPerSecond is the webhook's refresh.writesPerSecond.
	writesPerSecond float64
	// admissionRate is the rate of warm admissions offered during and after
	// the rotation at scale (per second).
	admissionRate int
	// rotationSettle is how long after the restart of the rotation at scale
	// the admissions during it start to count.
	rotationSettle time.Duration
	out            string
	verbose        bool
}

func main() {
	var o options
	var levels string
	smoke := flag.Bool("smoke", false, "a seconds-long run that checks every scenario works (small counts; timings are not judged)")
	serve := flag.String("serve-reference", "", "internal: serve the raw, floor and decode webhooks on 127.0.0.1:`PORT`")
	certDir := flag.String("cert-dir", "", "internal: certificate directory of -serve-reference")
	flag.IntVar(&o.count, "n", 2000, "requests per scenario and concurrency level")
	flag.StringVar(&levels, "concurrency", "1,16,64,256", "comma-separated concurrency levels")
	flag.IntVar(&o.budgetLevel, "budget-concurrency", 64, "concurrency level the ratio budgets are read at")
	flag.IntVar(&o.namespaces, "namespaces", 10000, "managed namespaces (each with a managed Secret) for the memory and rotation-at-scale figures")
	flag.IntVar(&o.rotPods, "rotation-pods", 1000, "pods admitted per rotation phase")
	flag.IntVar(&o.rotNS, "rotation-namespaces", 100, "fresh namespaces the rotation pods are spread over")
	flag.Float64Var(&o.writesPerSecond, "writes-per-second", 50, "the webhook's refresh.writesPerSecond")
	flag.IntVar(&o.admissionRate, "rotation-admission-rate", 100, "warm admissions per second offered during and after the rotation at scale")
	flag.DurationVar(&o.rotationSettle, "rotation-settle", 10*time.Second, "time after the restart of the rotation at scale before admissions during it count")
	flag.StringVar(&o.microTime, "micro-benchtime", "3000x", "-benchtime of the handler micro-benchmark")
	flag.StringVar(&o.out, "out", "bench/results/latest.json", "JSON results file, relative to the module root")
	flag.BoolVar(&o.verbose, "v", false, "print the webhook's logs")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *serve != "" {
		ctrllog.SetLogger(logr.Discard())
		port, err := strconv.Atoi(*serve)
		if err == nil {
			err = serveReference(ctx, port, *certDir)
		}
		exitOn(err)
		return
	}
	if *smoke {
		o.count, levels, o.budgetLevel, o.namespaces = 100, "1,16", 16, 200
		o.rotPods, o.rotNS, o.microTime, o.rotationSettle = 100, 10, "100x", time.Second
		if !isFlagSet("out") {
			o.out = "bench/results/smoke.json"
		}
	}
	var err error
	if o.levels, err = parseLevels(levels); err != nil {
		exitOn(err)
	}
	if !(o.writesPerSecond > 0 && o.writesPerSecond <= 10000) || o.admissionRate <= 0 || o.admissionRate > 10000 {
		exitOn(fmt.Errorf("-writes-per-second and -rotation-admission-rate must be in (0, 10000], got %v and %d", o.writesPerSecond, o.admissionRate))
	}
	exitOn(run(ctx, o))
}

func run(ctx context.Context, o options) error {
	start := time.Now()
	b, err := newBench(ctx, o)
	if err != nil {
		return err
	}
	defer b.close()
	var r report
	r.Options = o
	if r.Runs, r.Warm, err = b.latency(ctx); err != nil {
		return err
	}
	if r.Rotation, err = b.rotation(ctx); err != nil {
		return err
	}
	if r.Memory, err = b.memory(ctx); err != nil {
		return err
	}
	if r.Scale, err = b.rotationAtScale(ctx, r.Memory.names); err != nil {
		return err
	}
	if r.MemorySA, err = b.memorySA(ctx, r.Memory.names, r.Memory); err != nil {
		return err
	}
	if r.Micro, err = microBenchmark(ctx, o.microTime); err != nil {
		return err
	}
	r.Took = time.Since(start)
	r.print(os.Stdout)
	return r.write(o.out)
}

func parseLevels(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-concurrency: %q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func isFlagSet(name string) (set bool) {
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func exitOn(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
