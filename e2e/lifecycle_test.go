package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// leaderArgs turn on leader election with short durations, so that a
// takeover fits in a test.
var leaderArgs = []string{
	"--leader-election-namespace=" + harness.WebhookNamespace,
	"--leader-election-lease-duration=5s",
	"--leader-election-renew-deadline=4s",
	"--leader-election-retry-period=500ms",
}

// lifecycleConfig is a configuration with one instance on the stack's
// registry. Each test names its own instance, so that no token or Secret of
// another test is seeded or refreshed.
func lifecycleConfig(instance, ttl string, threshold float64) string {
	return fmt.Sprintf(`instances:
- name: %[1]s
  url: %[2]s
  registryHosts: [%[3]q]
  tokenTTL: %[4]s
  caBundle: %[5]s
  secretName: pull-%[1]s
aws:
  authType: podIdentity
  stsEndpoint: %[6]s
refreshThreshold: %[7]v
requestTimeout: 2s
provisionOnOptIn: false
backoffCap: 4s
`, instance, stack.Emu.Artifactory.URL(), stack.Emu.Registry.Host(), ttl,
		filepath.Join(stack.Dir, "artifactory-ca.pem"), stack.Emu.STS.URL(), threshold)
}

// runInstance is an instance name of base for this run of a test: Secrets
// that earlier runs (go test -count=N) left in their still opted-in
// namespaces, and their tokens in the checkpoint, belong to other names and
// are neither refreshed nor seeded with this run's.
func runInstance(base string) string {
	lifecycleRun++
	return fmt.Sprintf("%sr%d", base, lifecycleRun)
}

var lifecycleRun int

// startLifecycleWebhook restarts the stack's webhook with cfg and leader
// election, and restores the default webhook when the test ends.
func startLifecycleWebhook(t *testing.T, cfg string) {
	t.Helper()
	err := stack.StartWebhook(context.Background(), harness.PodIdentity, func(o *harness.WebhookOptions) {
		o.Config = cfg
		o.Args = append(o.Args, leaderArgs...)
	})
	if err != nil {
		t.Fatalf("starting the webhook: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() && stack.Webhook != nil {
			t.Log("webhook logs:\n" + stack.Webhook.Logs())
		}
		restartWebhook(t, harness.PodIdentity)
	})
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// patchedPod creates a pod of the stack's image in ns and checks it got
// secretName.
func patchedPod(t *testing.T, ns, name, secretName string) {
	t.Helper()
	got, warnings := createPod(t, ns, pod(name, stack.Image))
	if n := pullSecretNames(got); len(n) != 1 || n[0] != secretName {
		t.Fatalf("imagePullSecrets = %v, want [%s] (warnings %v)", n, secretName, warnings)
	}
}

// token reads the token a pull Secret carries for the stack's registry.
func token(t *testing.T, s *corev1.Secret) string {
	t.Helper()
	_, tok, err := pullsecret.ParseDockerConfigJSON(s.Data[corev1.DockerConfigJsonKey], stack.Emu.Registry.Host())
	if err != nil {
		return ""
	}
	return tok.Reveal()
}

func annotationTime(t *testing.T, s *corev1.Secret, key string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s.Annotations[key])
	if err != nil {
		t.Fatalf("annotation %s of %s/%s: %v", key, s.Namespace, s.Name, err)
	}
	return v
}

// hasEvent reports whether ns holds an Event with reason whose note
// contains substr.
func hasEvent(t *testing.T, ns, reason, substr string) bool {
	t.Helper()
	var list eventsv1.EventList
	if err := stack.Cluster.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		if e.Reason == reason && strings.Contains(e.Note, substr) {
			return true
		}
	}
	return false
}

func TestRefresherRenewsSecretsBeforeExpiryWithOneExchangePerRotation(t *testing.T) {
	instance := runInstance("rotate")
	secret := "pull-" + instance
	startLifecycleWebhook(t, lifecycleConfig(instance, "20s", 0.5))
	before := stack.Emu.Artifactory.Exchanges()
	nss := []string{optedIn(t), optedIn(t), optedIn(t)}
	for _, ns := range nss {
		patchedPod(t, ns, "app", secret)
	}
	first, _ := getSecret(t, nss[0], secret)
	firstToken, firstExpiry := token(t, first), annotationTime(t, first, pullsecret.AnnotationExpiresAt)

	// Watch every namespace's token until the first token has expired and
	// each namespace carries the same later token, with every exchange
	// made so far visible in the Secrets.
	seen := map[string][]string{}    // namespace → tokens in order
	issued := map[string]time.Time{} // token → issued-at
	settled := func() bool {
		var current string
		same := true
		for _, ns := range nss {
			s, ok := getSecret(t, ns, secret)
			if !ok {
				return false
			}
			tok := token(t, s)
			if l := seen[ns]; len(l) == 0 || l[len(l)-1] != tok {
				seen[ns] = append(seen[ns], tok)
				issued[tok] = annotationTime(t, s, pullsecret.AnnotationIssuedAt)
			}
			if current == "" {
				current = tok
			}
			same = same && tok == current
		}
		return same && current != firstToken && time.Now().After(firstExpiry.Add(time.Second)) &&
			stack.Emu.Artifactory.Exchanges()-before == len(issued)
	}
	eventually(t, 60*time.Second, "every namespace to carry a token newer than the expired first one", settled)

	t.Logf("%d exchanges for %d tokens across %d namespaces", stack.Emu.Artifactory.Exchanges()-before, len(issued), len(nss))
	for _, ns := range nss[1:] {
		if fmt.Sprint(seen[ns]) != fmt.Sprint(seen[nss[0]]) {
			t.Errorf("namespaces saw different tokens (%d vs %d rotations): one exchange per namespace instead of per rotation",
				len(seen[ns]), len(seen[nss[0]]))
		}
	}
	if len(issued) < 2 {
		t.Fatalf("tokens seen = %d, want the first and at least one refresh", len(issued))
	}
	second := seen[nss[0]][1]
	if !issued[second].Before(firstExpiry) {
		t.Errorf("second token issued at %s, not before the first one expired at %s", issued[second], firstExpiry)
	}
	if err := pull(nss[0], stack.Image, []string{secret}); err != nil {
		t.Errorf("pull with the refreshed Secret after the first token expired: %v", err)
	}
	if err := stack.Emu.Registry.PullManifest(context.Background(), stack.Image, []corev1.Secret{*first}); err == nil {
		t.Error("the first, expired token still pulls: the check above proves nothing")
	}
}

func TestDeletedOrEditedSecretIsRestoredWithoutANewPod(t *testing.T) {
	instance := runInstance("heal")
	secret := "pull-" + instance
	startLifecycleWebhook(t, lifecycleConfig(instance, "1h", 0.25))
	ns := optedIn(t)
	patchedPod(t, ns, "app", secret)
	orig, _ := getSecret(t, ns, secret)

	if err := stack.Cluster.Client.Delete(context.Background(), orig); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the deleted Secret to be recreated", func() bool {
		s, ok := getSecret(t, ns, secret)
		return ok && s.UID != orig.UID
	})
	if err := pull(ns, stack.Image, []string{secret}); err != nil {
		t.Errorf("pull with the recreated Secret: %v", err)
	}

	edited, _ := getSecret(t, ns, secret)
	edited.Data[corev1.DockerConfigJsonKey] = []byte(`{"auths":{"` + stack.Emu.Registry.Host() + `":{"auth":"aGFuZDplZGl0ZWQ="}}}`)
	if err := stack.Cluster.Client.Update(context.Background(), edited); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the edited Secret to be restored", func() bool {
		s, ok := getSecret(t, ns, secret)
		return ok && token(t, s) != "edited" && token(t, s) != ""
	})
	if err := pull(ns, stack.Image, []string{secret}); err != nil {
		t.Errorf("pull with the restored Secret: %v", err)
	}
	eventually(t, 10*time.Second, "a PullSecretRestored Event in the namespace", func() bool {
		return hasEvent(t, ns, pullsecret.ReasonRestored, secret)
	})
	var pods corev1.PodList
	if err := stack.Cluster.Client.List(context.Background(), &pods, client.InNamespace(ns)); err != nil || len(pods.Items) != 1 {
		t.Errorf("pods in %s = %d (err %v), want the one created before: restoring needs no new pod", ns, len(pods.Items), err)
	}
}

func TestNamespaceOptOutDeletesOnlyTheManagedSecret(t *testing.T) {
	instance := runInstance("optout")
	secret := "pull-" + instance
	startLifecycleWebhook(t, lifecycleConfig(instance, "1h", 0.25))
	ns := optedIn(t)
	patchedPod(t, ns, "app", secret)
	foreign := &corev1.Secret{}
	foreign.Namespace, foreign.Name = ns, "team-registry"
	foreign.Data = map[string][]byte{"owner": []byte("the team")}
	if err := stack.Cluster.Client.Create(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}

	nsObj := &corev1.Namespace{}
	if err := stack.Cluster.Client.Get(context.Background(), client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	delete(nsObj.Labels, harness.OptInLabel)
	if err := stack.Cluster.Client.Update(context.Background(), nsObj); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the managed Secret of the opted-out namespace to be deleted", func() bool {
		_, ok := getSecret(t, ns, secret)
		return !ok
	})
	if s, ok := getSecret(t, ns, "team-registry"); !ok || string(s.Data["owner"]) != "the team" {
		t.Errorf("the unmanaged Secret was deleted or changed: %v", s)
	}
	eventually(t, 10*time.Second, "a PullSecretDeleted Event in the namespace", func() bool {
		return hasEvent(t, ns, pullsecret.ReasonDeleted, secret)
	})
}

func TestUnmappedRoleBacksOffThenRecoversWithoutRestart(t *testing.T) {
	// 20s tokens due for refresh after 5s; retries wait up to 4s.
	instance := runInstance("backoff")
	secret := "pull-" + instance
	startLifecycleWebhook(t, lifecycleConfig(instance, "20s", 0.75))
	ns := optedIn(t)
	patchedPod(t, ns, "app", secret)
	orig, _ := getSecret(t, ns, secret)
	origExpiry := annotationTime(t, orig, pullsecret.AnnotationExpiresAt)

	stack.Emu.Artifactory.RemoveMapping(stack.Emu.RoleARN)
	defer stack.Emu.Artifactory.SetMapping(stack.Emu.RoleARN, stack.Emu.Username)
	base := stack.Emu.Artifactory.Attempts()
	eventually(t, 30*time.Second, "the refresher's first attempt after the mapping was removed", func() bool {
		return stack.Emu.Artifactory.Attempts() > base
	})
	firstFailure := time.Now()
	const window = 12 * time.Second
	time.Sleep(window) // the attempts of this window are what the test counts
	attempts := stack.Emu.Artifactory.Attempts() - base
	// With the shortest jitter the retries wait 1s, 1s, 1s, then 2s (half
	// the 4s cap): at most 4 attempts in the first 3s and one per 2s after.
	// A hot loop would make hundreds.
	elapsed := time.Since(firstFailure)
	maxAttempts := 4 + int((elapsed-3*time.Second)/(2*time.Second)) + 1
	t.Logf("%d exchange attempts in the %s after the first failure (bound %d)", attempts, elapsed.Round(100*time.Millisecond), maxAttempts)
	if attempts > maxAttempts || attempts < 3 {
		t.Errorf("%d exchange attempts in %s of a permanent 401, want between 3 and %d (backoff capped at 4s)",
			attempts, elapsed.Round(time.Second), maxAttempts)
	}
	if v := metric(t, "artifactory_pull_token_consecutive_failures", map[string]string{"instance": instance}); int(v) < 3 {
		t.Errorf("consecutive failures metric = %v, want the failed attempts", v)
	}
	eventually(t, 10*time.Second, "a TokenExchangeFailed Event naming Artifactory's reason", func() bool {
		return hasEvent(t, ns, pullsecret.ReasonTokenExchangeFailed, "no user is mapped")
	})

	stack.Emu.Artifactory.SetMapping(stack.Emu.RoleARN, stack.Emu.Username)
	eventually(t, 15*time.Second, "the Secret to be refreshed once the mapping exists", func() bool {
		s, ok := getSecret(t, ns, secret)
		return ok && annotationTime(t, s, pullsecret.AnnotationExpiresAt).After(origExpiry)
	})
	if err := pull(ns, stack.Image, []string{secret}); err != nil {
		t.Errorf("pull after recovery: %v", err)
	}
	if v := metric(t, "artifactory_pull_token_consecutive_failures", map[string]string{"instance": instance}); v != 0 {
		t.Errorf("consecutive failures after recovery = %v, want 0", v)
	}
}

// startReplicaB starts a second replica of the webhook with cfg and leader
// election, which the API server does not call, and stops it when the test
// ends.
func startReplicaB(t *testing.T, cfg string) *harness.Webhook {
	t.Helper()
	o, err := stack.WebhookOptions(context.Background(), harness.PodIdentity)
	if err != nil {
		t.Fatal(err)
	}
	o.Config, o.Addr, o.Dir = cfg, "", filepath.Join(stack.Dir, "webhook-b")
	o.Args = append(o.Args, leaderArgs...)
	b, err := harness.StartWebhook(context.Background(), o)
	if err != nil {
		t.Fatalf("starting replica B: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("replica B logs:\n" + b.Logs())
		}
		b.Stop()
	})
	return b
}

func TestLeaderLossHandsRefreshToTheOtherReplica(t *testing.T) {
	instance := runInstance("ha")
	cfg := lifecycleConfig(instance, "20s", 0.5)
	startLifecycleWebhook(t, cfg) // replica A, called by the API server
	secret := "pull-" + instance
	leader := map[string]string{"name": "artifactory-pull-webhook"}
	eventually(t, 20*time.Second, "replica A to lead", func() bool {
		return metric(t, "leader_election_master_status", leader) == 1
	})
	b := startReplicaB(t, cfg)
	bMetric := func(name string, labels map[string]string) float64 {
		v, err := b.Metric(name, labels)
		if err != nil {
			t.Fatalf("scraping replica B: %v", err)
		}
		return v
	}
	if bMetric("leader_election_master_status", leader) != 0 {
		t.Fatal("replica B leads while A holds the lease")
	}

	ns := optedIn(t)
	patchedPod(t, ns, "app", secret)
	orig, _ := getSecret(t, ns, secret)
	stack.Webhook.Kill()
	killed := time.Now()

	eventually(t, 40*time.Second, "replica B to take over and refresh the Secret", func() bool {
		s, ok := getSecret(t, ns, secret)
		return ok && token(t, s) != token(t, orig) &&
			bMetric("artifactory_pull_lifecycle_actions_total", map[string]string{"instance": instance, "action": "refreshed"}) >= 1
	})
	t.Logf("replica B refreshed the Secret %s after the leader was killed", time.Since(killed).Round(100*time.Millisecond))
	if bMetric("leader_election_master_status", leader) != 1 {
		t.Error("replica B refreshed without leading")
	}
	if err := pull(ns, stack.Image, []string{secret}); err != nil {
		t.Errorf("pull with the Secret refreshed by replica B: %v", err)
	}
}

func TestTokenPlantedInATenantSecretIsNeverSeededAfterARestart(t *testing.T) {
	// A tenant who may edit Secrets in its own opted-in namespace plants a
	// managed pull Secret with a bogus token and a far-future expiry while
	// the webhook is down (so the refresher cannot overwrite it first).
	host := stack.Emu.Registry.Host()
	tenant := optedIn(t)
	stack.StopWebhook()
	t.Cleanup(func() {
		if stack.Webhook == nil {
			restartWebhook(t, harness.PodIdentity)
		}
	})
	const planted = "planted-token"
	data, err := pullsecret.DockerConfigJSON([]string{host}, "attacker", credentials.NewToken(planted))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	plant := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "artifactory-pull", Namespace: tenant,
			Labels: map[string]string{pullsecret.ManagedByLabel: pullsecret.ManagedByValue},
			Annotations: map[string]string{
				pullsecret.AnnotationInstance:  "main",
				pullsecret.AnnotationIdentity:  credentials.WebhookIdentity,
				pullsecret.AnnotationHosts:     host,
				pullsecret.AnnotationIssuedAt:  now.Format(time.RFC3339),
				pullsecret.AnnotationExpiresAt: now.Add(10 * 365 * 24 * time.Hour).Format(time.RFC3339),
			}},
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: data},
	}
	if err := stack.Cluster.Client.Create(context.Background(), plant); err != nil {
		t.Fatal(err)
	}
	restartWebhook(t, harness.PodIdentity)

	fresh := optedIn(t)
	patchedPod(t, fresh, "app", "artifactory-pull")
	s, _ := getSecret(t, fresh, "artifactory-pull")
	if token(t, s) == planted {
		t.Fatal("the planted token was seeded and copied into another namespace")
	}
	if err := pull(fresh, stack.Image, []string{"artifactory-pull"}); err != nil {
		t.Errorf("pull with the Secret written after the restart: %v", err)
	}
	eventually(t, 15*time.Second, "the refresher to replace the planted token in the tenant's namespace", func() bool {
		s, ok := getSecret(t, tenant, "artifactory-pull")
		return ok && token(t, s) != planted && token(t, s) != ""
	})
}
