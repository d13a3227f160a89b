package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/certs"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
)

// Hosts and names of the benchmark's configuration.
const (
	rotateHost      = "rotate.registry.test" // instance "rotate": short-lived tokens
	rotateTTL       = 20 * time.Second
	refreshFraction = 0.5 // refreshThreshold: rotate halfway through a token's life
	warmNamespaces  = 16
	mainSecret      = "artifactory-pull"

	// Instance "team" mints as the pod's ServiceAccount (identity
	// serviceAccount): the benchmark pod's ServiceAccount (podTemplate's
	// serviceAccountName) carries teamRole, which STS lets the
	// ServiceAccounts of the per-ServiceAccount namespaces assume and
	// Artifactory maps to teamUser. One role for all of them: they share its
	// token.
	teamHost         = "team.registry.test"
	teamSecretPrefix = "artifactory-pull-team"
	podSA            = "checkout"
	teamSecret       = teamSecretPrefix + "-" + podSA // <secretName>-<ServiceAccount>
	teamRole         = "arn:aws:iam::111122223333:role/bench-team-puller"
	teamUser         = "bench-team-puller"
	warmSAPrefix     = "bench-warm-sa"

	// Instance "scale": the Secret of the memory and rotation-at-scale
	// scenarios, with tokens that live scaleTTL; the rotation at scale
	// restarts the webhook with scaleRotatedTTL.
	scaleHost       = "scale.registry.test"
	scaleSecret     = "artifactory-pull-scale"
	scaleTTL        = time.Hour
	scaleRotatedTTL = 59 * time.Minute
)

// bench is the running stack, the webhook under test and the reference
// webhooks.
type bench struct {
	o       options
	dir     string
	stack   *harness.Stack
	kube    *kubernetes.Clientset // unthrottled, for setup
	adjust  func(*harness.WebhookOptions)
	ref     *exec.Cmd
	refDone chan struct{}
	raw     *target // TLS + HTTP only (rawHandler)
	floor   *target // plus controller-runtime's AdmissionReview envelope (floorHandler)
	decode  *target
	hook    *target
	host    string  // registry host of instance "main"
	rate    float64 // refresh.writesPerSecond of the next start
	seq     int     // AdmissionReview UIDs
	nsSeq   int
}

func newBench(ctx context.Context, o options) (_ *bench, err error) {
	dir, err := os.MkdirTemp("", "apw-bench-")
	if err != nil {
		return nil, err
	}
	b := &bench{o: o, dir: dir, rate: o.writesPerSecond}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	var logs io.Writer
	if o.verbose {
		logs = os.Stderr
	}
	say := func(s string) { fmt.Fprintln(os.Stderr, ">>", s) }
	if b.stack, err = harness.StartStack(ctx, harness.StackOptions{Dir: dir, Logs: logs, Progress: say}); err != nil {
		return nil, fmt.Errorf("starting the stack: %w", err)
	}
	b.host = b.stack.Emu.Registry.Host()
	// The per-ServiceAccount namespaces of warm-sa, and those of the
	// per-ServiceAccount memory figure.
	b.stack.Emu.STS.SetTrust(teamRole, "system:serviceaccount:"+warmSAPrefix+"-*:"+podSA,
		"system:serviceaccount:bench-mem-*:"+podSA, "system:serviceaccount:bench-scale-tmpl-*:"+podSA)
	b.stack.Emu.Artifactory.SetMapping(teamRole, teamUser)
	cfg := rest.CopyConfig(b.stack.Cluster.Config)
	cfg.QPS = -1 // setup creates thousands of objects: no client-side throttling
	if b.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	b.adjust = b.adjustFor(scaleTTL, true)
	say("starting the webhook")
	if err = b.stack.StartWebhook(ctx, harness.PodIdentity, b.adjust); err != nil {
		return nil, fmt.Errorf("starting the webhook: %w", err)
	}
	maxConc := 1
	for _, l := range o.levels {
		maxConc = max(maxConc, l)
	}
	if b.hook, err = newTarget(b.stack.Webhook.URL(), b.stack.Webhook.CABundle, maxConc); err != nil {
		return nil, err
	}
	say("starting the reference webhooks (raw, floor, decode)")
	if err = b.startReference(ctx, maxConc); err != nil {
		return nil, err
	}
	return b, nil
}

// config is the stack's configuration: instance main; instance rotate,
// whose tokens live 20 s, so that a rotation happens within the run
// (backoffCap must stay below the 10 s left to refresh them); instance
// team, which mints as the pod's ServiceAccount (fallback none: a pod whose
// ServiceAccount names no role gets no Secret, so a scenario that fell back
// could not pass); and instance scale, whose Secret the memory and
// rotation-at-scale scenarios put in thousands of namespaces. scaleTTL is
// scale's tokenTTL: changing it changes the instance's fingerprint, which
// makes every one of its Secrets due at once. Instance rotate is left out
// (withRotate false) once its scenario is over: the webhook refuses to
// start when its Secrets cannot all be rewritten within a quarter of the
// smallest refresh window, rotate's 10 s.
func (b *bench) config(scaleTTL time.Duration, withRotate bool) string {
	s := b.stack
	rotate := ""
	if withRotate {
		rotate = fmt.Sprintf(`- name: rotate
  url: %[1]s
  registryHosts: [%[2]q]
  tokenTTL: %[3]s
  caBundle: %[4]s
  secretName: artifactory-pull-rotate
`, s.Emu.Artifactory.URL(), rotateHost, rotateTTL, filepath.Join(s.Dir, "artifactory-ca.pem"))
	}
	return fmt.Sprintf(`instances:
- name: main
  url: %[1]s
  registryHosts: [%[2]q]
  tokenTTL: 1h
  caBundle: %[3]s
%[4]s- name: team
  url: %[1]s
  registryHosts: [%[8]q]
  tokenTTL: 1h
  caBundle: %[3]s
  secretName: %[9]s
  identity: serviceAccount
- name: scale
  url: %[1]s
  registryHosts: [%[10]q]
  tokenTTL: %[11]s
  caBundle: %[3]s
  secretName: %[12]s
aws:
  authType: podIdentity
  stsEndpoint: %[6]s
refreshThreshold: %[7]v
refresh:
  writesPerSecond: %[5]v
backoffCap: 5s
requestTimeout: 5s
provisionOnOptIn: false
`, s.Emu.Artifactory.URL(), b.host, filepath.Join(s.Dir, "artifactory-ca.pem"), rotate, b.rate,
		s.Emu.STS.URL(), refreshFraction, teamHost, teamSecretPrefix, scaleHost, scaleTTL, scaleSecret)
}

// adjustFor runs the webhook with config(scaleTTL, withRotate): one
// replica, refreshing without a Lease (Lease renewals would otherwise show
// up as API requests during the warm runs, which count only what
// admissions cost).
func (b *bench) adjustFor(scaleTTL time.Duration, withRotate bool) func(*harness.WebhookOptions) {
	conf := b.config(scaleTTL, withRotate)
	return func(w *harness.WebhookOptions) {
		w.Config = conf
		w.Args = append(w.Args, "--leader-elect=false")
	}
}

// startReference runs this program again as the reference webhooks'
// server and waits until it answers.
func (b *bench) startReference(ctx context.Context, maxConc int) error {
	bundle, err := certs.Generate([]string{"127.0.0.1"}, 24*time.Hour)
	if err != nil {
		return err
	}
	certDir := filepath.Join(b.dir, "reference-certs")
	if err := bundle.WriteDir(certDir); err != nil {
		return err
	}
	addr, err := harness.FreeAddr()
	if err != nil {
		return err
	}
	_, port, _ := strings.Cut(addr, ":")
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b.ref = exec.Command(self, "-serve-reference="+port, "-cert-dir="+certDir)
	b.ref.Stdout, b.ref.Stderr = os.Stderr, os.Stderr
	if err := b.ref.Start(); err != nil {
		return fmt.Errorf("starting the reference webhooks: %w", err)
	}
	b.refDone = make(chan struct{})
	go func() { _ = b.ref.Wait(); close(b.refDone) }()
	if b.raw, err = newTarget("https://"+addr+rawPath, bundle.CACert, maxConc); err != nil {
		return err
	}
	if b.floor, err = newTarget("https://"+addr+floorPath, bundle.CACert, maxConc); err != nil {
		return err
	}
	if b.decode, err = newTarget("https://"+addr+decodePath, bundle.CACert, maxConc); err != nil {
		return err
	}
	body, err := b.review("bench-ref", podJSON(b.host, "bench-ref"), false)
	if err != nil {
		return err
	}
	return poll(ctx, 30*time.Second, "the reference webhooks to answer", func() (bool, error) {
		select {
		case <-b.refDone:
			return false, errors.New("the reference webhook process exited")
		default:
		}
		return b.floor.post(ctx, body, want{}, true) == nil && b.raw.post(ctx, body, want{}, true) == nil, nil
	})
}

func (b *bench) close() {
	if b.ref != nil && b.ref.Process != nil {
		_ = b.ref.Process.Signal(os.Interrupt)
		select {
		case <-b.refDone:
		case <-time.After(5 * time.Second):
			_ = b.ref.Process.Kill()
		}
	}
	if b.stack != nil {
		b.stack.Close()
	}
	_ = os.RemoveAll(b.dir)
}

// review builds the next AdmissionReview for pod in namespace.
func (b *bench) review(namespace string, pod []byte, dryRun bool) ([]byte, error) {
	b.seq++
	return review(b.seq, namespace, pod, dryRun)
}

// reviews builds n reviews; namespace(i) and pod(namespace) pick each one's
// namespace and pod.
func (b *bench) reviews(n int, namespace func(i int) string, host string) ([][]byte, error) {
	out := make([][]byte, n)
	for i := range out {
		ns := namespace(i)
		var err error
		if out[i], err = b.review(ns, podJSON(host, ns), false); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// createNamespaces creates opted-in namespaces named prefix-0..n-1 with 32
// parallel writers; secret, when set, is copied into each. It returns once
// the webhook's namespace cache holds them all (see waitCached).
func (b *bench) createNamespaces(ctx context.Context, prefix string, n int, secret *corev1.Secret) ([]string, error) {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	err := parallel(ctx, 32, n, func(i int) error {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: names[i], Labels: map[string]string{harness.OptInLabel: "enabled"}}}
		if _, err := b.kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating namespace %s: %w", names[i], err)
		}
		if secret == nil {
			return nil
		}
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: secret.Name, Namespace: names[i], Labels: secret.Labels, Annotations: secret.Annotations},
			Type:       secret.Type, Data: secret.Data,
		}
		if _, err := b.kube.CoreV1().Secrets(names[i]).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating Secret %s/%s: %w", names[i], s.Name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return names, b.waitCached(ctx, prefix)
}

// createServiceAccounts creates ServiceAccount name, with annotations, in
// each of namespaces.
func (b *bench) createServiceAccounts(ctx context.Context, namespaces []string, name string, annotations map[string]string) error {
	return parallel(ctx, 32, len(namespaces), func(i int) error {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespaces[i], Annotations: annotations}}
		if _, err := b.kube.CoreV1().ServiceAccounts(namespaces[i]).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating ServiceAccount %s/%s: %w", namespaces[i], name, err)
		}
		return nil
	})
}

// waitCached returns once the webhook's informer has seen every namespace
// created so far: it creates a sentinel namespace after them (so with a
// later resourceVersion) and dry-runs reviews in it until one costs no API
// request, i.e. the namespace came from the cache.
func (b *bench) waitCached(ctx context.Context, prefix string) error {
	b.nsSeq++
	name := fmt.Sprintf("%s-sentinel-%d", prefix, b.nsSeq)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := b.kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	body, err := b.review(name, podJSON(b.host, name), true)
	if err != nil {
		return err
	}
	return poll(ctx, 2*time.Minute, "the webhook's cache to hold namespace "+name, func() (bool, error) {
		before, err := b.apiRequests()
		if err != nil {
			return false, err
		}
		if err := b.hook.post(ctx, body, want{}, true); err != nil {
			return false, err
		}
		after, err := b.apiRequests()
		return after == before, err
	})
}

// apiRequests is the number of Kubernetes API requests the webhook process
// has made, as counted by client-go's transport (rest_client_requests_total).
func (b *bench) apiRequests() (float64, error) {
	return b.stack.Webhook.Metric("rest_client_requests_total", nil)
}

// parallel runs fn(0..n-1) on workers goroutines and returns the first error.
func parallel(ctx context.Context, workers, n int, fn func(i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idx := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range workers {
		wg.Go(func() {
			for i := range idx {
				if err := fn(i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case idx <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(idx)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// poll calls cond every 100 ms until it is true, fails, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: still not done after %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// secret reads a managed Secret the webhook wrote.
func (b *bench) secret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	s, err := b.kube.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("the webhook wrote no Secret %s/%s", namespace, name)
	}
	return s, err
}
