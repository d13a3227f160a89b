package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

var stack *harness.Stack

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "apw-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	stack, err = harness.StartStack(ctx, harness.StackOptions{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the e2e stack:", err)
		return 1
	}
	defer stack.Close()
	if err := stack.StartWebhook(ctx, harness.PodIdentity); err != nil {
		fmt.Fprintln(os.Stderr, "starting the webhook:", err)
		return 1
	}
	code := m.Run()
	if code != 0 && stack.Webhook != nil {
		fmt.Fprintln(os.Stderr, "--- webhook logs ---\n"+stack.Webhook.Logs())
	}
	return code
}

// --- helpers ---------------------------------------------------------------

var nsSeq struct {
	sync.Mutex
	n int
}

// optedIn creates a fresh namespace carrying the opt-in label.
func optedIn(t *testing.T) string {
	t.Helper()
	return namespace(t, map[string]string{harness.OptInLabel: "enabled"})
}

func namespace(t *testing.T, labels map[string]string) string {
	t.Helper()
	nsSeq.Lock()
	nsSeq.n++
	name := fmt.Sprintf("e2e-%d-%d", time.Now().UnixNano()%100000, nsSeq.n)
	nsSeq.Unlock()
	if err := stack.Cluster.CreateNamespace(context.Background(), name, labels); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	return name
}

func pod(name string, images ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: img})
	}
	return p
}

// createPod creates p in ns and returns the stored pod and the admission
// warnings the client received.
func createPod(t *testing.T, ns string, p *corev1.Pod, opts ...func(*metav1.CreateOptions)) (*corev1.Pod, []string) {
	t.Helper()
	var w harness.Warnings
	cs, err := stack.Cluster.Clientset(&w)
	if err != nil {
		t.Fatal(err)
	}
	co := metav1.CreateOptions{}
	for _, o := range opts {
		o(&co)
	}
	got, err := cs.CoreV1().Pods(ns).Create(context.Background(), p, co)
	if err != nil {
		t.Fatalf("pod creation must never be blocked: %v", err)
	}
	return got, w.List()
}

func pullSecretNames(p *corev1.Pod) []string {
	var names []string
	for _, r := range p.Spec.ImagePullSecrets {
		names = append(names, r.Name)
	}
	return names
}

func getSecret(t *testing.T, ns, name string) (*corev1.Secret, bool) {
	t.Helper()
	s := &corev1.Secret{}
	err := stack.Cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s)
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return s, true
}

func metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	v, err := stack.Webhook.Metric(name, labels)
	if err != nil {
		t.Fatalf("scraping %s: %v", name, err)
	}
	return v
}

// pull fetches the image manifest with the namespace's pull secrets, the
// way kubelet resolves them.
func pull(ns, image string, secretNames []string) error {
	var secrets []corev1.Secret
	for _, n := range secretNames {
		s := corev1.Secret{}
		if err := stack.Cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: n}, &s); err != nil {
			return err
		}
		secrets = append(secrets, s)
	}
	return stack.Emu.Registry.PullManifest(context.Background(), image, secrets)
}

func restartWebhook(t *testing.T, id harness.Identity) {
	t.Helper()
	if err := stack.StartWebhook(context.Background(), id); err != nil {
		t.Fatalf("restarting the webhook: %v", err)
	}
}

// --- scenarios ---------------------------------------------------------------

func TestOptedInPodGetsAWorkingPullSecretAndOtherRegistriesAreLeftAlone(t *testing.T) {
	ns := optedIn(t)
	got, warnings := createPod(t, ns, pod("app", stack.Image, "docker.io/library/busybox:1.36"))

	if names := pullSecretNames(got); len(names) != 1 || names[0] != "artifactory-pull" {
		t.Fatalf("stored pod imagePullSecrets = %v, want [artifactory-pull] (warnings %v)", names, warnings)
	}
	if got.Spec.Containers[1].Image != "docker.io/library/busybox:1.36" {
		t.Errorf("second container changed: %s", got.Spec.Containers[1].Image)
	}
	s, ok := getSecret(t, ns, "artifactory-pull")
	if !ok {
		t.Fatal("pull secret not written")
	}
	if s.Type != corev1.SecretTypeDockerConfigJson {
		t.Errorf("type = %s", s.Type)
	}
	if s.Labels[pullsecret.ManagedByLabel] != pullsecret.ManagedByValue {
		t.Errorf("labels = %v", s.Labels)
	}
	exp, err := time.Parse(time.RFC3339, s.Annotations[pullsecret.AnnotationExpiresAt])
	if err != nil || time.Until(exp) < 30*time.Minute {
		t.Errorf("expires-at annotation = %q (%v), want about an hour ahead", s.Annotations[pullsecret.AnnotationExpiresAt], err)
	}
	user, _, err := pullsecret.ParseDockerConfigJSON(s.Data[corev1.DockerConfigJsonKey], stack.Emu.Registry.Host())
	if err != nil || user != stack.Emu.Username {
		t.Errorf("dockerconfig for %s: user %q, err %v; want %q", stack.Emu.Registry.Host(), user, err, stack.Emu.Username)
	}
	if err := pull(ns, stack.Image, []string{"artifactory-pull"}); err != nil {
		t.Errorf("pulling %s with the written secret: %v", stack.Image, err)
	}
	if err := pull(ns, stack.Image, nil); err == nil {
		t.Error("the registry served the image without credentials: the pull check proves nothing")
	}
}

func TestEachAWSIdentityWorksEndToEnd(t *testing.T) {
	for _, id := range []harness.Identity{harness.IRSA, harness.PodIdentity} {
		t.Run(string(id), func(t *testing.T) {
			// A new process with no valid Secret of the faulty instance to
			// seed from must mint with this identity.
			forgetInstance(t, "faulty", "artifactory-pull-faulty")
			restartWebhook(t, id)
			before := stack.Emu.Artifactory.Exchanges()
			ns := optedIn(t)
			image := stack.FaultyHost + "/team/app:1.0"
			got, warnings := createPod(t, ns, pod("app", image))
			if names := pullSecretNames(got); len(names) != 1 || names[0] != "artifactory-pull-faulty" {
				t.Fatalf("imagePullSecrets = %v, warnings %v", names, warnings)
			}
			if d := stack.Emu.Artifactory.Exchanges() - before; d < 1 {
				t.Errorf("no exchange happened with %s credentials", id)
			}
		})
	}
}

func TestNotOptedInNamespaceAndOptedOutPodAreUntouched(t *testing.T) {
	plain := namespace(t, nil)
	got, _ := createPod(t, plain, pod("app", stack.Image))
	if len(got.Spec.ImagePullSecrets) != 0 {
		t.Errorf("pod in a namespace without the label was patched: %v", pullSecretNames(got))
	}
	if _, ok := getSecret(t, plain, "artifactory-pull"); ok {
		t.Error("secret written in a namespace that did not opt in")
	}

	ns := optedIn(t)
	p := pod("opted-out", stack.Image)
	p.Labels = map[string]string{harness.OptInLabel: "disabled"}
	got, _ = createPod(t, ns, p)
	if len(got.Spec.ImagePullSecrets) != 0 {
		t.Errorf("opted-out pod was patched: %v", pullSecretNames(got))
	}
	if _, ok := getSecret(t, ns, "artifactory-pull"); ok {
		t.Error("secret written for an opted-out pod")
	}
}

func TestServerSideDryRunIsPatchedButWritesNothing(t *testing.T) {
	ns := optedIn(t)
	got, warnings := createPod(t, ns, pod("dry", stack.Image), func(o *metav1.CreateOptions) { o.DryRun = []string{metav1.DryRunAll} })
	if names := pullSecretNames(got); len(names) != 1 || names[0] != "artifactory-pull" {
		t.Errorf("dry-run response imagePullSecrets = %v (warnings %v)", names, warnings)
	}
	if _, ok := getSecret(t, ns, "artifactory-pull"); ok {
		t.Error("a dry-run request wrote a Secret")
	}
	p := &corev1.Pod{}
	if err := stack.Cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "dry"}, p); !apierrors.IsNotFound(err) {
		t.Errorf("dry-run pod was stored (err %v)", err)
	}
}

func TestBurstAcrossFreshNamespacesMakesOneExchange(t *testing.T) {
	forgetInstance(t, "burst", "artifactory-pull-burst")
	restartWebhook(t, harness.PodIdentity) // the burst instance's key starts cold
	before := stack.Emu.Artifactory.Exchanges()
	const namespaces, perNamespace = 10, 20
	image := stack.BurstHost + "/" + harness.ImageRepo + ":" + harness.ImageTag
	nss := make([]string, namespaces)
	for i := range nss {
		nss[i] = optedIn(t)
	}
	var wg sync.WaitGroup
	errs := make(chan error, namespaces*perNamespace)
	cs, err := stack.Cluster.Clientset(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range nss {
		for j := 0; j < perNamespace; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := cs.CoreV1().Pods(ns).Create(context.Background(), pod(fmt.Sprintf("p%d", j), image), metav1.CreateOptions{})
				if err != nil {
					errs <- err
					return
				}
				if n := pullSecretNames(got); len(n) != 1 || n[0] != "artifactory-pull-burst" {
					errs <- fmt.Errorf("%s/%s: imagePullSecrets %v", ns, got.Name, n)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, ns := range nss {
		if _, ok := getSecret(t, ns, "artifactory-pull-burst"); !ok {
			t.Errorf("namespace %s has no pull secret", ns)
		}
	}
	if d := stack.Emu.Artifactory.Exchanges() - before; d != 1 {
		t.Errorf("exchanges for %d pods in %d namespaces = %d, want exactly 1", namespaces*perNamespace, namespaces, d)
	}
	if err := pull(nss[0], image, []string{"artifactory-pull-burst"}); err != nil {
		t.Errorf("pull via the burst host: %v", err)
	}
}

func TestRestartWithValidSecretsMakesNoNewExchange(t *testing.T) {
	ns := optedIn(t)
	got, _ := createPod(t, ns, pod("before", stack.Image))
	if len(got.Spec.ImagePullSecrets) != 1 {
		t.Fatalf("precondition: pod not patched")
	}
	restartWebhook(t, harness.PodIdentity)
	before := stack.Emu.Artifactory.Attempts()
	fresh := optedIn(t)
	got, warnings := createPod(t, fresh, pod("after", stack.Image))
	if n := pullSecretNames(got); len(n) != 1 {
		t.Fatalf("pod after restart not patched: %v %v", n, warnings)
	}
	if d := stack.Emu.Artifactory.Attempts() - before; d != 0 {
		t.Errorf("restart made %d exchange attempts, want 0 (cache seeded from valid Secrets)", d)
	}
	if err := pull(fresh, stack.Image, []string{"artifactory-pull"}); err != nil {
		t.Errorf("pull with the seeded token: %v", err)
	}
}

func TestArtifactoryFailuresFailOpenAndRecover(t *testing.T) {
	cases := []struct {
		name   string
		break_ func()
		fix    func()
		reason string
	}{
		{"down", func() { stack.Emu.Artifactory.SetDown(true) }, func() { stack.Emu.Artifactory.SetDown(false) }, "503"},
		{"401 with a body", func() {
			stack.Emu.Artifactory.SetStatus(401, `{"errors":[{"status":401,"message":"no user is mapped to IAM role arn:aws:iam::123456789012:role/artifactory-puller"}]}`)
		}, func() { stack.Emu.Artifactory.SetStatus(0, "") }, "no user is mapped"},
	}
	image := stack.FaultyHost + "/team/app:1.0"
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forgetInstance(t, "faulty", "artifactory-pull-faulty")
			restartWebhook(t, harness.PodIdentity) // cold cache: the next pod must exchange
			tc.break_()
			defer tc.fix()
			failedBefore := metric(t, "artifactory_pull_admissions_total", map[string]string{"outcome": "failed_open"})
			ns := optedIn(t)
			got, warnings := createPod(t, ns, pod("app", image))
			if len(got.Spec.ImagePullSecrets) != 0 {
				t.Errorf("pod references a secret that could not be written: %v", pullSecretNames(got))
			}
			if _, ok := getSecret(t, ns, "artifactory-pull-faulty"); ok {
				t.Error("a secret was written without a token")
			}
			joined := strings.Join(warnings, "\n")
			if !strings.Contains(joined, "faulty") || !strings.Contains(joined, tc.reason) {
				t.Errorf("warnings %q do not name the instance and %q", warnings, tc.reason)
			}
			if d := metric(t, "artifactory_pull_admissions_total", map[string]string{"outcome": "failed_open"}) - failedBefore; d != 1 {
				t.Errorf("failed_open admissions grew by %v, want 1", d)
			}
			if v := metric(t, "artifactory_pull_token_exchanges_total", map[string]string{"instance": "faulty", "result": "success"}); v != 0 {
				t.Errorf("exchange successes recorded during the fault: %v", v)
			}
			eventually(t, 10*time.Second, "a TokenExchangeFailed Event in the pod's namespace", func() bool {
				return hasEvent(t, ns, pullsecret.ReasonTokenExchangeFailed, "pods admitted without the pull secret of instance faulty")
			})

			tc.fix()
			got, warnings = createPod(t, ns, pod("after", image))
			if n := pullSecretNames(got); len(n) != 1 || n[0] != "artifactory-pull-faulty" {
				t.Errorf("after recovery imagePullSecrets = %v (warnings %v)", n, warnings)
			}
		})
	}
}

// forgetInstance removes every Secret of an instance and its token from the
// checkpoint, so that a restarted webhook starts cold for it, in every run
// of a test (go test -count=N). It stops the webhook first (the refresher
// would restore the Secrets); every caller starts it again.
func forgetInstance(t *testing.T, instance, secretName string) {
	t.Helper()
	stack.StopWebhook()
	ctx := context.Background()
	list := &corev1.SecretList{}
	if err := stack.Cluster.Client.List(ctx, list, client.MatchingLabels{pullsecret.ManagedByLabel: pullsecret.ManagedByValue}); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		s := &list.Items[i]
		if s.Name == secretName {
			if err := stack.Cluster.Client.Delete(ctx, s); err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
		}
	}
	cp, ok := getSecret(t, harness.WebhookNamespace, pullsecret.DefaultCheckpointSecret)
	if !ok {
		return
	}
	for k := range cp.Data {
		if strings.HasPrefix(k, instance+".") {
			delete(cp.Data, k)
		}
	}
	if err := stack.Cluster.Client.Update(ctx, cp); err != nil {
		t.Fatalf("removing the %s instance's token from the checkpoint: %v", instance, err)
	}
}

func TestForeignSecretWithTheManagedNameIsNotModified(t *testing.T) {
	ns := optedIn(t)
	foreign := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "artifactory-pull", Namespace: ns},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"owner": []byte("someone else")},
	}
	if err := stack.Cluster.Client.Create(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	got, warnings := createPod(t, ns, pod("app", stack.Image))
	if len(got.Spec.ImagePullSecrets) != 0 {
		t.Errorf("pod references a foreign secret: %v", pullSecretNames(got))
	}
	if !strings.Contains(strings.Join(warnings, "\n"), "artifactory-pull") {
		t.Errorf("no warning about the foreign secret: %v", warnings)
	}
	after, _ := getSecret(t, ns, "artifactory-pull")
	if after == nil || after.ResourceVersion != foreign.ResourceVersion || string(after.Data["owner"]) != "someone else" {
		t.Errorf("foreign secret modified: %+v", after)
	}
}
