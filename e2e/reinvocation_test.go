package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
)

// publicImage is what a pod names before an image-rewriting webhook (Kyverno,
// kubenab and the like) points it at the Artifactory remote repository.
const publicImage = "docker.io/library/busybox:1.36"

// imageRewriter is a second mutating webhook, as a cluster runs beside this
// one: it rewrites publicImage to an image on Artifactory.
type imageRewriter struct {
	to string

	mu      sync.Mutex
	reviews int
}

func (rw *imageRewriter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	rw.mu.Lock()
	rw.reviews++
	rw.mu.Unlock()
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	var p corev1.Pod
	if err := json.Unmarshal(review.Request.Object.Raw, &p); err == nil {
		var patch []map[string]any
		for i, c := range p.Spec.Containers {
			if c.Image == publicImage {
				patch = append(patch, map[string]any{"op": "replace", "path": fmt.Sprintf("/spec/containers/%d/image", i), "value": rw.to})
			}
		}
		if len(patch) > 0 {
			resp.Patch, _ = json.Marshal(patch)
			resp.PatchType = ptr.To(admissionv1.PatchTypeJSONPatch)
		}
	}
	review.Response, review.Request = resp, nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review)
}

func (rw *imageRewriter) seen() int {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return rw.reviews
}

// TestPodWhoseImageAnotherWebhookRewritesGetsThePullSecret: whichever of
// the two mutating webhooks the API server calls first, the stored pod
// names the Artifactory image and carries its pull Secret, and the image
// pulls with it. When the rewriter runs after this webhook (its
// configuration's name sorts later), only reinvocationPolicy IfNeeded of
// the shipped configuration brings the Secret: the API server calls this
// webhook again because another one changed the pod.
func TestPodWhoseImageAnotherWebhookRewritesGetsThePullSecret(t *testing.T) {
	ctx := context.Background()
	c := stack.Cluster.Client
	rw := &imageRewriter{to: stack.Image}
	base, caPEM := admissionServer(t, rw)
	url := base + "/mutate"

	ours, err := harness.WebhookConfiguration("https://unused", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range []struct {
		name, config string // the rewriter's configuration: its name orders the calls
	}{
		{name: "rewriter called first", config: "aaa-apw-e2e-image-rewriter"},
		{name: "rewriter called after this webhook", config: "zzz-apw-e2e-image-rewriter"},
	} {
		t.Run(row.name, func(t *testing.T) {
			if (row.config < ours.Name) != (row.name == "rewriter called first") {
				t.Fatalf("precondition: %q does not sort as the row says against %q", row.config, ours.Name)
			}
			label := "apw-e2e-rewrite"
			ns := namespace(t, map[string]string{harness.OptInLabel: "enabled", label: row.config})
			mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
				ObjectMeta: metav1.ObjectMeta{Name: row.config},
				Webhooks: []admissionregistrationv1.MutatingWebhook{{
					Name:         "image-rewriter.e2e.test",
					ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM},
					Rules: []admissionregistrationv1.RuleWithOperations{{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
					}},
					NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{label: row.config}},
					FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
					SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
					ReinvocationPolicy:      ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
					TimeoutSeconds:          ptr.To[int32](5),
					AdmissionReviewVersions: []string{"v1"},
				}},
			}
			if err := c.Create(ctx, mwc); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Delete(ctx, mwc) })
			// The API server learns of the configuration from a watch: probe
			// with dry-run pods until the rewriter is called.
			before := rw.seen()
			eventually(t, 10*time.Second, "the API server to call the image rewriter", func() bool {
				probe := pod("probe", "registry.example/probe:1")
				probe.Namespace = ns
				if err := c.Create(ctx, probe, client.DryRunAll); err != nil {
					t.Fatalf("dry-run probe: %v", err)
				}
				return rw.seen() > before
			})

			got, warnings := createPod(t, ns, pod("app", publicImage))
			if img := got.Spec.Containers[0].Image; img != stack.Image {
				t.Fatalf("stored image %q, want the rewritten %q", img, stack.Image)
			}
			if !slices.Equal(pullSecretNames(got), []string{"artifactory-pull"}) {
				t.Fatalf("stored pod's imagePullSecrets %v (warnings %v), want the Secret of the rewritten image's instance", pullSecretNames(got), warnings)
			}
			if err := pull(ns, got.Spec.Containers[0].Image, pullSecretNames(got)); err != nil {
				t.Errorf("the rewritten image does not pull with the pod's Secret: %v", err)
			}
		})
	}
}
