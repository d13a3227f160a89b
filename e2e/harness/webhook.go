package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/certs"
)

// BuildWebhook builds the webhook binary into dir and returns its path.
func BuildWebhook(dir string) (string, error) {
	out := filepath.Join(dir, "artifactory-pull-webhook")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/artifactory-pull-webhook")
	cmd.Dir = ModuleRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the webhook: %w\n%s", err, b)
	}
	return out, nil
}

// WebhookOptions configure one webhook process.
type WebhookOptions struct {
	Binary     string
	Dir        string // working dir for config and certs
	Kubeconfig string
	Config     string   // YAML configuration
	Env        []string // extra environment, e.g. AWS_ROLE_ARN=...
	Addr       string   // 127.0.0.1:port to listen on; empty picks one
	Certs      *certs.Bundle
	Stdout     io.Writer // optional copy of the process's logs
	Args       []string  // extra flags
}

// Webhook is a running webhook process.
type Webhook struct {
	Addr        string
	MetricsAddr string
	HealthAddr  string
	CABundle    []byte
	cmd         *exec.Cmd
	logs        *syncBuffer
	done        chan struct{}
}

// URL is the /mutate URL the API server calls.
func (w *Webhook) URL() string { return "https://" + w.Addr + "/mutate" }

// StartWebhook starts the binary and waits until /readyz passes. The
// ports it picks for metrics and health (and listening, when o.Addr is
// empty) are free when picked but may be taken before the process binds
// them: a start that fails that way is tried again on new ports.
func StartWebhook(ctx context.Context, o WebhookOptions) (*Webhook, error) {
	for attempt := 1; ; attempt++ {
		w, err := startWebhook(ctx, o)
		if err == nil || !errors.Is(err, errAddrInUse) || attempt == 3 {
			return w, err
		}
	}
}

// errAddrInUse marks a start that lost a picked port to another process.
var errAddrInUse = errors.New("a picked port was taken before the webhook bound it")

func startWebhook(ctx context.Context, o WebhookOptions) (*Webhook, error) {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	addr := o.Addr
	var err error
	if addr == "" {
		if addr, err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	metricsAddr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	healthAddr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	b := o.Certs
	if b == nil {
		if b, err = certs.Generate([]string{"127.0.0.1", "localhost"}, 24*time.Hour); err != nil {
			return nil, err
		}
	}
	certDir := filepath.Join(o.Dir, "certs")
	if err := b.WriteDir(certDir); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(o.Dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(o.Config), 0o600); err != nil {
		return nil, err
	}
	w := &Webhook{Addr: addr, MetricsAddr: metricsAddr, HealthAddr: healthAddr, CABundle: b.CACert,
		logs: &syncBuffer{}, done: make(chan struct{})}
	w.cmd = exec.Command(o.Binary,
		"--config="+cfgPath, "--kubeconfig="+o.Kubeconfig, "--cert-dir="+certDir,
		"--listen-addr="+addr, "--metrics-addr="+metricsAddr, "--health-addr="+healthAddr)
	w.cmd.Args = append(w.cmd.Args, o.Args...)
	// A clean environment: only what the test gives (and PATH/HOME), so the
	// webhook's AWS identity is exactly the one under test.
	w.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + o.Dir}, o.Env...)
	var out io.Writer = w.logs
	if o.Stdout != nil {
		out = io.MultiWriter(w.logs, o.Stdout)
	}
	w.cmd.Stdout, w.cmd.Stderr = out, out
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the webhook: %w", err)
	}
	go func() { _ = w.cmd.Wait(); close(w.done) }()
	if err := w.waitReady(ctx, 60*time.Second); err != nil {
		w.Stop()
		return nil, fmt.Errorf("%w\nwebhook logs:\n%s", err, w.Logs())
	}
	return w, nil
}

func (w *Webhook) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-w.done:
			if strings.Contains(w.Logs(), "address already in use") {
				return fmt.Errorf("webhook exited before it was ready: %w", errAddrInUse)
			}
			return fmt.Errorf("webhook exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := http.Get("http://" + w.HealthAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("webhook not ready after %s", timeout)
}

// Stop ends the process and waits for it.
func (w *Webhook) Stop() {
	if w.cmd.Process == nil {
		return
	}
	_ = w.cmd.Process.Signal(os.Interrupt)
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.done
	}
}

// Logs returns everything the process printed so far.
func (w *Webhook) Logs() string { return w.logs.String() }

// TLSClient trusts the webhook's CA.
func (w *Webhook) TLSClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(w.CABundle)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// MetricsText scrapes /metrics.
func (w *Webhook) MetricsText() (string, error) {
	resp, err := http.Get("http://" + w.MetricsAddr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Metric returns the sum of the samples of a metric whose labels include
// the given ones (0 when absent).
func (w *Webhook) Metric(name string, labels map[string]string) (float64, error) {
	text, err := w.MetricsText()
	if err != nil {
		return 0, err
	}
	return MetricValue(text, name, labels)
}

// MetricValue reads a counter or gauge from Prometheus text exposition.
func MetricValue(text, name string, labels map[string]string) (float64, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return 0, err
	}
	mf, ok := families[name]
	if !ok {
		return 0, nil
	}
	var sum float64
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Summary != nil: // its count
			sum += float64(m.GetSummary().GetSampleCount())
		}
	}
	return sum, nil
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
