package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// fault is one row of the fault matrix: a way the world breaks, what the
// webhook must say about it, and how the world heals.
type fault struct {
	name string
	// inject breaks the world and returns what heals it.
	inject func(t *testing.T) (heal func())
	// cold restarts the webhook after inject: faults of the AWS
	// credential source only show in a process that has no credentials yet.
	cold bool
	// reason must appear in the admission warning and the Event: the cause
	// as the failing service states it.
	reason string
	// result is the artifactory_pull_token_exchanges_total label naming it.
	result string
}

// faultInstance is the name, registry host and Secret of the matrix row i:
// each row has an instance of its own, so its token cache starts cold and
// no backoff or token of another row leaks into it.
func faultInstance(i int) (name, host, secret string) {
	return fmt.Sprintf("fault%d", i), fmt.Sprintf("fault%d.registry.test", i), fmt.Sprintf("pull-fault%d", i)
}

// faultConfig is the stack's config plus one instance per matrix row.
// Their exchanges give up after 1s, so "slow" costs a second, not four.
func faultConfig(rows int) string {
	var b strings.Builder
	for i := range rows {
		name, host, secret := faultInstance(i)
		fmt.Fprintf(&b, "- name: %s\n  url: %s\n  registryHosts: [%q]\n  tokenTTL: 1h\n  caBundle: %s\n  secretName: %s\n  exchangeTimeout: 1s\n",
			name, stack.Emu.Artifactory.URL(), host, filepath.Join(stack.Dir, "artifactory-ca.pem"), secret)
	}
	cfg := stack.Config(harness.PodIdentity)
	before, after, ok := strings.Cut(cfg, "aws:\n")
	if !ok {
		panic("stack config has no aws: section to insert instances before")
	}
	return before + b.String() + "aws:\n" + after
}

// TestFaultMatrixFailsOpenExplainsAndRecoversWithoutRestart breaks each
// dependency in turn and checks the same promises every time: the pod is
// created, it references no Secret that is missing or invalid, the warning,
// the Event and the metric name the failure with the failing service's own
// reason, and once the fault clears a new pod is patched by the same process.
func TestFaultMatrixFailsOpenExplainsAndRecoversWithoutRestart(t *testing.T) {
	artifactoryStatus := func(code int, body string) func(*testing.T) func() {
		return func(*testing.T) func() {
			stack.Emu.Artifactory.SetStatus(code, body)
			return func() { stack.Emu.Artifactory.SetStatus(0, "") }
		}
	}
	const leaked = "cmVmdGtuOjAxOjE3NjAwMDAwMDA6QWJDZEVmR2hJaktsTW5PcFFyU3RVdld4WXo"
	tokenJSON := func(token, user string) string {
		return fmt.Sprintf(`{"token_id":"t","access_token":%q,"scope":"applied-permissions/user","token_type":"Bearer","expires_in":3600,"username":%q}`, token, user)
	}
	tokenFile := filepath.Join(t.TempDir(), "eks-pod-identity-token")
	writeToken := func(v string) {
		if err := os.WriteFile(tokenFile, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeToken(stack.Emu.PodIdentityToken)

	rows := []fault{
		{name: "artifactory down", inject: func(*testing.T) func() {
			stack.Emu.Artifactory.SetDown(true)
			return func() { stack.Emu.Artifactory.SetDown(false) }
		}, reason: "Artifactory is down", result: "server_error"},
		{name: "artifactory slower than the exchange timeout", inject: func(*testing.T) func() {
			stack.Emu.Artifactory.SetDelay(3 * time.Second)
			return func() { stack.Emu.Artifactory.SetDelay(0) }
		}, reason: "Client.Timeout", result: "timeout"},
		{name: "500", inject: artifactoryStatus(500, `{"errors":[{"status":500,"message":"database connection pool exhausted"}]}`),
			reason: "database connection pool exhausted", result: "server_error"},
		{name: "401 with a body", inject: artifactoryStatus(401, `{"errors":[{"status":401,"message":"no user is mapped to IAM role arn:aws:iam::123456789012:role/artifactory-puller"}]}`),
			reason: "no user is mapped", result: "unauthorized"},
		{name: "403", inject: artifactoryStatus(403, `{"errors":[{"status":403,"message":"expires_in exceeds the admin limit"}]}`),
			reason: "exceeds the admin limit", result: "forbidden"},
		{name: "garbage JSON", inject: artifactoryStatus(200, `<html><body>Sign in to JFrog</body></html>`),
			reason: "Sign in to JFrog", result: "bad_response"},
		{name: "200 without a token", inject: artifactoryStatus(200, `{"token_id":"t","username":"k8s-puller","expires_in":3600}`),
			reason: "no access_token", result: "bad_response"},
		{name: "empty username", inject: artifactoryStatus(200, tokenJSON(leaked, "")),
			reason: `username ""`, result: "bad_response"},
		{name: "anonymous username", inject: artifactoryStatus(200, tokenJSON(leaked, "anonymous")),
			reason: `username "anonymous"`, result: "bad_response"},
		{name: "STS denies", inject: func(*testing.T) func() {
			stack.Emu.STS.SetDeny(true)
			return func() { stack.Emu.STS.SetDeny(false) }
		}, reason: "AccessDenied", result: "unauthorized"},
		{name: "clock skew", inject: func(*testing.T) func() {
			stack.Emu.STS.SetClockSkew(30 * time.Minute)
			return func() { stack.Emu.STS.SetClockSkew(0) }
		}, reason: "Signature expired", result: "unauthorized"},
		{name: "pod identity agent down", cold: true, inject: func(*testing.T) func() {
			stack.Emu.PodIdentity.SetDown(true)
			return func() { stack.Emu.PodIdentity.SetDown(false) }
		}, reason: "pod identity agent is down", result: "credentials"},
		{name: "pod identity wrong token", cold: true, inject: func(*testing.T) func() {
			writeToken("not-the-projected-token")
			return func() { writeToken(stack.Emu.PodIdentityToken) }
		}, reason: "not valid for this association", result: "credentials"},
	}

	cfg := faultConfig(len(rows))
	start := func(t *testing.T) {
		t.Helper()
		err := stack.StartWebhook(context.Background(), harness.PodIdentity, func(o *harness.WebhookOptions) {
			o.Config = cfg
			for i, kv := range o.Env {
				if strings.HasPrefix(kv, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=") {
					o.Env[i] = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=" + tokenFile
				}
			}
		})
		if err != nil {
			t.Fatalf("starting the webhook: %v", err)
		}
	}
	start(t)
	t.Cleanup(func() {
		if t.Failed() && stack.Webhook != nil {
			t.Log("webhook logs:\n" + stack.Webhook.Logs())
		}
		restartWebhook(t, harness.PodIdentity)
	})

	for i, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			instance, host, secret := faultInstance(i)
			image := host + "/team/app:1.0"
			heal := row.inject(t)
			defer heal()
			if row.cold {
				start(t)
			}
			failuresBefore := metric(t, "artifactory_pull_token_exchanges_total", map[string]string{"instance": instance, "result": row.result})
			openBefore := metric(t, "artifactory_pull_admissions_total", map[string]string{"outcome": "failed_open"})

			ns := optedIn(t)
			got, warnings := createPod(t, ns, pod("during", image))
			assertReferencedSecretsUsable(t, ns, got, host)
			if len(got.Spec.ImagePullSecrets) != 0 {
				t.Errorf("pod references %v although no token could be had", pullSecretNames(got))
			}
			joined := strings.Join(warnings, "\n")
			if !strings.Contains(joined, instance) || !strings.Contains(joined, row.reason) {
				t.Errorf("warnings %q do not name instance %s and the reason %q", warnings, instance, row.reason)
			}
			if strings.Contains(joined, leaked) {
				t.Errorf("a warning carries the token of the rejected response: %q", warnings)
			}
			if d := metric(t, "artifactory_pull_token_exchanges_total", map[string]string{"instance": instance, "result": row.result}) - failuresBefore; d < 1 {
				t.Errorf("token_exchanges_total{instance=%s,result=%s} did not grow", instance, row.result)
			}
			if d := metric(t, "artifactory_pull_admissions_total", map[string]string{"outcome": "failed_open"}) - openBefore; d != 1 {
				t.Errorf("failed_open admissions grew by %v, want 1", d)
			}
			waitFor(t, 10*time.Second, "a TokenExchangeFailed Event naming the reason", func() bool {
				return namespaceEventContains(t, ns, "TokenExchangeFailed", row.reason)
			})

			heal()
			n := 0
			waitFor(t, 20*time.Second, "a pod patched by the same process after the fault cleared", func() bool {
				n++
				got, _ := createPod(t, ns, pod(fmt.Sprintf("after-%d", n), image))
				assertReferencedSecretsUsable(t, ns, got, host)
				return slices.Equal(pullSecretNames(got), []string{secret})
			})
		})
	}
}

// TestSecretWriteForbiddenFailsOpenAndRecoversWhenRBACIsFixed runs the
// webhook as a user whose RBAC lacks secrets create: the token is minted but
// the Secret cannot be written, so the pod must not reference it. Granting
// create heals it without a restart.
func TestSecretWriteForbiddenFailsOpenAndRecoversWhenRBACIsFixed(t *testing.T) {
	ctx := context.Background()
	c := stack.Cluster.Client
	const user = "apw-e2e-no-secret-create"
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces", "secrets"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"update", "patch", "delete"}},
			{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: user},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_ = c.Delete(ctx, binding)
		_ = c.Delete(ctx, role)
	})
	limited, err := stack.Cluster.Env.ControlPlane.AddUser(envtest.User{Name: user}, stack.Cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := limited.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	instance, host, secret := faultInstance(0)
	cfg := faultConfig(1)
	if err := stack.StartWebhook(ctx, harness.PodIdentity, func(o *harness.WebhookOptions) {
		o.Config, o.Kubeconfig = cfg, kcPath
	}); err != nil {
		t.Fatalf("starting the webhook as %s: %v", user, err)
	}
	t.Cleanup(func() {
		if t.Failed() && stack.Webhook != nil {
			t.Log("webhook logs:\n" + stack.Webhook.Logs())
		}
		restartWebhook(t, harness.PodIdentity)
	})

	image := host + "/team/app:1.0"
	ns := optedIn(t)
	got, warnings := createPod(t, ns, pod("during", image))
	assertReferencedSecretsUsable(t, ns, got, host)
	if len(got.Spec.ImagePullSecrets) != 0 {
		t.Errorf("pod references %v although the Secret could not be written", pullSecretNames(got))
	}
	joined := strings.Join(warnings, "\n")
	if !strings.Contains(joined, instance) || !strings.Contains(joined, "forbidden") {
		t.Errorf("warnings %q do not name instance %s and the API server's refusal", warnings, instance)
	}
	if v := metric(t, "artifactory_pull_secret_writes_total", map[string]string{"operation": "create", "result": "error"}); v < 1 {
		t.Errorf("secret_writes_total{operation=create,result=error} = %v, want the refused write", v)
	}

	role.Rules = append(role.Rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}})
	if err := c.Update(ctx, role); err != nil {
		t.Fatal(err)
	}
	n := 0
	waitFor(t, 20*time.Second, "a pod patched once secrets create is granted", func() bool {
		n++
		got, _ := createPod(t, ns, pod(fmt.Sprintf("after-%d", n), image))
		assertReferencedSecretsUsable(t, ns, got, host)
		return slices.Equal(pullSecretNames(got), []string{secret})
	})
}

// assertReferencedSecretsUsable fails when p references a Secret that does
// not exist, or a managed one whose token for host is missing or expired.
func assertReferencedSecretsUsable(t *testing.T, ns string, p *corev1.Pod, host string) {
	t.Helper()
	for _, name := range pullSecretNames(p) {
		s, ok := getSecret(t, ns, name)
		if !ok {
			t.Errorf("pod %s references Secret %s/%s, which does not exist", p.Name, ns, name)
			continue
		}
		if s.Labels[pullsecret.ManagedByLabel] != pullsecret.ManagedByValue {
			continue
		}
		exp, err := time.Parse(time.RFC3339, s.Annotations[pullsecret.AnnotationExpiresAt])
		if err != nil || !exp.After(time.Now()) {
			t.Errorf("pod %s references Secret %s/%s that expired (%q)", p.Name, ns, name, s.Annotations[pullsecret.AnnotationExpiresAt])
		}
		user, tok, err := pullsecret.ParseDockerConfigJSON(s.Data[corev1.DockerConfigJsonKey], host)
		if err != nil || user != stack.Emu.Username || !slices.Contains(stack.Emu.Artifactory.IssuedTokens(), tok.Reveal()) {
			t.Errorf("pod %s references Secret %s/%s without a token Artifactory issued for %s (user %q, err %v)",
				p.Name, ns, name, host, user, err)
		}
	}
}

// namespaceEventContains reports whether an Event (events.k8s.io or core)
// in ns or about the Namespace ns (Events of a cluster-scoped object live in
// "default") has reason and a text containing substr.
func namespaceEventContains(t *testing.T, ns, reason, substr string) bool {
	t.Helper()
	var list eventsv1.EventList
	if err := stack.Cluster.Client.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		about := e.Namespace == ns || (e.Regarding.Kind == "Namespace" && e.Regarding.Name == ns)
		if about && e.Reason == reason && strings.Contains(e.Note, substr) {
			return true
		}
	}
	var core corev1.EventList
	if err := stack.Cluster.Client.List(context.Background(), &core); err != nil {
		t.Fatal(err)
	}
	for _, e := range core.Items {
		about := e.Namespace == ns || (e.InvolvedObject.Kind == "Namespace" && e.InvolvedObject.Name == ns)
		if about && e.Reason == reason && strings.Contains(e.Message, substr) {
			return true
		}
	}
	return false
}

// waitFor polls cond every 100ms until it holds, failing after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
