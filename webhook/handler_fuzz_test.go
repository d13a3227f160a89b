package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// namespaceCheckingSecrets fails the fuzz run when Ensure is asked for any
// namespace other than the one of the request being served: a Secret must
// only ever be written where the pod is created.
type namespaceCheckingSecrets struct {
	t    *testing.T
	want string
}

func (s *namespaceCheckingSecrets) EnsureAs(_ context.Context, namespace string, inst config.Instance, _ credentials.Identity, _ bool) (pullsecret.Result, error) {
	if namespace != s.want {
		s.t.Errorf("Ensure called for namespace %q while serving a request for %q", namespace, s.want)
	}
	return pullsecret.Result{SecretName: inst.SecretName, Action: pullsecret.ActionReused}, nil
}

// FuzzAdmissionReview feeds raw request bodies to the admission endpoint
// exactly as the API server would send them (controller-runtime's decoding,
// then Handler). Whatever the bytes, the webhook must answer, never deny,
// and any patch it returns must apply to the pod it was given.
func FuzzAdmissionReview(f *testing.F) {
	for _, seed := range admissionSeeds(f) {
		f.Add(seed)
	}
	secrets := &namespaceCheckingSecrets{}
	h, _ := testHandler(f, secrets, func(o *Options) { o.Log = logr.Discard() })
	// seen is the request as controller-runtime decoded it, the one the
	// handler acts on (iterations of one fuzz worker run one at a time).
	var seen *admission.Request
	wh := &admission.Webhook{Handler: admission.HandlerFunc(func(ctx context.Context, req admission.Request) admission.Response {
		seen, secrets.want = &req, req.Namespace
		return h.Handle(ctx, req)
	})}
	wh.LogConstructor = func(logr.Logger, *admission.Request) logr.Logger { return logr.Discard() }

	f.Fuzz(func(t *testing.T, body []byte) {
		seen, secrets.t = nil, t
		req := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		wh.ServeHTTP(rec, req)

		if rec.Code != http.StatusOK {
			t.Fatalf("HTTP status %d: the admission response itself carries errors", rec.Code)
		}
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("answer is not an AdmissionReview (%v): %s", err, rec.Body.String())
		}
		resp := out.Response
		if seen == nil {
			return // not an AdmissionReview: controller-runtime answered the decode error
		}
		if !resp.Allowed {
			t.Fatalf("pod denied: %+v", resp.Result)
		}
		if len(resp.Patch) == 0 {
			return
		}
		patch, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("patch does not decode: %v: %s", err, resp.Patch)
		}
		if _, err := patch.Apply(seen.Object.Raw); err != nil {
			t.Fatalf("patch does not apply to the pod: %v\npatch %s", err, resp.Patch)
		}
		for _, w := range resp.Warnings {
			if !strings.HasPrefix(w, warnPrefix) {
				t.Errorf("warning without the webhook's prefix: %q", w)
			}
		}
	})
}

// admissionSeeds are reviews of each shape the handler distinguishes, plus
// malformed, wrong-kind, deep and odd-unicode bodies.
func admissionSeeds(f *testing.F) [][]byte {
	review := func(mod func(*admissionv1.AdmissionRequest), pod any) []byte {
		req := podRequest(f, testNamespace, pod).AdmissionRequest
		if mod != nil {
			mod(&req)
		}
		b, err := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: &req,
		})
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	withPullSecrets := simplePod(mainImage, "team.jfrog.example.io/a/b:1")
	withPullSecrets["spec"].(map[string]any)["imagePullSecrets"] = []any{map[string]any{"name": "keep"}}
	deep := strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)
	return [][]byte{
		review(nil, simplePod(mainImage)),
		review(nil, withPullSecrets),
		review(nil, simplePod("docker.io/library/busybox", "nginx@sha256:"+strings.Repeat("a", 64))),
		review(nil, simplePod("ARTIFACTORY.example.com:8443/x/y", "not a valid image//")),
		review(nil, simplePod("team.jfrog.example.io/ünïcode/☃:1", "\u202eartifactory.example.com/a")),
		review(func(r *admissionv1.AdmissionRequest) { r.Namespace = "other" }, simplePod(mainImage)),
		review(func(r *admissionv1.AdmissionRequest) { r.Operation = admissionv1.Update }, simplePod(mainImage)),
		review(func(r *admissionv1.AdmissionRequest) { r.Kind.Kind = "Deployment" }, simplePod(mainImage)),
		review(func(r *admissionv1.AdmissionRequest) { r.Object.Raw = []byte(deep) }, nil),
		review(func(r *admissionv1.AdmissionRequest) { r.Object.Raw = []byte(`{"spec":{"containers":"x"}}`) }, nil),
		review(func(r *admissionv1.AdmissionRequest) { r.Object.Raw = []byte(`null`) }, nil),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"1","kind":{"kind":"Pod","version":"v1"},"operation":"CREATE","namespace":"team-a","object":{}}}`),
		[]byte(`{"kind":"Pod"}`),
		[]byte(`[]`),
		[]byte(``),
		[]byte("\xff\xfe{"),
	}
}
