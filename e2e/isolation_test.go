package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// managedSecretsIn lists the webhook's Secrets in ns.
func managedSecretsIn(t *testing.T, ns string) []string {
	t.Helper()
	var list corev1.SecretList
	if err := stack.Cluster.Client.List(context.Background(), &list, client.InNamespace(ns),
		client.MatchingLabels{pullsecret.ManagedByLabel: pullsecret.ManagedByValue}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range list.Items {
		names = append(names, s.Name)
	}
	return names
}

func TestPodInOneNamespaceNeverWritesInAnother(t *testing.T) {
	a, b := optedIn(t), optedIn(t)
	// The API server itself refuses a pod whose metadata names another
	// namespace than the request; that claim is tested against the webhook
	// directly below.
	got, _ := createPod(t, a, pod("app", stack.Image))
	if n := pullSecretNames(got); len(n) != 1 {
		t.Fatalf("pod in %s not patched: %v", a, n)
	}
	if s := managedSecretsIn(t, a); len(s) != 1 {
		t.Errorf("namespace %s holds managed Secrets %v, want exactly the pod's", a, s)
	}
	if s := managedSecretsIn(t, b); len(s) != 0 {
		t.Errorf("a pod created in %s wrote %v in %s", a, s, b)
	}
}

// postReview sends one AdmissionReview to the webhook process over TLS, the
// way the API server does, and returns its response.
func postReview(t *testing.T, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	return postReviewTo(t, stack.Webhook, body)
}

// postReviewTo sends one AdmissionReview to w.
func postReviewTo(t *testing.T, w *harness.Webhook, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	resp, err := w.TLSClient().Post(w.URL(), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("posting to the webhook: %v", err)
	}
	defer resp.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Response == nil {
		t.Fatalf("HTTP %d: answer is not an AdmissionReview: %v", resp.StatusCode, err)
	}
	return out.Response
}

func TestRequestForANamespaceNotOptedInWritesNothingWhateverThePodClaims(t *testing.T) {
	// Cold, and without the refresher or the checkpoint: any exchange is
	// the request's.
	if err := stack.StartWebhook(context.Background(), harness.PodIdentity, func(o *harness.WebhookOptions) { o.Args = nil }); err != nil {
		t.Fatalf("starting the webhook: %v", err)
	}
	t.Cleanup(func() { restartWebhook(t, harness.PodIdentity) })
	plain := namespace(t, nil)
	claimed := optedIn(t)
	raw, err := json.Marshal(&corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "intruder", Namespace: claimed},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: stack.Image}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "isolation-1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: plain, Name: "intruder", Operation: admissionv1.Create,
			Object: runtime.RawExtension{Raw: raw},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	before := stack.Emu.Artifactory.Attempts()
	resp := postReview(t, body)
	if !resp.Allowed || len(resp.Patch) != 0 {
		t.Errorf("response allowed=%v patch=%s, want allowed and unpatched", resp.Allowed, resp.Patch)
	}
	for _, ns := range []string{plain, claimed} {
		if s := managedSecretsIn(t, ns); len(s) != 0 {
			t.Errorf("a request for %s wrote %v in %s", plain, s, ns)
		}
	}
	if d := stack.Emu.Artifactory.Attempts() - before; d != 0 {
		t.Errorf("a request for a namespace that did not opt in made %d exchanges", d)
	}
}

func TestOversizedRequestBodyGetsAClearErrorAndTheServerKeepsServing(t *testing.T) {
	// The webhook reads at most 7 MiB of a review (as controller-runtime
	// did); send more.
	body := append([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"big","object":{"pad":"`),
		bytes.Repeat([]byte("a"), 8<<20)...)
	body = append(body, `"}}}`...)
	// The answer is an HTTP error, not a denial: the API server applies the
	// failurePolicy (Ignore admits the pod).
	resp, err := stack.Webhook.TLSClient().Post(stack.Webhook.URL(), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("posting to the webhook: %v", err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(answer), "too large") {
		t.Errorf("oversized review answered HTTP %d %q, want 413 saying it is too large", resp.StatusCode, answer)
	}
	ns := optedIn(t)
	if got, w := createPod(t, ns, pod("after-big", stack.Image)); len(got.Spec.ImagePullSecrets) != 1 {
		t.Errorf("webhook stopped patching after an oversized request: %v", w)
	}
}

func TestWebhookRefusesTLSBelow1_2AndNegotiates1_3(t *testing.T) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(stack.Webhook.CABundle)
	dial := func(maxVersion uint16) (uint16, error) {
		c, err := tls.Dial("tcp", stack.Webhook.Addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: maxVersion})
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.ConnectionState().Version, nil
	}
	if _, err := dial(tls.VersionTLS11); err == nil {
		t.Error("the webhook accepted a TLS 1.1 handshake")
	}
	if v, err := dial(0); err != nil || v != tls.VersionTLS13 {
		t.Errorf("default handshake: version %x, err %v; want TLS 1.3", v, err)
	}
}

// TestSlowClientsAreCutOffWhileAdmissionsContinue opens connections that
// send a review's headers and then trickle its body a byte at a time, as a
// slowloris attack does. The webhook must close each of them once its read
// deadline passes (10s), while pods created meanwhile are patched as usual.
func TestSlowClientsAreCutOffWhileAdmissionsContinue(t *testing.T) {
	const clients = 20
	// Far beyond the webhook's read deadline: a connection still open then
	// is held for as long as its client likes.
	const giveUp = 45 * time.Second
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(stack.Webhook.CABundle)
	stop := make(chan struct{})
	defer close(stop)
	type cut struct {
		sent int
		err  error
	}
	cuts := make(chan cut, clients)
	for range clients {
		conn, err := tls.Dial("tcp", stack.Webhook.Addr, &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatalf("connecting to the webhook: %v", err)
		}
		defer conn.Close()
		if _, err := fmt.Fprintf(conn, "POST /mutate HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
			stack.Webhook.Addr, 1<<20); err != nil {
			t.Fatal(err)
		}
		var sent atomic.Int64
		go func() {
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
					sent.Add(1)
				}
			}
		}()
		go func() {
			_ = conn.SetReadDeadline(time.Now().Add(giveUp))
			_, err := io.Copy(io.Discard, conn) // until the webhook closes the connection
			cuts <- cut{sent: int(sent.Load()), err: err}
		}()
	}

	ns := optedIn(t)
	for i := range 3 {
		got, warnings := createPod(t, ns, pod(fmt.Sprintf("beside-slow-clients-%d", i), stack.Image))
		if n := pullSecretNames(got); len(n) != 1 {
			t.Errorf("pod created beside %d slow clients not patched: %v (warnings %v)", clients, n, warnings)
		}
	}
	for range clients {
		c := <-cuts
		if errors.Is(c.err, os.ErrDeadlineExceeded) {
			t.Fatalf("a client trickling its body (%d bytes sent) was still connected after %s", c.sent, giveUp)
		}
	}
	ns = optedIn(t)
	if got, w := createPod(t, ns, pod("after-slow-clients", stack.Image)); len(got.Spec.ImagePullSecrets) != 1 {
		t.Errorf("webhook stopped patching after the slow clients were cut off: %v", w)
	}
}
