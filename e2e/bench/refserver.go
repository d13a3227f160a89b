package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// The reference webhooks run in a child process of the benchmark (flag
// -serve), as the real webhook runs in its own: both then compete with the
// load generator for the CPUs in the same way.
const (
	rawPath    = "/raw"
	floorPath  = "/floor"
	decodePath = "/decode"
)

// rawHandler is the limit for any Go webhook on this stack: the same TLS
// server reads the whole body and answers a fixed allowed AdmissionReview
// carrying the request's uid, found without decoding (the first "uid" of a
// review is its request's: the benchmark writes it first). What is left is
// the cost of TLS and HTTP alone.
type rawHandler struct{}

var (
	uidKey    = []byte(`"uid":"`)
	rawPrefix = []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"`)
	rawSuffix = []byte(`","allowed":true}}`)
)

func (rawHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 7<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	i := bytes.Index(body, uidKey)
	if i < 0 {
		http.Error(w, "no uid in the review", http.StatusBadRequest)
		return
	}
	uid := body[i+len(uidKey):]
	uid = uid[:max(0, bytes.IndexByte(uid, '"'))]
	out := make([]byte, 0, len(rawPrefix)+len(uid)+len(rawSuffix))
	out = append(append(append(out, rawPrefix...), uid...), rawSuffix...)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// floorHandler admits without looking at the pod: what is left is the cost
// of TLS, HTTP and the AdmissionReview envelope, the limit any pod webhook
// on this stack can approach.
type floorHandler struct{}

func (floorHandler) Handle(context.Context, admission.Request) admission.Response {
	return admission.Allowed("")
}

// decodeHandler is what a typical controller-runtime pod webhook pays: it
// decodes the whole corev1.Pod, makes the same change as ours (one
// imagePullSecret), re-marshals it and diffs the two documents.
type decodeHandler struct{ decoder admission.Decoder }

func (h decodeHandler) Handle(_ context.Context, req admission.Request) admission.Response {
	pod := &corev1.Pod{}
	if err := h.decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: "artifactory-pull"})
	out, err := json.Marshal(pod)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	return admission.PatchResponseFromRaw(req.Object.Raw, out)
}

// serveReference runs the raw, floor and decode webhooks on controller-runtime's
// webhook server, with the same TLS settings as the real webhook, until ctx
// ends.
func serveReference(ctx context.Context, port int, certDir string) error {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	srv := webhook.NewServer(webhook.Options{
		Host:    "127.0.0.1",
		Port:    port,
		CertDir: certDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }},
	})
	srv.Register(rawPath, rawHandler{})
	srv.Register(floorPath, &admission.Webhook{Handler: floorHandler{}})
	srv.Register(decodePath, &admission.Webhook{Handler: decodeHandler{decoder: admission.NewDecoder(scheme)}})
	if err := srv.Start(ctx); err != nil {
		return fmt.Errorf("serving the reference webhooks: %w", err)
	}
	return nil
}
