package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// BenchmarkHandleWarm measures a review whose Secret already exists, end to
// end through ServeHTTP on a recorded body: reading and decoding the
// review, matching, and writing the patched answer.
func BenchmarkHandleWarm(b *testing.B) {
	h, _ := testHandler(b, instantSecrets{}, benchOptions)
	pod := []byte(`{
  "apiVersion": "v1", "kind": "Pod",
  "metadata": {"generateName": "web-7d9f8c6b5-", "namespace": "team-a",
    "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5"},
    "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"},
    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c6b5", "uid": "0d8f", "controller": true}]},
  "spec": {
    "serviceAccountName": "web",
    "imagePullSecrets": [{"name": "regcred"}],
    "initContainers": [{"name": "migrate", "image": "artifactory.example.com/team/migrate:3.1",
      "command": ["/migrate", "--up"], "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
    "containers": [
      {"name": "app", "image": "artifactory.example.com/team/app:1.0",
       "ports": [{"containerPort": 8080, "protocol": "TCP"}],
       "env": [{"name": "MODE", "value": "production"}, {"name": "LOG_LEVEL", "value": "info"}],
       "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
       "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}},
      {"name": "proxy", "image": "team.jfrog.example.io/docker/envoy@sha256:4b0bb1e4e6b4b6d0f8b1a7e0d9c5e8f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7"},
      {"name": "metrics", "image": "prom/statsd-exporter:v0.26.0"}
    ],
    "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}]
  }
}`)
	serveBench(b, h, podRequest(b, testNamespace, pod), 2)
}

// serveBench serves req's recorded review to h.ServeHTTP over and over,
// with a reused request and writer so that only the handler allocates, and
// checks the answer carries patches operations.
func serveBench(b *testing.B, h *Handler, req admission.Request, patches int) {
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req.AdmissionRequest,
	})
	if err != nil {
		b.Fatal(err)
	}
	rb := &benchBody{}
	r := httptest.NewRequestWithContext(context.Background(), http.MethodPost, "/mutate", rb)
	r.Header.Set("Content-Type", "application/json")
	w := &benchWriter{h: http.Header{}}
	serve := func() {
		rb.Reset(body)
		w.buf.Reset()
		h.ServeHTTP(w, r)
	}
	serve()
	rec := httptest.NewRecorder()
	rec.Body.Write(w.buf.Bytes())
	if resp, err := decodeAnswer(rec); err != nil || len(resp.Patches) != patches || !resp.Allowed {
		b.Fatalf("answer %+v (%v), want %d patches", resp, err, patches)
	}
	want := w.buf.Len()
	b.ReportAllocs()
	for b.Loop() {
		if serve(); w.code != 0 || w.buf.Len() != want {
			b.Fatalf("answer changed: %d %s", w.code, w.buf.Bytes())
		}
	}
}

// benchBody is a request body read again on every iteration.
type benchBody struct{ bytes.Reader }

func (*benchBody) Close() error { return nil }

// benchWriter is a reusable http.ResponseWriter.
type benchWriter struct {
	h    http.Header
	buf  bytes.Buffer
	code int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(b []byte) (int, error) { return w.buf.Write(b) }
func (w *benchWriter) WriteHeader(c int)           { w.code = c }

// benchOptions: no log lines, and Namespaces read as the manager's
// informer cache reads them (the fake client's conversions would dwarf the
// handler).
func benchOptions(o *Options) {
	o.Log = logr.Discard()
	o.Namespaces = cacheReader{testNamespace: &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: testNamespace, UID: "ns-uid", Labels: optedIn()},
	}}
}

// cacheReader reads objects as controller-runtime's cache reader does: a
// deep copy of the stored object.
type cacheReader map[string]*metav1.PartialObjectMetadata

func (c cacheReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	stored, ok := c[key.Name]
	if !ok {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, key.Name)
	}
	*obj.(*metav1.PartialObjectMetadata) = *stored.DeepCopy()
	return nil
}

func (c cacheReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("cacheReader: List is not implemented")
}

// instantSecrets answers at once without recording, so the benchmark
// measures the handler alone.
type instantSecrets struct{}

func (instantSecrets) EnsureAs(_ context.Context, _ string, inst config.Instance, _ credentials.Identity, _ bool) (pullsecret.Result, error) {
	return pullsecret.Result{SecretName: inst.SecretName, Action: pullsecret.ActionReused}, nil
}
