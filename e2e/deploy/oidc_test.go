package deploy

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// The OIDC exchange's releases, each of its own beside the stack's and the
// per-ServiceAccount one (their ClusterRoles, policies and ServiceAccount
// users are distinct, so no release's rules decide another's requests).
//
// oidcSelf has OIDC instances of identity webhook only: the webhook requests
// tokens of its OWN ServiceAccount, of each such instance's subject audience
// (subjectToken.audience, else url). Its file and gcpMetadata instances
// request no ServiceAccount token: their audiences must be refused.
//
// oidcSA has OIDC instances of identity serviceAccount (tokens of pods'
// ServiceAccounts, of the subject audience) and an AWS instance of identity
// webhook, which requests no ServiceAccount token: sts.amazonaws.com must be
// refused.
const (
	oidcSelfRelease   = "oidc-self"
	oidcSelfNamespace = "apw-oidc-self"
	oidcSelfFullname  = oidcSelfRelease + "-artifactory-pull-webhook"
	oidcSelfURL       = "https://example.jfrog.io" // main: no subjectToken.audience, so the url
	oidcSelfAudience  = "jfrog-cluster-a"          // second: subjectToken.audience
	oidcSelfValues    = `
config:
  instances:
  - name: main
    url: ` + oidcSelfURL + `
    registryHosts: [example.jfrog.io]
    exchange: oidc
    oidc: {providerName: cluster-a}
  - name: second
    url: https://second.jfrog.io
    registryHosts: [second.jfrog.io]
    secretName: second-pull
    exchange: oidc
    oidc: {providerName: cluster-a, subjectToken: {source: serviceAccount, audience: ` + oidcSelfAudience + `}}
  - name: azure
    url: https://azure.jfrog.io
    registryHosts: [azure.jfrog.io]
    secretName: azure-pull
    exchange: oidc
    oidc: {providerName: aks, subjectToken: {source: file, path: /var/run/secrets/azure/tokens/azure-identity-token}}
  - name: gke
    url: https://gke.jfrog.io
    registryHosts: [gke.jfrog.io]
    secretName: gke-pull
    exchange: oidc
    oidc: {providerName: gke, subjectToken: {source: gcpMetadata, audience: gke-audience}}
`

	oidcSARelease   = "oidc-sa"
	oidcSANamespace = "apw-oidc-sa"
	oidcSAFullname  = oidcSARelease + "-artifactory-pull-webhook"
	oidcSAAudience  = "jfrog-teams"               // teams: subjectToken.audience
	oidcSAURL       = "https://platform.jfrog.io" // platform: no subjectToken.audience, so the url
	oidcSAValues    = `
config:
  instances:
  - name: teams
    url: https://teams.jfrog.io
    registryHosts: [teams.jfrog.io]
    secretName: teams-pull
    identity: serviceAccount
    exchange: oidc
    oidc: {providerName: cluster-a, subjectToken: {audience: ` + oidcSAAudience + `}}
  - name: platform
    url: ` + oidcSAURL + `
    registryHosts: [platform.jfrog.io]
    secretName: platform-pull
    identity: serviceAccount
    exchange: oidc
    oidc: {providerName: cluster-a}
  - name: main
    url: https://example.jfrog.io
    registryHosts: [example.jfrog.io]
`
)

// oidcRelease is a chart release whose RBAC and policies are applied once.
type oidcRelease struct {
	name, namespace, fullname, values string
	labels                            map[string]string // of its namespace
	once                              sync.Once
	ok                                bool
}

var (
	// The webhook's namespace does not opt in, as usual: its own
	// ServiceAccount's token must be granted there all the same.
	oidcSelf = &oidcRelease{name: oidcSelfRelease, namespace: oidcSelfNamespace, fullname: oidcSelfFullname, values: oidcSelfValues}
	// The webhook's namespace opts in, so that only the rule on its own
	// namespace can refuse a token there.
	oidcSA = &oidcRelease{name: oidcSARelease, namespace: oidcSANamespace, fullname: oidcSAFullname, values: oidcSAValues,
		labels: map[string]string{harness.OptInLabel: "enabled"}}
)

// install applies the release's RBAC and policies, once, with its
// ServiceAccount in its namespace, and waits until the API server enforces
// its token policy.
func (r *oidcRelease) install(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.applyRBAC(t)
		r.waitForTokenPolicy(t)
		r.ok = true
	})
	if !r.ok {
		t.Fatalf("installing the release %s failed in an earlier test", r.name)
	}
}

// applyRBAC creates the release's namespace and ServiceAccount and applies
// its RBAC and policies, rendered from its values.
func (r *oidcRelease) applyRBAC(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if err := stack.Cluster.CreateNamespace(ctx, r.namespace, r.labels); err != nil {
		t.Fatal(err)
	}
	if err := stack.Cluster.Client.Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: r.fullname, Namespace: r.namespace}}); err != nil {
		t.Fatal(err)
	}
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte(r.values), 0o600); err != nil {
		t.Fatal(err)
	}
	apply(t, stack.Cluster.Client, only(render(t, r.name, r.namespace, values), "ClusterRole", "ClusterRoleBinding",
		"Role", "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"))
}

// applied is a release named name in a namespace of that name, applied
// with values (RBAC and policies), and a clientset impersonating its
// ServiceAccount.
func applied(t *testing.T, name, values string) (*oidcRelease, *kubernetes.Clientset) {
	t.Helper()
	r := &oidcRelease{name: name, namespace: name, fullname: name + "-artifactory-pull-webhook", values: values}
	r.applyRBAC(t)
	return r, r.clientset(t)
}

func (r *oidcRelease) user() string { return "system:serviceaccount:" + r.namespace + ":" + r.fullname }

// config impersonates the release's ServiceAccount.
func (r *oidcRelease) config() *rest.Config {
	cfg := rest.CopyConfig(stack.Cluster.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: r.user(),
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + r.namespace, "system:authenticated"}}
	return cfg
}

func (r *oidcRelease) clientset(t *testing.T) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(r.config())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// waitForTokenPolicy waits until a dry-run token request for the release's
// own ServiceAccount of an audience nobody configured, for two hours, is
// refused by the token policy: RBAC lets both releases ask for that token
// (oidc-self by the Role, oidc-sa by the ClusterRole), so the refusal is the
// policy's once the API server has loaded it (it loads policies from a
// watch). Several of its rules refuse it, so that a test, not this wait,
// fails when one rule is missing.
func (r *oidcRelease) waitForTokenPolicy(t *testing.T) {
	t.Helper()
	cs := r.clientset(t)
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			_, err := cs.CoreV1().ServiceAccounts(r.namespace).CreateToken(ctx, r.fullname, &authenticationv1.TokenRequest{
				Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"policy-probe"}, ExpirationSeconds: ptr.To[int64](7200)}},
				metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if ctx.Err() == nil {
				last = err
			}
			return err != nil && strings.Contains(err.Error(), tokenPolicyMsg), nil
		})
	if err != nil {
		t.Fatalf("the release %s's token policy is not enforced: %v; last answer: %v", r.name, err, last)
	}
}

// tokenAs requests a token of namespace/serviceAccount as cs.
func tokenAs(cs *kubernetes.Clientset, namespace, serviceAccount string, spec authenticationv1.TokenRequestSpec) (*authenticationv1.TokenRequest, error) {
	return cs.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), serviceAccount,
		&authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
}

func oidcSpec(audiences ...string) authenticationv1.TokenRequestSpec {
	return authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr.To[int64](tokenSeconds)}
}

// checkToken checks the claims of a granted token.
func checkToken(t *testing.T, tr *authenticationv1.TokenRequest, audience, namespace, serviceAccount string, seconds int64) {
	t.Helper()
	c := tokenClaims(t, tr.Status.Token)
	if !slices.Equal(c.Aud, []string{audience}) || c.Sub != "system:serviceaccount:"+namespace+":"+serviceAccount || c.Exp-c.Iat != seconds {
		t.Errorf("token claims aud %v sub %q lifetime %ds; want [%s], %s/%s, %ds", c.Aud, c.Sub, c.Exp-c.Iat,
			audience, namespace, serviceAccount, seconds)
	}
}

// refusedByTokenPolicy reports an error that is the token policy's refusal
// saying want.
func refusedByTokenPolicy(err error, want string) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), tokenPolicyMsg) && strings.Contains(err.Error(), want)
}

// refusedByRBAC reports an error that is RBAC's refusal of a token request
// (the authorizer's, before any admission policy).
func refusedByRBAC(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), `cannot create resource "serviceaccounts/token"`) &&
		!strings.Contains(err.Error(), tokenPolicyMsg)
}

// exchange oidc with identity webhook: the webhook exchanges a token of its
// own ServiceAccount. The Role grants exactly that token by name, in its
// namespace; the token policy admits for it exactly the subject audiences of
// those instances — the url of one without subjectToken.audience, the
// audience of the other — for 600 seconds (the webhook's request) and at most
// an hour, bound to nothing. Everything else is refused: by RBAC another
// ServiceAccount of its namespace or any ServiceAccount elsewhere, by the
// policy any other audience (sts.amazonaws.com with no AWS instance of
// identity serviceAccount, the gcpMetadata instance's, the API server's own)
// and the forms the webhook never asks for.
func TestOIDCWebhookIdentityChartGrantsOnlyItsOwnServiceAccountTokenOfTheSubjectAudiences(t *testing.T) {
	oidcSelf.install(t)
	ctx := context.Background()
	cs := oidcSelf.clientset(t)
	ns, self := oidcSelf.namespace, oidcSelf.fullname

	for _, aud := range []string{oidcSelfURL, oidcSelfAudience} {
		tr, err := tokenAs(cs, ns, self, oidcSpec(aud))
		if err != nil {
			t.Errorf("token of its own ServiceAccount for %s, 600 s, as the chart's ServiceAccount: %v", aud, err)
			continue
		}
		checkToken(t, tr, aud, ns, self, tokenSeconds)
	}

	bound := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bind-target", Namespace: ns}}
	if err := stack.Cluster.Client.Create(ctx, bound); err != nil {
		t.Fatal(err)
	}
	with := func(f func(*authenticationv1.TokenRequestSpec)) authenticationv1.TokenRequestSpec {
		s := oidcSpec(oidcSelfURL)
		f(&s)
		return s
	}
	audiences := "only for the audience " + oidcSelfURL + " or " + oidcSelfAudience + " for its own ServiceAccount"
	for _, tc := range []struct {
		what string
		spec authenticationv1.TokenRequestSpec
		want string
	}{
		{"another audience", oidcSpec("https://kubernetes.default.svc"), audiences},
		{"sts.amazonaws.com (no AWS instance of identity serviceAccount)", oidcSpec(stsAudience), audiences},
		{"the gcpMetadata instance's audience (not a ServiceAccount token)", oidcSpec("gke-audience"), audiences},
		{"the file instance's url (not a ServiceAccount token)", oidcSpec("https://azure.jfrog.io"), audiences},
		{"its audience and another", oidcSpec(oidcSelfURL, "vault"), audiences},
		{"no audience (defaulted to the API server's own)", oidcSpec(), audiences},
		{"7200 seconds", with(func(s *authenticationv1.TokenRequestSpec) { s.ExpirationSeconds = ptr.To[int64](7200) }),
			"only of at most 3600 seconds"},
		{"a token bound to a Secret", with(func(s *authenticationv1.TokenRequestSpec) {
			s.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: bound.Name, UID: bound.UID}
		}), "only bound to no object"},
	} {
		_, err := tokenAs(cs, ns, self, tc.spec)
		if !refusedByTokenPolicy(err, tc.want) {
			t.Errorf("token of its own ServiceAccount with %s: got %v, want the token policy's refusal %q", tc.what, err, tc.want)
		}
	}

	// RBAC: no other ServiceAccount, here or anywhere.
	optedIn := newNamespace(t, "oidc-self-other", map[string]string{harness.OptInLabel: "enabled"})
	for _, ref := range [][2]string{{ns, "default"}, {optedIn, "default"}, {"kube-system", "default"}} {
		if err := stack.Cluster.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: ref[0]}}); err != nil &&
			!apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	for _, ref := range [][2]string{{ns, "other"}, {optedIn, "other"}, {"kube-system", "other"}} {
		_, err := tokenAs(cs, ref[0], ref[1], oidcSpec(oidcSelfURL))
		if !refusedByRBAC(err) {
			t.Errorf("token of %s/%s for %s as the chart's ServiceAccount: got %v, want RBAC's refusal", ref[0], ref[1], oidcSelfURL, err)
		}
	}
	// Nor what only identity serviceAccount needs.
	_, err := cs.CoreV1().ServiceAccounts(optedIn).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("list ServiceAccounts: got %v, want Forbidden (identity webhook only)", err)
	}
	_, err = cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{LabelSelector: pullsecret.ManagedByLabel + "=" + pullsecret.ManagedByValue})
	if !apierrors.IsForbidden(err) {
		t.Errorf("list Secrets by label: got %v, want Forbidden (identity webhook only)", err)
	}
}

// The token policy also refuses, on its own, a token of another
// ServiceAccount of the webhook's namespace for the subject audience: were
// RBAC widened by mistake (a RoleBinding granting every ServiceAccount's
// token in that namespace), the webhook's own ServiceAccount is still the
// only one the policy admits there — it tells it by request.name, the
// ServiceAccount the token subresource belongs to.
func TestOIDCWebhookIdentityTokenPolicyAloneRefusesAnotherServiceAccountOfItsNamespace(t *testing.T) {
	oidcSelf.install(t)
	ctx := context.Background()
	cs := oidcSelf.clientset(t)
	ns := oidcSelf.namespace
	if err := stack.Cluster.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "neighbour", Namespace: ns}}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "widened-by-mistake", Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"}, Verbs: []string{"create"}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "widened-by-mistake", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: oidcSelf.fullname, Namespace: ns}}}
	if err := stack.Cluster.Client.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	if err := stack.Cluster.Client.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stack.Cluster.Client.Delete(context.Background(), binding)
		_ = stack.Cluster.Client.Delete(context.Background(), role)
	})
	// RBAC takes the binding from a watch: until then the refusal is RBAC's.
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, last = tokenAs(cs, ns, "neighbour", oidcSpec(oidcSelfURL))
		return !refusedByRBAC(last), nil
	})
	if err != nil {
		t.Fatalf("the widened RBAC never applied: %v; last answer: %v", err, last)
	}
	if !refusedByTokenPolicy(last, "") {
		t.Errorf("token of %s/neighbour for %s with RBAC widened: got %v, want the token policy's refusal", ns, oidcSelfURL, last)
	}
}

// exchange oidc with identity serviceAccount: the webhook exchanges a token
// of the pod's ServiceAccount. The chart adds the per-ServiceAccount rules
// (ServiceAccounts read, tokens of any ServiceAccount, Secrets by label),
// and the token policy admits, in opted-in namespaces it mutates, exactly
// the OIDC instances' subject audiences (one's subjectToken.audience, the
// other's url): not sts.amazonaws.com, which no AWS instance of identity
// serviceAccount needs here (the AWS instance has identity webhook).
func TestOIDCServiceAccountIdentityChartGrantsTokensOfTheSubjectAudiencesInOptedInNamespacesOnly(t *testing.T) {
	oidcSA.install(t)
	ctx := context.Background()
	cs := oidcSA.clientset(t)
	optedIn := newNamespace(t, "oidc-sa-tokens", map[string]string{harness.OptInLabel: "enabled"})
	notOptedIn := newNamespace(t, "oidc-sa-no-opt-in", nil)
	// A token request for a ServiceAccount that does not exist is answered
	// NotFound before admission: each must exist for the policy to judge it.
	for _, ns := range []string{optedIn, notOptedIn, "kube-system"} {
		if err := stack.Cluster.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns}}); err != nil &&
			!apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}

	for _, aud := range []string{oidcSAAudience, oidcSAURL} {
		tr, err := tokenAs(cs, optedIn, "app", oidcSpec(aud))
		if err != nil {
			t.Errorf("token of %s/app for %s, 600 s, as the chart's ServiceAccount: %v", optedIn, aud, err)
			continue
		}
		checkToken(t, tr, aud, optedIn, "app", tokenSeconds)
	}

	audiences := "only for the audience " + oidcSAAudience + " or " + oidcSAURL + ";"
	for _, tc := range []struct {
		what, ns, sa string
		spec         authenticationv1.TokenRequestSpec
		want         string
	}{
		{"sts.amazonaws.com (no AWS instance of identity serviceAccount)", optedIn, "app", oidcSpec(stsAudience), audiences},
		{"the AWS instance's url", optedIn, "app", oidcSpec("https://example.jfrog.io"), audiences},
		{"another audience", optedIn, "app", oidcSpec("https://kubernetes.default.svc"), audiences},
		{"both audiences in one token", optedIn, "app", oidcSpec(oidcSAAudience, oidcSAURL), audiences},
		{"7200 seconds", optedIn, "app", authenticationv1.TokenRequestSpec{Audiences: []string{oidcSAAudience},
			ExpirationSeconds: ptr.To[int64](7200)}, "only of at most 3600 seconds"},
		{"a namespace without the opt-in label", notOptedIn, "app", oidcSpec(oidcSAAudience),
			"only in namespaces labelled " + optInSelector},
		{"its own ServiceAccount (no instance of identity webhook exchanges it)", oidcSA.namespace, oidcSA.fullname,
			oidcSpec(oidcSAAudience), "only in namespaces it mutates"},
		{"kube-system", "kube-system", "app", oidcSpec(oidcSAAudience), "only in namespaces"},
	} {
		_, err := tokenAs(cs, tc.ns, tc.sa, tc.spec)
		if !refusedByTokenPolicy(err, tc.want) {
			t.Errorf("token of %s/%s with %s: got %v, want the token policy's refusal %q", tc.ns, tc.sa, tc.what, err, tc.want)
		}
	}

	// The per-ServiceAccount rules of identity serviceAccount (#11): the
	// ServiceAccount informer and the per-ServiceAccount Secrets' informer.
	mc, err := metadata.NewForConfig(oidcSA.config())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mc.Resource(corev1.SchemeGroupVersion.WithResource("serviceaccounts")).List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("list ServiceAccounts (metadata) in all namespaces: %v", err)
	}
	byLabels := metav1.ListOptions{LabelSelector: pullsecret.ManagedByLabel + "=" + pullsecret.ManagedByValue + "," + perSALabel + "=true"}
	if _, err := cs.CoreV1().Secrets("").List(ctx, byLabels); err != nil {
		t.Errorf("list per-ServiceAccount Secrets by label in all namespaces: %v", err)
	}
}

// tokenPolicyAudiences renders the chart with values and returns the
// audiences its token policy admits for the webhook's own ServiceAccount
// and for pods' ServiceAccounts (nil, nil: no token policy).
func tokenPolicyAudiences(t *testing.T, values string) (self, perSA []string, rendered bool) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, u := range only(render(t, "aud", "aud-ns", f), "ValidatingAdmissionPolicy") {
		if u.GetName() != "aud-artifactory-pull-webhook-token-requests" {
			continue
		}
		vars, _, _ := unstructured.NestedSlice(u.Object, "spec", "variables")
		for _, v := range vars {
			m, _ := v.(map[string]any)
			if m["name"] != "audiences" {
				continue
			}
			expr, _ := m["expression"].(string)
			match := audiencesExpr.FindStringSubmatch(expr)
			if match == nil {
				t.Fatalf("audiences variable %q is not variables.self ? [...] : [...]", expr)
			}
			var self, perSA []string
			if err := json.Unmarshal([]byte(match[1]), &self); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(match[2]), &perSA); err != nil {
				t.Fatal(err)
			}
			return self, perSA, true
		}
		t.Fatal("the token policy has no audiences variable")
	}
	return nil, nil, false
}

var audiencesExpr = regexp.MustCompile(`^variables\.self \? (\[.*?\]) : (\[.*\])$`)

// The audiences follow the configuration, defaults included (exchange aws,
// identity webhook, source serviceAccount, audience the url): the union
// over instances, sts.amazonaws.com only for an AWS instance of identity
// serviceAccount, nothing for file or gcpMetadata sources nor for AWS
// instances of identity webhook; and no token policy when no instance
// requests a ServiceAccount token.
func TestTokenPolicyAudiencesAreTheUnionOfWhatTheInstancesRequest(t *testing.T) {
	inst := func(name, extra string) string {
		return "  - {name: " + name + ", url: https://" + name + ".jfrog.io, registryHosts: [" + name + ".jfrog.io], secretName: " +
			name + "-pull" + extra + "}\n"
	}
	for _, tc := range []struct {
		name, instances string
		self, perSA     []string // nil, nil: no policy
	}{
		{"aws webhook only (the default)", inst("a", ""), nil, nil},
		{"oidc file and gcpMetadata only", inst("f", ", exchange: oidc, oidc: {providerName: p, subjectToken: {source: file, path: /t}}") +
			inst("g", ", exchange: oidc, oidc: {providerName: p, subjectToken: {source: gcpMetadata, audience: g}}"), nil, nil},
		{"aws serviceAccount", inst("a", ", identity: serviceAccount"), []string{}, []string{stsAudience}},
		{"oidc webhook, audience defaulted and explicit", inst("w", ", exchange: oidc, oidc: {providerName: p}") +
			inst("x", ", exchange: oidc, oidc: {providerName: p, subjectToken: {audience: x-aud}}") +
			inst("z", ", exchange: oidc, oidc: {providerName: p, subjectToken: {source: serviceAccount, audience: x-aud}}"),
			[]string{"https://w.jfrog.io", "x-aud"}, []string{}},
		{"union of aws and oidc serviceAccount", inst("a", ", identity: serviceAccount") + inst("b", ", identity: serviceAccount") +
			inst("o", ", identity: serviceAccount, exchange: oidc, oidc: {providerName: p}") +
			inst("q", ", identity: serviceAccount, exchange: oidc, oidc: {providerName: p, subjectToken: {audience: q-aud}}") +
			inst("w", ", exchange: oidc, oidc: {providerName: p, subjectToken: {audience: w-aud}}") +
			inst("h", ", exchange: aws"),
			[]string{"w-aud"}, []string{stsAudience, "https://o.jfrog.io", "q-aud"}},
		{"oidc serviceAccount with fallback webhook: the webhook's own token too", inst("o", ", identity: serviceAccount, fallback: webhook, exchange: oidc, oidc: {providerName: p}"),
			[]string{"https://o.jfrog.io"}, []string{"https://o.jfrog.io"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			self, perSA, ok := tokenPolicyAudiences(t, "config:\n  instances:\n"+tc.instances)
			if want := tc.self != nil; ok != want {
				t.Fatalf("token policy rendered = %v, want %v", ok, want)
			}
			if !slices.Equal(self, tc.self) || !slices.Equal(perSA, tc.perSA) {
				t.Errorf("audiences: own ServiceAccount %q, pods' ServiceAccounts %q; want %q, %q", self, perSA, tc.self, tc.perSA)
			}
		})
	}
}

// The values schema refuses OIDC instances the webhook would refuse at
// start, naming the field; each value set below is valid but for one field.
func TestValuesSchemaRejectsInvalidOIDCInstances(t *testing.T) {
	const valid = "{providerName: p, subjectToken: {source: serviceAccount, audience: a}}"
	instance := func(fields string) string {
		return "config:\n  instances:\n  - {name: main, url: https://example.jfrog.io, registryHosts: [example.jfrog.io]" + fields + "}\n"
	}
	templateValues := func(values string) ([]byte, error) {
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, []byte(values), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(helm, "template", "x", chartDir, "--kube-version", kubeVersion, "-f", f)
		cmd.Dir = harness.ModuleRoot()
		return cmd.CombinedOutput()
	}
	if out, err := templateValues(instance(", exchange: oidc, oidc: " + valid)); err != nil {
		t.Fatalf("a valid OIDC instance does not render: %v\n%s", err, out)
	}
	for name, tc := range map[string]struct{ fields, want string }{
		"unknown exchange":              {", exchange: gcp, oidc: " + valid, "/exchange': value must be one of 'aws', 'oidc'"},
		"exchange oidc without oidc":    {", exchange: oidc", "missing property 'oidc'"},
		"oidc without exchange oidc":    {", oidc: " + valid, "missing property 'exchange'"},
		"oidc with exchange aws":        {", exchange: aws, oidc: " + valid, "/exchange': value must be 'oidc'"},
		"no providerName":               {", exchange: oidc, oidc: {projectKey: k}", "/oidc': missing property 'providerName'"},
		"empty providerName":            {", exchange: oidc, oidc: {providerName: ''}", "/oidc/providerName'"},
		"unknown source":                {", exchange: oidc, oidc: {providerName: p, subjectToken: {source: vault}}", "/subjectToken/source': value must be one of"},
		"file without path":             {", exchange: oidc, oidc: {providerName: p, subjectToken: {source: file}}", "/subjectToken': missing property 'path'"},
		"a misspelt oidc field":         {", exchange: oidc, oidc: {providerName: p, subjectTokens: {source: file}}", "'subjectTokens' not allowed"},
		"a misspelt subjectToken field": {", exchange: oidc, oidc: {providerName: p, subjectToken: {audiences: [a]}}", "'audiences' not allowed"},
	} {
		out, err := templateValues(instance(tc.fields))
		if err == nil {
			t.Errorf("%s rendered without error", name)
		} else if !strings.Contains(string(out), "schema") || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: failed, but not by the values schema saying %q: %s", name, tc.want, out)
		}
	}
	// Tokens of every opted-in ServiceAccount for an audience another party
	// trusts: the chart refuses to render them.
	for _, aud := range []string{stsAudience, "api://AzureADTokenExchange", "https://kubernetes.default.svc"} {
		out, err := templateValues(instance(", identity: serviceAccount, exchange: oidc, oidc: {providerName: p, subjectToken: {audience: '" +
			aud + "'}}"))
		if err == nil || !strings.Contains(string(out), `with the subject audience "`+aud+`", which`) {
			t.Errorf("identity serviceAccount with the subject audience %s: %v %s", aud, err, out)
		}
	}
	out, err := templateValues(instance("") + "extraVolumeMounts: [{name: v}]\n")
	if err == nil || !strings.Contains(string(out), "missing property 'mountPath'") {
		t.Errorf("an extraVolumeMount without mountPath: %v %s", err, out)
	}
}
