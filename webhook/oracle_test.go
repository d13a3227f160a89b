package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"
)

// oraclePod and oracleDecodePod are how the pod was decoded before the
// review was read in one pass (sigs.k8s.io/json into a struct of the fields
// used): the reference FuzzReviewDecoder holds the served path to.
type oraclePod struct {
	Metadata struct {
		Name         string            `json:"name"`
		GenerateName string            `json:"generateName"`
		Labels       map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ServiceAccountName  string                        `json:"serviceAccountName"`
		ImagePullSecrets    []corev1.LocalObjectReference `json:"imagePullSecrets"`
		Containers          []oracleContainer             `json:"containers"`
		InitContainers      []oracleContainer             `json:"initContainers"`
		EphemeralContainers []oracleContainer             `json:"ephemeralContainers"`
	} `json:"spec"`
}

type oracleContainer struct {
	Image string `json:"image"`
}

func oracleDecodePod(raw []byte) (*oraclePod, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("decoding pod: empty object")
	}
	var p oraclePod
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, &p); err != nil {
		return nil, fmt.Errorf("decoding pod: %w", err)
	}
	return &p, nil
}

// serve sends req to h.ServeHTTP as the API server would (an
// admission.k8s.io/v1 AdmissionReview) and returns the response it wrote,
// its patch decoded into Patches.
func serve(t testing.TB, h *Handler, ctx context.Context, req admission.Request) admission.Response {
	t.Helper()
	if len(req.Object.Raw) == 0 {
		req.Object.Raw = nil // marshalled as "object":null, the review of no object
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req.AdmissionRequest,
	})
	if err != nil {
		t.Error(err)
		return admission.Response{}
	}
	r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/mutate", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	resp, err := decodeAnswer(rec)
	if err != nil {
		t.Error(err)
		return admission.Response{}
	}
	if resp.UID != req.UID {
		t.Errorf("response uid %q, want %q", resp.UID, req.UID)
	}
	return resp
}

// decodeAnswer reads the AdmissionReview a review was answered with.
func decodeAnswer(rec *httptest.ResponseRecorder) (admission.Response, error) {
	if rec.Code != http.StatusOK {
		return admission.Response{}, fmt.Errorf("HTTP %d: %s", rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
		return admission.Response{}, fmt.Errorf("answer is not an AdmissionReview (%v): %s", err, rec.Body)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" {
		return admission.Response{}, fmt.Errorf("answer is a %s %s", out.APIVersion, out.Kind)
	}
	resp := admission.Response{AdmissionResponse: *out.Response}
	if len(resp.Patch) > 0 {
		if err := json.Unmarshal(resp.Patch, &resp.Patches); err != nil {
			return admission.Response{}, fmt.Errorf("patch: %v: %s", err, resp.Patch)
		}
	}
	return resp, nil
}
