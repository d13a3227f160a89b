package deploy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/certs"
	"gomodules.xyz/jsonpatch/v2"
)

const (
	rotationNS     = "cert-rotation"
	rotationSecret = "rotation-serving-cert"
	rotationMWC    = "cert-rotation-test"
)

// replica is one in-process admission server serving the self-managed
// certificate, the way the webhook's server does (tls.Config.GetCertificate).
type replica struct {
	name string
	sm   *certs.SelfManaged
	url  string
}

func startReplica(t *testing.T, ctx context.Context, name string) *replica {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sm, err := certs.NewSelfManaged(certs.SelfManagedOptions{
		Client: stack.Cluster.Client, Namespace: rotationNS, SecretName: rotationSecret,
		WebhookConfigName: rotationMWC, Hosts: []string{"127.0.0.1"},
		// Short-lived so that the test sees several rotations: renewed 3s
		// into a 9s life, served 1s later.
		Validity: 9 * time.Second, RenewBefore: 6 * time.Second, TrustDelay: time.Second,
		Interval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = sm.Start(ctx) }()
	mark := admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Patched("", jsonpatch.NewOperation("add", "/metadata/annotations/rotation.test~1"+name, "ok"))
	})
	srv := &http.Server{Handler: &admission.Webhook{Handler: mark},
		TLSConfig: &tls.Config{GetCertificate: sm.GetCertificate, MinVersion: tls.VersionTLS12}}
	// A TLS handshake per admission: every call checks the certificate
	// served at that moment.
	srv.SetKeepAlivesEnabled(false)
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { _ = srv.Close() })
	return &replica{name: name, sm: sm, url: "https://" + ln.Addr().String() + "/mutate"}
}

func serial(r *replica) string {
	c, err := r.sm.GetCertificate(nil)
	if err != nil {
		return ""
	}
	return c.Leaf.SerialNumber.Text(16)
}

func TestSelfManagedCertificatesRotateUnderLiveAdmissionsWithoutAFailedCall(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := stack.Cluster.Client
	if err := stack.Cluster.CreateNamespace(ctx, rotationNS, map[string]string{"rotation-test": "on"}); err != nil {
		t.Fatal(err)
	}
	// Two replicas sharing one Secret, each behind its own webhook of one
	// configuration: every pod creation calls both. failurePolicy Fail makes
	// any TLS failure a rejected pod.
	replicas := []*replica{startReplica(t, ctx, "a"), startReplica(t, ctx, "b")}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: rotationMWC}}
	for _, r := range replicas {
		mwc.Webhooks = append(mwc.Webhooks, admissionregistrationv1.MutatingWebhook{
			Name:                    r.name + ".rotation.test",
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			TimeoutSeconds:          ptr.To[int32](5),
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To(r.url)},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"rotation-test": "on"}},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
		})
	}
	if err := c.Create(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), mwc) })
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return replicas[0].sm.Checker(nil) == nil && replicas[1].sm.Checker(nil) == nil, nil
	})
	if err != nil {
		t.Fatal("replicas never became ready")
	}

	cs, err := stack.Cluster.Clientset(nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]map[string]bool{"a": {}, "b": {}}
	rotations := func() int { return min(len(seen["a"]), len(seen["b"])) - 1 }
	deadline := time.Now().Add(2 * time.Minute)
	pods := 0
	for rotations() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d rotations seen by both replicas after %d pods", rotations(), pods)
		}
		for _, r := range replicas {
			seen[r.name][serial(r)] = true
		}
		pods++
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", pods), Annotations: map[string]string{"created": "by-test"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.test/app:1"}}}}
		got, err := cs.CoreV1().Pods(rotationNS).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("admission %d failed (rotations so far %d): %v", pods, rotations(), err)
		}
		for _, r := range replicas {
			if got.Annotations["rotation.test/"+r.name] != "ok" {
				t.Fatalf("pod %d was not mutated by replica %s: %v", pods, r.name, got.Annotations)
			}
		}
	}
	t.Logf("%d admissions across %d certificate rotations, none failed", pods, rotations())
}
