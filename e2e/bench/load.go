package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
)

// target is one webhook endpoint and the connections to it.
type target struct {
	url    string
	client *http.Client
}

// newTarget returns a target whose client trusts caPEM and keeps one
// HTTP/1.1 connection per concurrent worker, so that TLS handshakes happen
// in the warm-up and not in the measurement.
func newTarget(url string, caPEM []byte, maxConc int) (*target, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in the CA bundle of %s", url)
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConns:        maxConc,
		MaxIdleConnsPerHost: maxConc,
		IdleConnTimeout:     time.Minute,
	}
	return &target{url: url, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

// want is what every answer of a run must say.
type want struct {
	patched bool   // a JSON patch is expected
	secret  string // when set, the patch must add this pull Secret (checked on fully decoded answers)
}

// runResult is one measured run: n requests at a fixed concurrency.
type runResult struct {
	Latencies []time.Duration
	Wall      time.Duration
}

func (r runResult) throughput() float64 { return float64(len(r.Latencies)) / r.Wall.Seconds() }

// percentile returns the q-quantile (0..1) by the nearest-rank method (0
// for no latencies).
func (r runResult) percentile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.Latencies)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// run posts bodies to t with conc workers; each request's latency is
// recorded. Every answer is checked against w; the first bad one ends the
// run with an error, so a broken scenario never reports a figure.
func (t *target) run(ctx context.Context, conc int, bodies [][]byte, w want) (runResult, error) {
	lat := make([]time.Duration, len(bodies))
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(bodies) || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				err := t.post(ctx, bodies[i], w, i == 0)
				lat[i] = time.Since(t0)
				if err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return runResult{}, firstErr
	}
	return runResult{Latencies: lat, Wall: time.Since(start)}, nil
}

var (
	allowedTrue = []byte(`"allowed":true`)
	patchField  = []byte(`"patch":`)
)

// post sends one review. Cheap checks on every answer; the whole
// AdmissionReview is decoded for the first answer of a run only, so that
// checking costs the load generator little.
func (t *target) post(ctx context.Context, body []byte, w want, full bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.client.Do(req)
	if err != nil {
		return fmt.Errorf("posting a review to %s: %w", t.url, err)
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("reading the answer of %s: %w", t.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s: %.200s", t.url, resp.Status, out)
	}
	if !bytes.Contains(out, allowedTrue) || bytes.Contains(out, patchField) != w.patched {
		return fmt.Errorf("%s: unexpected answer (want patched=%v): %.300s", t.url, w.patched, out)
	}
	if !full {
		return nil
	}
	var rev admissionv1.AdmissionReview
	if err := json.Unmarshal(out, &rev); err != nil {
		return fmt.Errorf("%s: answer is not an AdmissionReview: %w", t.url, err)
	}
	if rev.Response == nil || !rev.Response.Allowed || (w.patched && rev.Response.PatchType == nil) {
		return fmt.Errorf("%s: unexpected answer (want patched=%v): %.300s", t.url, w.patched, out)
	}
	var sent admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &sent); err != nil || sent.Request == nil {
		return fmt.Errorf("the review sent to %s is not an AdmissionReview: %v", t.url, err)
	}
	if rev.Response.UID != sent.Request.UID {
		return fmt.Errorf("%s: answered uid %q to review %q", t.url, rev.Response.UID, sent.Request.UID)
	}
	if w.secret != "" && !bytes.Contains(rev.Response.Patch, []byte(`{"name":"`+w.secret+`"}`)) {
		return fmt.Errorf("%s: the patch does not add pull Secret %s: %s", t.url, w.secret, rev.Response.Patch)
	}
	if len(rev.Response.Warnings) > 0 {
		return fmt.Errorf("%s: answer carries warnings: %q", t.url, rev.Response.Warnings)
	}
	return nil
}
