package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/certs"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
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
	// fix must appear in the warning and the Event too: what to change
	// (credentials.Explain's table).
	fix string
}

// faultInstance is the name, registry host and Secret of the matrix row i:
// each row has an instance of its own, so its token cache starts cold and
// no backoff or token of another row leaks into it.
func faultInstance(i int) (name, host, secret string) {
	name = fmt.Sprintf("fault%dr%d", i, faultRun)
	return name, name + ".registry.test", "pull-" + name
}

// faultRun numbers the fault configurations (faultConfig) of this process:
// each run of a test (go test -count=N) gets instances of its own, whose
// token cache and checkpoint entries start cold.
var faultRun int

// faultConfig is the stack's config plus one instance per matrix row.
// Their exchanges give up after 1s, so "slow" costs a second, not four.
func faultConfig(rows int) string {
	faultRun++
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
		}, reason: "Artifactory is down", result: "server_error", fix: "to fix: check the health of Artifactory's Access service"},
		{name: "artifactory slower than the exchange timeout", inject: func(*testing.T) func() {
			stack.Emu.Artifactory.SetDelay(3 * time.Second)
			return func() { stack.Emu.Artifactory.SetDelay(0) }
		}, reason: "Client.Timeout", result: "timeout", fix: "raise the instance's exchangeTimeout"},
		{name: "500", inject: artifactoryStatus(500, `{"errors":[{"status":500,"message":"database connection pool exhausted"}]}`),
			reason: "database connection pool exhausted", result: "server_error", fix: "Access service"},
		{name: "401 with a body", inject: artifactoryStatus(401, `{"errors":[{"status":401,"message":"no user is mapped to IAM role arn:aws:iam::123456789012:role/artifactory-puller"}]}`),
			reason: "no user is mapped", result: "unauthorized",
			fix: `to fix: map the role to an Artifactory user: PUT /access/api/v1/aws/iam_role {"username":"<user>","iam_role":"arn:aws:iam::123456789012:role/artifactory-puller"}`},
		{name: "403", inject: artifactoryStatus(403, `{"errors":[{"status":403,"message":"expires_in exceeds the admin limit"}]}`),
			reason: "exceeds the admin limit", result: "forbidden", fix: "lower the instance's tokenTTL (now 1h0m0s)"},
		// A proxy's error page: with its 1 KiB excerpt the Event note
		// would pass the API server's 1 KiB limit and be rejected whole.
		{name: "proxy error page of 4 KiB", inject: artifactoryStatus(502, proxyErrorPage(4096)),
			reason: "502 Bad Gateway from egress-proxy", result: "server_error", fix: "Access service"},
		// The API server drops a warning holding a control character.
		{name: "control characters in the body", inject: artifactoryStatus(500,
			"upstream \x1b[31mfailed\x1b[0m\x00\v\x7f: connection pool exhausted\r\n"),
			reason: "connection pool exhausted", result: "server_error", fix: "Access service"},
		{name: "garbage JSON", inject: artifactoryStatus(200, `<html><body>Sign in to JFrog</body></html>`),
			reason: "Sign in to JFrog", result: "bad_response", fix: "set the instance's url to Artifactory's base URL"},
		{name: "200 without a token", inject: artifactoryStatus(200, `{"token_id":"t","username":"k8s-puller","expires_in":3600}`),
			reason: "no access_token", result: "bad_response", fix: "set the instance's url to Artifactory's base URL"},
		{name: "empty username", inject: artifactoryStatus(200, tokenJSON(leaked, "")),
			reason: `username ""`, result: "bad_response", fix: "CVE-2026-42018"},
		{name: "anonymous username", inject: artifactoryStatus(200, tokenJSON(leaked, "anonymous")),
			reason: `username "anonymous"`, result: "bad_response", fix: "CVE-2026-42018"},
		{name: "STS denies", inject: func(*testing.T) func() {
			stack.Emu.STS.SetDeny(true)
			return func() { stack.Emu.STS.SetDeny(false) }
		}, reason: "AccessDenied", result: "unauthorized", fix: "check that the webhook's AWS credentials are current"},
		{name: "clock skew", inject: func(*testing.T) func() {
			stack.Emu.STS.SetClockSkew(30 * time.Minute)
			return func() { stack.Emu.STS.SetClockSkew(0) }
		}, reason: "Signature expired", result: "unauthorized", fix: "synchronise the node's clock"},
		{name: "pod identity agent down", cold: true, inject: func(*testing.T) func() {
			stack.Emu.PodIdentity.SetDown(true)
			return func() { stack.Emu.PodIdentity.SetDown(false) }
		}, reason: "pod identity agent is down", result: "credentials", fix: "check the Pod Identity association"},
		{name: "pod identity wrong token", cold: true, inject: func(*testing.T) func() {
			writeToken("not-the-projected-token")
			return func() { writeToken(stack.Emu.PodIdentityToken) }
		}, reason: "not valid for this association", result: "credentials", fix: "check the Pod Identity association"},
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
			if !strings.Contains(joined, instance) || !strings.Contains(joined, row.reason) || !strings.Contains(joined, row.fix) {
				t.Errorf("warnings %q do not name instance %s, the reason %q and the fix %q", warnings, instance, row.reason, row.fix)
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
			eventually(t, 10*time.Second, "a TokenExchangeFailed Event naming the reason and the fix", func() bool {
				return namespaceEventContains(t, ns, "TokenExchangeFailed", row.reason, row.fix) // one Event with both
			})

			heal()
			n := 0
			eventually(t, 20*time.Second, "a pod patched by the same process after the fault cleared", func() bool {
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
	cfg := faultConfig(1)
	instance, host, secret := faultInstance(0)
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
	eventually(t, 20*time.Second, "a pod patched once secrets create is granted", func() bool {
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
func namespaceEventContains(t *testing.T, ns, reason string, substrs ...string) bool {
	t.Helper()
	containsAll := func(s string) bool {
		for _, sub := range substrs {
			if !strings.Contains(s, sub) {
				return false
			}
		}
		return true
	}
	var list eventsv1.EventList
	if err := stack.Cluster.Client.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		about := e.Namespace == ns || (e.Regarding.Kind == "Namespace" && e.Regarding.Name == ns)
		if about && e.Reason == reason && containsAll(e.Note) {
			return true
		}
	}
	var core corev1.EventList
	if err := stack.Cluster.Client.List(context.Background(), &core); err != nil {
		t.Fatal(err)
	}
	for _, e := range core.Items {
		about := e.Namespace == ns || (e.InvolvedObject.Kind == "Namespace" && e.InvolvedObject.Name == ns)
		if about && e.Reason == reason && containsAll(e.Message) {
			return true
		}
	}
	return false
}

// secretWriteFaults is a validating admission webhook of the test's own,
// served from the test process, that the API server calls for every Secret
// write in namespaces labelled secretFaultsLabel. It fails the writes of
// one Secret name as told and lets every other write through, the way an
// API server under contention (Conflict) or overload (timeout) would.
type secretWriteFaults struct {
	url    string
	caPEM  []byte
	secret string

	mu        sync.Mutex
	op        admissionv1.Operation // writes the faults apply to; "" = every write
	conflicts int                   // refuse this many more writes, with code
	code      int32                 // 409 Conflict, or 403 Forbidden as a policy denies
	hang      bool                  // answer nothing until the API server gives up
	reviews   int                   // reviews received, for any name
}

// secretFaultsLabel selects the namespaces whose Secret writes go through
// secretWriteFaults.
const secretFaultsLabel = "apw-e2e/secret-write-faults"

// conflictMessage is what the API server says about a stale resourceVersion.
const conflictMessage = "the object has been modified; please apply your changes to the latest version and try again"

// set replaces the faults: conflicts for the next n writes of op, or hang.
func (f *secretWriteFaults) set(op admissionv1.Operation, conflicts int, hang bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.op, f.conflicts, f.code, f.hang = op, conflicts, http.StatusConflict, hang
}

// forbid replaces the faults: the next n writes of op are denied, as a
// ValidatingAdmissionPolicy or a webhook of the cluster's own denies them.
func (f *secretWriteFaults) forbid(op admissionv1.Operation, n int) {
	f.set(op, n, false)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.code = http.StatusForbidden
}

// forbiddenMessage is the reason secretWriteFaults gives for a denied write.
const forbiddenMessage = "writes to this Secret are frozen by the cluster's change policy"

func (f *secretWriteFaults) seen() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reviews
}

func (f *secretWriteFaults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	req := review.Request
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	f.mu.Lock()
	f.reviews++
	ours := req.Name == f.secret && (f.op == "" || f.op == req.Operation)
	hang := ours && f.hang
	if ours && !hang && f.conflicts > 0 {
		f.conflicts--
		resp.Allowed = false
		resp.Result = &metav1.Status{Code: http.StatusConflict, Reason: metav1.StatusReasonConflict,
			Message: fmt.Sprintf("Operation cannot be fulfilled on secrets %q: %s", req.Name, conflictMessage)}
		if f.code == http.StatusForbidden {
			resp.Result = &metav1.Status{Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden, Message: forbiddenMessage}
		}
	}
	f.mu.Unlock()
	if hang {
		// The API server gives up after timeoutSeconds and drops the call.
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
		return
	}
	review.Response, review.Request = resp, nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review)
}

// startSecretWriteFaults serves secretWriteFaults over TLS and registers it
// for Secret writes in namespaces labelled secretFaultsLabel, with
// failurePolicy Fail and a 1s timeout: a fault it injects fails the write.
// It returns once the API server calls it.
func startSecretWriteFaults(t *testing.T, secret string) *secretWriteFaults {
	t.Helper()
	ctx := context.Background()
	f := &secretWriteFaults{secret: secret}
	base, ca := admissionServer(t, f)
	f.url, f.caPEM = base+"/validate", ca

	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "apw-e2e-secret-write-faults"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "secret-write-faults.e2e.test",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &f.url, CABundle: f.caPEM},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"secrets"}},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{secretFaultsLabel: "on"}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr.To[int32](1),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	c := stack.Cluster.Client
	if err := c.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, cfg) })

	// The API server learns of the configuration from a watch: probe with
	// dry-run writes of another name until it calls the webhook.
	probeNS := faultyWritesNamespace(t)
	eventually(t, 10*time.Second, "the API server to call the Secret write fault webhook", func() bool {
		probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: probeNS}}
		if err := c.Create(ctx, probe, client.DryRunAll); err != nil {
			t.Fatalf("dry-run probe: %v", err)
		}
		return f.seen() > 0
	})
	return f
}

// admissionServer serves h over TLS on loopback, as an admission webhook
// the API server calls, until the test ends; it returns its base URL and
// the CA bundle to register.
func admissionServer(t *testing.T, h http.Handler) (url string, caPEM []byte) {
	t.Helper()
	bundle, err := certs.Generate([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(bundle.Cert, bundle.Key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, bundle.CACert
}

// faultyWritesNamespace is a fresh opted-in namespace whose Secret writes go
// through secretWriteFaults.
func faultyWritesNamespace(t *testing.T) string {
	t.Helper()
	return namespace(t, map[string]string{harness.OptInLabel: "enabled", secretFaultsLabel: "on"})
}

// proxyErrorPage is an HTML error page of size bytes, as a corporate proxy
// answers for an upstream it cannot reach.
func proxyErrorPage(size int) string {
	page := "<html><head><title>502 Bad Gateway from egress-proxy</title></head><body>"
	for len(page) < size-len("</body></html>") {
		page += "<p>The upstream server did not answer. Contact your network team with reference 7f3a9c.</p>"
	}
	return page + "</body></html>"
}

// staleSecret writes a managed pull Secret for the main instance whose hosts
// no longer match its configuration, so that the next pod makes the webhook
// update it rather than create it.
func staleSecret(t *testing.T, ns string) {
	t.Helper()
	now := time.Now().UTC()
	data, err := pullsecret.DockerConfigJSON([]string{"old.registry.test"}, stack.Emu.Username, credentials.NewToken("stale"))
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "artifactory-pull", Namespace: ns,
			Labels: map[string]string{pullsecret.ManagedByLabel: pullsecret.ManagedByValue},
			Annotations: map[string]string{
				pullsecret.AnnotationInstance:  "main",
				pullsecret.AnnotationIdentity:  credentials.WebhookIdentity,
				pullsecret.AnnotationHosts:     "old.registry.test",
				pullsecret.AnnotationIssuedAt:  now.Format(time.RFC3339),
				pullsecret.AnnotationExpiresAt: now.Add(time.Hour).Format(time.RFC3339),
			}},
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: data},
	}
	if err := stack.Cluster.Client.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

// TestSecretWriteConflictsAndTimeoutsFailOpenAndRecoverWithoutRestart makes
// the API server refuse the webhook's Secret writes with 409 Conflict, or
// time them out, through a validating webhook of the test's own. A conflict
// on an update is retried (a few are absorbed); what is not absorbed leaves
// the pod admitted without the Secret, with a warning, an Event and a
// metric naming the refusal, and the next pod after the fault clears is
// patched by the same process.
//
// Both writers are counted apart (secret_writes_total's writer label). A
// pre-created stale Secret is seen by the refresher too, so those rows first
// let the refresher's write fail and wait until it has (its Event): it then
// backs that Secret off, and what follows is the admission's alone, in a
// fixed order. Rows without a pre-created Secret give the refresher nothing
// to write.
func TestSecretWriteConflictsAndTimeoutsFailOpenAndRecoverWithoutRestart(t *testing.T) {
	const secret = "artifactory-pull" // the main instance's
	faults := startSecretWriteFaults(t, secret)
	t.Cleanup(func() {
		if t.Failed() && stack.Webhook != nil {
			t.Log("webhook logs:\n" + stack.Webhook.Logs())
		}
	})
	rows := []struct {
		name string
		// stale pre-creates an outdated managed Secret: the write is an update.
		stale bool
		op    admissionv1.Operation
		n     int  // conflicts
		hang  bool // time out every write until healed
		// absorbed: the pod is patched at once, no warning.
		absorbed bool
		reason   string
		opLabel  string  // secret_writes_total's operation of the refused writes
		failures float64 // refused write requests the admission makes
	}{
		{name: "conflict on create", op: admissionv1.Create, n: 1,
			reason: conflictMessage, opLabel: "create", failures: 1},
		{name: "conflicts on update absorbed by the retry", stale: true, op: admissionv1.Update, n: 3, absorbed: true,
			opLabel: "update", failures: 3},
		{name: "conflicts on update beyond the retries", stale: true, op: admissionv1.Update, n: 1000,
			reason: conflictMessage, opLabel: "update", failures: 5},
		{name: "write times out", hang: true,
			reason: "context deadline exceeded", opLabel: "create", failures: 1},
	}
	refused := func(t *testing.T, writer, op string) float64 {
		return metric(t, "artifactory_pull_secret_writes_total", map[string]string{"writer": writer, "operation": op, "result": "error"})
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			ns := faultyWritesNamespace(t)
			admissionBefore := refused(t, "admission", row.opLabel)
			refresherBefore := refused(t, "refresher", row.opLabel)
			refresherFailures := 0.0
			if row.stale {
				// The refresher's five conflict retries, all refused, before
				// the Secret exists: it cannot write it first.
				faults.set(admissionv1.Update, 5, false)
				staleSecret(t, ns)
				eventually(t, 10*time.Second, "the refresher's failed write of the stale Secret (its Event)", func() bool {
					return namespaceEventContains(t, ns, pullsecret.ReasonWriteFailed, conflictMessage)
				})
				refresherFailures = 5
			}
			faults.set(row.op, row.n, row.hang)
			defer faults.set("", 0, false)
			openBefore := metric(t, "artifactory_pull_admissions_total", map[string]string{"outcome": "failed_open"})

			got, warnings := createPod(t, ns, pod("during", stack.Image))
			assertReferencedSecretsUsable(t, ns, got, stack.Emu.Registry.Host())
			if d := refused(t, "admission", row.opLabel) - admissionBefore; d != row.failures {
				t.Errorf("refused %s requests by the admission grew by %v, want %v", row.opLabel, d, row.failures)
			}
			// The refresher backs off a Secret whose write failed (its own
			// or the admission's): it adds nothing while the admission runs.
			if d := refused(t, "refresher", row.opLabel) - refresherBefore; d != refresherFailures {
				t.Errorf("refused %s requests by the refresher grew by %v, want %v", row.opLabel, d, refresherFailures)
			}
			if row.absorbed {
				if n := pullSecretNames(got); !slices.Equal(n, []string{secret}) || len(warnings) != 0 {
					t.Errorf("imagePullSecrets %v, warnings %q: want the Secret, no warning, once the retry wrote it", n, warnings)
				}
				return
			}
			if len(got.Spec.ImagePullSecrets) != 0 {
				t.Errorf("pod references %v although the Secret could not be written", pullSecretNames(got))
			}
			joined := strings.Join(warnings, "\n")
			if !strings.Contains(joined, "instance main") || !strings.Contains(joined, row.reason) {
				t.Errorf("warnings %q do not name instance main and the reason %q", warnings, row.reason)
			}
			if d := metric(t, "artifactory_pull_admissions_total", map[string]string{"outcome": "failed_open"}) - openBefore; d != 1 {
				t.Errorf("failed_open admissions grew by %v, want 1", d)
			}
			eventually(t, 10*time.Second, "a TokenExchangeFailed Event naming the reason", func() bool {
				return namespaceEventContains(t, ns, "TokenExchangeFailed", row.reason)
			})

			faults.set("", 0, false)
			n := 0
			eventually(t, 20*time.Second, "a pod patched by the same process after the fault cleared", func() bool {
				n++
				got, _ := createPod(t, ns, pod(fmt.Sprintf("after-%d", n), stack.Image))
				assertReferencedSecretsUsable(t, ns, got, stack.Emu.Registry.Host())
				return slices.Equal(pullSecretNames(got), []string{secret})
			})
			if n != 1 {
				t.Errorf("%d pods were needed after the fault cleared, want the first to be patched", n)
			}
		})
	}
}

// TestArtifactoryCapOnExpiresInSetsTheLifetimeTheWebhookRefreshesBy asks
// for 1h tokens from an Artifactory whose token.max-expiry grants 20s, as
// Artifactory does (a larger expires_in is capped, never refused). The
// webhook must take the granted lifetime as the truth: one exchange serves
// every admission while that token is fresh, the Secrets say when it really
// expires, the expiry gauge shows it, and the token is replaced before it
// expires, by its real lifetime, not the asked one.
func TestArtifactoryCapOnExpiresInSetsTheLifetimeTheWebhookRefreshesBy(t *testing.T) {
	const granted = 20 * time.Second
	instance := runInstance("capped")
	secret := "pull-" + instance
	stack.Emu.Artifactory.SetMaxExpiry(granted)
	t.Cleanup(func() { stack.Emu.Artifactory.SetMaxExpiry(0) })
	startLifecycleWebhook(t, lifecycleConfig(instance, "1h", 0.25))

	before := stack.Emu.Artifactory.Exchanges()
	nss := []string{optedIn(t), optedIn(t), optedIn(t)}
	for _, ns := range nss {
		patchedPod(t, ns, "app", secret)
	}
	if d := stack.Emu.Artifactory.Exchanges() - before; d > 1 {
		t.Errorf("%d pods made %d exchanges, want at most 1: freshness must be judged from the granted %s", len(nss), d, granted)
	}
	first, _ := getSecret(t, nss[0], secret)
	firstToken := token(t, first)
	issued, expires := annotationTime(t, first, pullsecret.AnnotationIssuedAt), annotationTime(t, first, pullsecret.AnnotationExpiresAt)
	if lifetime := expires.Sub(issued); lifetime != granted {
		t.Errorf("Secret says the token lives %s (%s → %s), want the granted %s, not the asked 1h", lifetime, issued, expires, granted)
	}
	for _, ns := range nss[1:] {
		if s, _ := getSecret(t, ns, secret); token(t, s) != firstToken {
			t.Errorf("namespace %s carries another token than %s", ns, nss[0])
		}
	}
	if v := metric(t, "artifactory_pull_token_expiry_seconds", map[string]string{"instance": instance}); v <= 0 || v > granted.Seconds() {
		t.Errorf("token_expiry_seconds{instance=%s} = %v, want at most the granted %v", instance, v, granted.Seconds())
	}

	// No new pod: the refresher must replace the token by its real lifetime.
	eventually(t, 2*granted, "the refresher to replace the capped token", func() bool {
		s, ok := getSecret(t, nss[0], secret)
		return ok && token(t, s) != firstToken
	})
	second, _ := getSecret(t, nss[0], secret)
	if at := annotationTime(t, second, pullsecret.AnnotationIssuedAt); !at.Before(expires) {
		t.Errorf("the capped token was replaced at %s, not before it expired at %s", at, expires)
	}
	if lifetime := annotationTime(t, second, pullsecret.AnnotationExpiresAt).Sub(annotationTime(t, second, pullsecret.AnnotationIssuedAt)); lifetime != granted {
		t.Errorf("the replacement lives %s, want the granted %s", lifetime, granted)
	}
	if err := pull(nss[0], stack.Image, []string{secret}); err != nil {
		t.Errorf("pull with the replaced capped token: %v", err)
	}
}

// pastRefreshPoint copies tmpl, a pull Secret the webhook wrote, into ns as
// a Secret past its refresh point whose token is still valid: issued 55
// minutes ago, expiring in 10 minutes (the token itself, issued just now,
// stays good for an hour).
func pastRefreshPoint(t *testing.T, tmpl *corev1.Secret, ns string) *corev1.Secret {
	t.Helper()
	now := time.Now().UTC()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: tmpl.Name, Namespace: ns, Labels: tmpl.Labels, Annotations: map[string]string{}},
		Type:       tmpl.Type,
		Data:       tmpl.Data,
	}
	for k, v := range tmpl.Annotations {
		s.Annotations[k] = v
	}
	s.Annotations[pullsecret.AnnotationIssuedAt] = now.Add(-55 * time.Minute).Format(time.RFC3339)
	s.Annotations[pullsecret.AnnotationExpiresAt] = now.Add(10 * time.Minute).Format(time.RFC3339)
	if err := stack.Cluster.Client.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStillValidSecretServesThePodWhenItsRefreshFails gives a namespace a
// pull Secret past its refresh point but still valid, then makes its refresh
// fail in each way a refresh can: the update is denied by a policy, the
// update times out, or the mint takes longer than requestTimeout. The pod
// must get the still-valid Secret (imagePullSecrets cannot be added later),
// with a warning that says what failed and which Secret it uses instead;
// once the fault clears, the next pods get a refreshed Secret and no
// warning.
//
// The webhook runs with neither the refresher nor the token checkpoint (no
// leader election namespace), so that the admission alone refreshes, and
// it is restarted for each row after the Secret is in place, so that its
// cache holds that Secret and its token cache starts cold: each row's mint
// is the admission's own.
func TestStillValidSecretServesThePodWhenItsRefreshFails(t *testing.T) {
	faults := startSecretWriteFaults(t, "artifactory-pull") // the main instance's
	faultyImage := stack.FaultyHost + "/team/app:1.0"
	// The faulty instance's exchange may take all of requestTimeout (5s),
	// so that a slow Artifactory outlasts the admission's deadline.
	cfg := strings.Replace(stack.Config(harness.PodIdentity), "secretName: artifactory-pull-faulty\n",
		"secretName: artifactory-pull-faulty\n  exchangeTimeout: 5s\n", 1)
	start := func(t *testing.T) {
		t.Helper()
		err := stack.StartWebhook(context.Background(), harness.PodIdentity, func(o *harness.WebhookOptions) {
			o.Config, o.Args = cfg, nil
		})
		if err != nil {
			t.Fatalf("starting the webhook: %v", err)
		}
	}
	// The Secrets this test's process wrote hold tokens the checkpoint
	// never saw: left behind, they would make the next elected webhook
	// mint in the background, under another test.
	var written []string // namespaces
	t.Cleanup(func() {
		if t.Failed() && stack.Webhook != nil {
			t.Log("webhook logs:\n" + stack.Webhook.Logs())
		}
		stack.StopWebhook()
		for _, ns := range written {
			for _, name := range []string{"artifactory-pull", "artifactory-pull-faulty"} {
				if s, ok := getSecret(t, ns, name); ok {
					_ = stack.Cluster.Client.Delete(context.Background(), s)
				}
			}
		}
		restartWebhook(t, harness.PodIdentity)
	})

	// Secrets with real tokens, written by the webhook, to copy from.
	start(t)
	seedNS := optedIn(t)
	written = append(written, seedNS)
	if got, w := createPod(t, seedNS, pod("seed", stack.Image, faultyImage)); len(got.Spec.ImagePullSecrets) != 2 {
		t.Fatalf("seed pod got %v (warnings %q), want both instances' Secrets", pullSecretNames(got), w)
	}
	templates := map[string]*corev1.Secret{}
	for _, name := range []string{"artifactory-pull", "artifactory-pull-faulty"} {
		s, ok := getSecret(t, seedNS, name)
		if !ok {
			t.Fatalf("the seed pod's Secret %s was not written", name)
		}
		templates[name] = s
	}

	rows := []struct {
		name         string
		instance     string
		secret, host string
		image        string
		faultyWrites bool // the namespace's Secret writes go through secretWriteFaults
		inject       func() (heal func())
		what, reason string // the warning: what could not be done, and why
	}{
		{name: "refresh write denied by a policy", instance: "main", secret: "artifactory-pull",
			host: stack.Emu.Registry.Host(), image: stack.Image, faultyWrites: true,
			inject: func() func() {
				faults.forbid(admissionv1.Update, 1000)
				return func() { faults.set("", 0, false) }
			},
			what: "could not write the refreshed pull secret", reason: forbiddenMessage},
		{name: "refresh write times out", instance: "main", secret: "artifactory-pull",
			host: stack.Emu.Registry.Host(), image: stack.Image, faultyWrites: true,
			inject: func() func() {
				faults.set(admissionv1.Update, 0, true)
				return func() { faults.set("", 0, false) }
			},
			what: "could not write the refreshed pull secret", reason: "context deadline exceeded"},
		{name: "mint slower than requestTimeout", instance: "faulty", secret: "artifactory-pull-faulty",
			host: stack.FaultyHost, image: faultyImage,
			inject: func() func() {
				stack.Emu.Artifactory.SetDelay(10 * time.Second)
				return func() { stack.Emu.Artifactory.SetDelay(0) }
			},
			what: "could not mint a new token", reason: "context deadline exceeded"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			stack.StopWebhook()
			ns := optedIn(t)
			if row.faultyWrites {
				ns = faultyWritesNamespace(t)
			}
			written = append(written, ns)
			planted := pastRefreshPoint(t, templates[row.secret], ns)
			heal := row.inject()
			defer heal()
			start(t)

			got, warnings := createPod(t, ns, pod("during", row.image))
			if n := pullSecretNames(got); !slices.Equal(n, []string{row.secret}) {
				t.Fatalf("imagePullSecrets = %v (warnings %q), want the still-valid %s", n, warnings, row.secret)
			}
			assertReferencedSecretsUsable(t, ns, got, row.host)
			joined := strings.Join(warnings, "\n")
			for _, want := range []string{row.what, fmt.Sprintf("instance %q", row.instance), row.reason,
				fmt.Sprintf("using pull secret %q, valid until %s", row.secret, planted.Annotations[pullsecret.AnnotationExpiresAt])} {
				if !strings.Contains(joined, want) {
					t.Errorf("warnings %q do not say %q", warnings, want)
				}
			}
			if s, _ := getSecret(t, ns, row.secret); s == nil || s.Annotations[pullsecret.AnnotationExpiresAt] != planted.Annotations[pullsecret.AnnotationExpiresAt] {
				t.Errorf("the still-valid Secret was changed or removed while its refresh failed: %v", s)
			}

			heal()
			n := 0
			eventually(t, 20*time.Second, "a pod patched with a refreshed Secret and no warning after the fault cleared", func() bool {
				n++
				got, warnings := createPod(t, ns, pod(fmt.Sprintf("after-%d", n), row.image))
				assertReferencedSecretsUsable(t, ns, got, row.host)
				s, _ := getSecret(t, ns, row.secret)
				return len(warnings) == 0 && slices.Equal(pullSecretNames(got), []string{row.secret}) &&
					s != nil && annotationTime(t, s, pullsecret.AnnotationExpiresAt).After(time.Now().Add(30*time.Minute))
			})
		})
	}
}
