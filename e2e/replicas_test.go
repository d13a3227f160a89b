package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// podReview is the AdmissionReview the API server sends for creating a pod
// of the stack's image in ns.
func podReview(t *testing.T, ns, name string) []byte {
	t.Helper()
	raw, err := json.Marshal(&corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: stack.Image}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID("review-" + ns + "-" + name), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: ns, Name: name, Operation: admissionv1.Create,
			Object: runtime.RawExtension{Raw: raw},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// admitVia sends a pod's review to w, as the API server would, and checks
// that it was patched with secret.
func admitVia(t *testing.T, w *harness.Webhook, ns, secret string) {
	t.Helper()
	resp := postReviewTo(t, w, podReview(t, ns, "app"))
	if !resp.Allowed || !strings.Contains(string(resp.Patch), secret) {
		t.Fatalf("review in %s answered allowed=%v patch=%s warnings=%v, want a patch with %s", ns, resp.Allowed, resp.Patch, resp.Warnings, secret)
	}
}

// countSecretWrites counts every create and update of Secrets called name,
// in any namespace, as the API server reports them, until the test ends.
func countSecretWrites(t *testing.T, name string) *atomic.Int64 {
	t.Helper()
	cs, err := stack.Cluster.Clientset(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := cs.CoreV1().Secrets("").Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.ResultChan() {
			if e.Type == watch.Added || e.Type == watch.Modified {
				n.Add(1)
			}
		}
	}()
	t.Cleanup(func() { cancel(); w.Stop(); <-done })
	return &n
}

// checkpointToken is the token the checkpoint holds for instance, "" when
// none.
func checkpointToken(t *testing.T, instance string) string {
	t.Helper()
	cp, ok := getSecret(t, harness.WebhookNamespace, pullsecret.DefaultCheckpointSecret)
	if !ok {
		return ""
	}
	for _, v := range cp.Data {
		var e struct{ Instance, Token string }
		if json.Unmarshal(v, &e) == nil && e.Instance == instance {
			return e.Token
		}
	}
	return ""
}

// alertWatch evaluates the chart's ArtifactoryPullTokenExpiringSoon
// expression, min by (instance) (artifactory_pull_token_expiry_seconds) <
// below, over every replica's samples until stopped.
type alertWatch struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	fired   []string
	samples int
}

func watchExpiryAlert(t *testing.T, instance string, below time.Duration, replicas func() []*harness.Webhook) *alertWatch {
	a := &alertWatch{stop: make(chan struct{}), done: make(chan struct{})}
	sample := "artifactory_pull_token_expiry_seconds{instance=\"" + instance + "\"}"
	go func() {
		defer close(a.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-a.stop:
				return
			case <-tick.C:
			}
			lowest, seen := 0.0, false
			for _, w := range replicas() {
				text, err := w.MetricsText()
				if err != nil || !strings.Contains(text, sample) {
					continue // a killed replica, or no Secret yet
				}
				v, err := harness.MetricValue(text, "artifactory_pull_token_expiry_seconds", map[string]string{"instance": instance})
				if err != nil {
					continue
				}
				if !seen || v < lowest {
					lowest, seen = v, true
				}
			}
			a.mu.Lock()
			if seen {
				a.samples++
				if lowest < below.Seconds() {
					a.fired = append(a.fired, fmt.Sprintf("%s: %.1fs", time.Now().Format("15:04:05.0"), lowest))
				}
			}
			a.mu.Unlock()
		}
	}()
	t.Cleanup(a.end)
	return a
}

func (a *alertWatch) end() {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	<-a.done
}

// Two replicas share the work of admissions; the follower admits pods both
// before and after the leader rotates the token. They must agree on one
// token per rotation: one exchange each time, the same token in every
// Secret, nothing for a new leader to rewrite, and an expiry alert that
// describes what the Secrets hold, not what an idle replica cached.
func TestReplicasConvergeOnOneTokenPerRotation(t *testing.T) {
	instance := runInstance("converge")
	secret := "pull-" + instance
	const ttl, threshold = 60 * time.Second, 0.5
	// The alert fires this far below the refresh point (30 s left): the
	// rotation of every Secret must land within that margin.
	const alertBelow = 20 * time.Second
	cfg := lifecycleConfig(instance, "60s", threshold)
	startLifecycleWebhook(t, cfg) // replica A, called by the API server
	leader := map[string]string{"name": "artifactory-pull-webhook"}
	eventually(t, 20*time.Second, "replica A to lead", func() bool {
		return metric(t, "leader_election_master_status", leader) == 1
	})
	b := startReplicaB(t, cfg)
	a := stack.Webhook
	var killedA atomic.Bool
	alert := watchExpiryAlert(t, instance, alertBelow, func() []*harness.Webhook {
		if killedA.Load() {
			return []*harness.Webhook{b}
		}
		return []*harness.Webhook{a, b}
	})
	writes := countSecretWrites(t, secret)
	exchanges := stack.Emu.Artifactory.Exchanges()

	// 40 namespaces through the API server (replica A), then 5 whose pods
	// replica B admits: B takes A's checkpointed token instead of minting.
	nss := make([]string, 0, 50)
	for range 40 {
		ns := optedIn(t)
		patchedPod(t, ns, "app", secret)
		nss = append(nss, ns)
	}
	first, _ := getSecret(t, nss[0], secret)
	t1 := token(t, first)
	eventually(t, 10*time.Second, "the first token in the checkpoint", func() bool { return checkpointToken(t, instance) == t1 })
	for range 5 {
		ns := optedIn(t)
		admitVia(t, b, ns, secret)
		nss = append(nss, ns)
	}
	carried := func(tok string) int {
		n := 0
		for _, ns := range nss {
			if s, ok := getSecret(t, ns, secret); ok && token(t, s) == tok {
				n++
			}
		}
		return n
	}
	if n := carried(t1); n != len(nss) {
		t.Fatalf("%d of %d Secrets carry the first token after replica B admitted pods: the replicas disagree", n, len(nss))
	}

	// The leader rotates every Secret once the token reaches its refresh
	// point.
	var t2 string
	eventually(t, ttl, "the leader to rotate every Secret to one new token", func() bool {
		s, _ := getSecret(t, nss[0], secret)
		t2 = token(t, s)
		return t2 != t1 && carried(t2) == len(nss)
	})
	eventually(t, 10*time.Second, "the new token in the checkpoint", func() bool { return checkpointToken(t, instance) == t2 })
	// Let the first token run below the alert's threshold: a replica that
	// reported the token it last cached, not the Secrets', would fire now.
	t1Expiry := annotationTime(t, first, pullsecret.AnnotationExpiresAt)
	if wait := time.Until(t1Expiry.Add(-alertBelow + 2*time.Second)); wait > 0 {
		time.Sleep(wait)
	}
	// Replica B admits pods in 5 new namespaces after the rotation: it
	// takes the leader's new token instead of minting its own.
	for range 5 {
		ns := optedIn(t)
		admitVia(t, b, ns, secret)
		nss = append(nss, ns)
	}
	if n := carried(t2); n != len(nss) {
		t.Errorf("%d of %d Secrets carry the leader's rotated token after replica B admitted pods", n, len(nss))
	}
	if d := stack.Emu.Artifactory.Exchanges() - exchanges; d != 2 {
		t.Errorf("%d exchanges for one first token and one rotation across two replicas, want 2", d)
	}
	if v, err := b.Metric("artifactory_pull_token_adoptions_total", map[string]string{"instance": instance}); err != nil || v != 2 {
		t.Errorf("replica B adopted %v tokens (err %v), want 2: the first one and the rotated one", v, err)
	}

	// The leader dies; B takes over and reconciles every Secret: each
	// already carries the token B holds, so it writes nothing.
	before := writes.Load()
	a.Kill()
	killedA.Store(true)
	reconciled := map[string]string{"controller": "pullsecret-refresher"}
	eventually(t, 30*time.Second, "replica B to lead and reconcile every Secret", func() bool {
		v, err := b.Metric("controller_runtime_reconcile_total", reconciled)
		return err == nil && v >= float64(len(nss))
	})
	if n := writes.Load() - before; n != 0 {
		t.Errorf("the new leader wrote Secrets %d times after taking over, want 0: every Secret already carries the one token", n)
	}
	if s, _ := getSecret(t, nss[0], secret); time.Until(annotationTime(t, s, pullsecret.AnnotationExpiresAt)) < ttl-time.Duration(threshold*float64(ttl)) {
		t.Fatal("the test ran into the next rotation: the write count above is not about the takeover")
	}
	alert.end()
	t.Logf("%d Secret writes in all for %d namespaces; %d alert samples", writes.Load(), len(nss), alert.samples)
	if alert.samples == 0 {
		t.Fatal("no replica exported artifactory_pull_token_expiry_seconds: the alert check proves nothing")
	}
	if len(alert.fired) > 0 {
		t.Errorf("ArtifactoryPullTokenExpiringSoon (below %s) would have fired: %v", alertBelow, alert.fired)
	}
}
