package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	jsonpatch "gomodules.xyz/jsonpatch/v2"
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

// oracleHandler is the handler as controller-runtime's admission.Webhook
// served it before the review was read in one pass: it takes a decoded
// admission.Request and answers with gomodules jsonpatch operations, which
// controller-runtime encodes. FuzzReviewDecoder holds ServeHTTP's answer to
// it; it shares only the review logic (admit) with the served path.
type oracleHandler struct{ h *Handler }

func (o oracleHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	h := o.h
	r := &reviewRequest{
		uid: string(req.UID), group: req.Kind.Group, version: req.Kind.Version, kind: req.Kind.Kind,
		resGroup: req.Resource.Group, resVersion: req.Resource.Version, resource: req.Resource.Resource,
		subResource: req.SubResource, namespace: req.Namespace, operation: string(req.Operation), nm: req.Name,
		dryRun: req.DryRun != nil && *req.DryRun,
	}
	var d decoder
	d.optOut.key, d.optOut.value = h.optOutKey, h.optOutValue
	r.podErr = d.decodePod(req.Object.Raw, &r.pod)
	a := h.admit(ctx, r)
	resp := admission.Allowed("")
	if ops := oraclePatch(&r.pod, a.add); len(ops) > 0 {
		resp = admission.Patched("", ops...)
	}
	return resp.WithWarnings(a.warnings...)
}

// oraclePatch is the JSON patch adding add to spec.imagePullSecrets, built
// as gomodules jsonpatch operations: the whole list when the pod has none,
// else one append per name.
func oraclePatch(p *pod, add []string) []jsonpatch.Operation {
	if len(add) == 0 {
		return nil
	}
	refs := make([]corev1.LocalObjectReference, 0, len(add))
	for _, n := range add {
		refs = append(refs, corev1.LocalObjectReference{Name: n})
	}
	if !p.pullSecrets.isSet {
		return []jsonpatch.Operation{{Operation: "add", Path: "/spec/imagePullSecrets", Value: refs}}
	}
	ops := make([]jsonpatch.Operation, 0, len(add))
	for _, ref := range refs {
		ops = append(ops, jsonpatch.Operation{Operation: "add", Path: "/spec/imagePullSecrets/-", Value: ref})
	}
	return ops
}
