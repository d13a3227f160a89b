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
// (Handler.ServeHTTP) exactly as the API server would send them. Whatever
// the bytes, the webhook must answer: an AdmissionReview that never denies,
// whose patch applies to the pod it was given, or, for a body that is not
// an admission.k8s.io/v1 AdmissionReview with a request, HTTP 400.
func FuzzAdmissionReview(f *testing.F) {
	for _, seed := range admissionSeeds(f) {
		f.Add(seed)
	}
	secrets := &namespaceCheckingSecrets{}
	h, _ := testHandler(f, secrets, func(o *Options) { o.Log = logr.Discard() })

	f.Fuzz(func(t *testing.T, body []byte) {
		// seen is the request as controller-runtime decodes it: the one
		// the handler must act on.
		seen := oracleDecodeReview(body)
		secrets.t, secrets.want = t, ""
		if seen != nil {
			secrets.want = seen.Namespace
		}
		req := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		if seen == nil {
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("HTTP status %d for a body that is not a v1 AdmissionReview, want 400: %s", rec.Code, rec.Body)
			}
			return
		}
		if rec.Code != http.StatusOK {
			t.Fatalf("HTTP status %d: %s", rec.Code, rec.Body)
		}
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("answer is not an AdmissionReview (%v): %s", err, rec.Body.String())
		}
		resp := out.Response
		if !resp.Allowed {
			t.Fatalf("pod denied: %+v", resp.Result)
		}
		if resp.UID != seen.UID {
			t.Fatalf("answer for uid %q, want %q", resp.UID, seen.UID)
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
