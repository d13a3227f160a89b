package deploy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// The chart with an instance of identity serviceAccount
// (ci/service-account-values.yaml: main per ServiceAccount, Secrets
// artifactory-pull-<serviceAccount>; onprem on the webhook's identity,
// Secret onprem-pull), installed as a release of its own beside the
// stack's: its ClusterRole, its policies and its ServiceAccount user are
// all distinct, so neither release's rules or policies decide the other's
// requests.
const (
	perSARelease   = "per-sa"
	perSANamespace = "apw-per-sa"
	perSAFullname  = perSARelease + "-artifactory-pull-webhook"
	perSAUser      = "system:serviceaccount:" + perSANamespace + ":" + perSAFullname

	// The form of a ServiceAccount's pull Secret (the webhook's contract).
	perSALabel      = pullsecret.LabelPerServiceAccount
	perSAPrefix     = "artifactory-pull-" // <secretName>- of the serviceAccount instance main
	stsAudience     = "sts.amazonaws.com"
	tokenSeconds    = 600
	optInSelector   = harness.OptInLabel + "=enabled"
	tokenPolicyMsg  = "artifactory-pull-webhook may request ServiceAccount tokens only"
	deletePolicyMsg = "artifactory-pull-webhook may delete only the Secrets it manages"
)

var perSA struct {
	once sync.Once
	ok   bool
}

// perServiceAccountChart applies the identity serviceAccount chart's RBAC
// and policies, once, and waits until the API server enforces both
// policies.
func perServiceAccountChart(t *testing.T) {
	t.Helper()
	perSA.once.Do(func() {
		ctx := context.Background()
		// The release namespace is opted in, so that only its exclusion can
		// refuse a token there.
		if err := stack.Cluster.CreateNamespace(ctx, perSANamespace, map[string]string{harness.OptInLabel: "enabled"}); err != nil {
			t.Fatal(err)
		}
		if err := stack.Cluster.Client.Create(ctx, &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: perSAFullname, Namespace: perSANamespace}}); err != nil {
			t.Fatal(err)
		}
		objs := render(t, perSARelease, perSANamespace, valuesPath("service-account-values.yaml"))
		apply(t, stack.Cluster.Client, only(objs, "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
			"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"))
		waitForPerSAPolicies(t)
		perSA.ok = true
	})
	if !perSA.ok {
		t.Fatal("installing the identity serviceAccount chart failed in an earlier test")
	}
}

// asPerSAServiceAccount impersonates the identity serviceAccount release's
// ServiceAccount.
func asPerSAServiceAccount() *rest.Config {
	cfg := rest.CopyConfig(stack.Cluster.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: perSAUser,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + perSANamespace, "system:authenticated"}}
	return cfg
}

func perSAClientset(t *testing.T) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(asPerSAServiceAccount())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// waitForPerSAPolicies waits until the API server has loaded both policies
// of the release (it loads them from a watch): an Opaque Secret and a token
// of another audience and lifetime in a namespace that did not opt in are
// refused by them (by several rules each, so that a test, not this wait,
// fails when one rule is missing).
func waitForPerSAPolicies(t *testing.T) {
	t.Helper()
	cs := perSAClientset(t)
	ns := newNamespace(t, "per-sa-probe", nil)
	probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "policy-probe", Namespace: ns}}
	var last error // the last answer before the deadline
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			_, err := cs.CoreV1().Secrets(ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if ctx.Err() == nil {
				last = err
			}
			if !deniedByPolicy(err) {
				return false, nil
			}
			_, err = cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "default", &authenticationv1.TokenRequest{
				Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"policy-probe"}, ExpirationSeconds: ptr.To[int64](7200)}},
				metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if ctx.Err() == nil {
				last = err
			}
			return err != nil && strings.Contains(err.Error(), tokenPolicyMsg), nil
		})
	if err != nil {
		t.Fatalf("the identity serviceAccount chart's policies are not enforced: %v; last answer: %v", err, last)
	}
}

// perSASecret is a ServiceAccount's pull Secret as the webhook writes it.
func perSASecret(t *testing.T, ns, serviceAccount string) *corev1.Secret {
	t.Helper()
	s := pullSecret(t, ns, perSAPrefix+serviceAccount)
	s.Labels[perSALabel] = "true"
	s.Annotations = map[string]string{pullsecret.AnnotationServiceAccount: serviceAccount}
	return s
}

// claims are the JWT claims of a ServiceAccount token that matter to STS.
type claims struct {
	Aud []string `json:"aud"`
	Sub string   `json:"sub"`
	Exp int64    `json:"exp"`
	Iat int64    `json:"iat"`
}

func tokenClaims(t *testing.T, jwt string) claims {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("the token is not a JWT (%d parts)", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c claims
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// The webhook asks for tokens of a pod's ServiceAccount with audience
// sts.amazonaws.com, 600 seconds and no bound object, in an opted-in
// namespace; the policy <release>-token-requests refuses any other form or
// place, each refusal by its own rule (each case breaks exactly one). The
// allowed request in an opted-in namespace against the refusal in one
// without the label proves that the API server gives CEL the namespace
// (namespaceObject) for the serviceaccounts/token subresource.
func TestPerServiceAccountChartTokenRequestsAreLimitedToSTSInOptedInNamespaces(t *testing.T) {
	perServiceAccountChart(t)
	ctx := context.Background()
	cs := perSAClientset(t)
	optedIn := newNamespace(t, "per-sa-tokens", map[string]string{harness.OptInLabel: "enabled"})
	notOptedIn := newNamespace(t, "per-sa-no-opt-in", nil)
	optedOut := newNamespace(t, "per-sa-disabled", map[string]string{harness.OptInLabel: "disabled"})
	for _, ns := range []string{optedIn, notOptedIn, optedOut} {
		if err := stack.Cluster.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	request := func(ns, sa string, spec authenticationv1.TokenRequestSpec) (*authenticationv1.TokenRequest, error) {
		return cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	}
	webhookSpec := func() authenticationv1.TokenRequestSpec {
		return authenticationv1.TokenRequestSpec{Audiences: []string{stsAudience}, ExpirationSeconds: ptr.To[int64](tokenSeconds)}
	}

	// The webhook's request, and the longest lifetime allowed: an hour,
	// asked for or defaulted (the API server defaults expirationSeconds to
	// 3600 before admission).
	for _, tc := range []struct {
		what    string
		seconds *int64
		want    int64
	}{
		{"600 seconds", ptr.To[int64](tokenSeconds), tokenSeconds},
		{"3600 seconds", ptr.To[int64](3600), 3600},
		{"no expirationSeconds", nil, 3600},
	} {
		tr, err := request(optedIn, "app", authenticationv1.TokenRequestSpec{Audiences: []string{stsAudience}, ExpirationSeconds: tc.seconds})
		if err != nil {
			t.Errorf("token of %s/app for %s with %s as the chart's ServiceAccount: %v", optedIn, stsAudience, tc.what, err)
			continue
		}
		c := tokenClaims(t, tr.Status.Token)
		if len(c.Aud) != 1 || c.Aud[0] != stsAudience || c.Sub != "system:serviceaccount:"+optedIn+":app" || c.Exp-c.Iat != tc.want {
			t.Errorf("%s: token claims aud %v sub %q lifetime %ds; want [%s], %s/app, %ds", tc.what, c.Aud, c.Sub, c.Exp-c.Iat,
				stsAudience, optedIn, tc.want)
		}
	}

	// A Secret to bind a token to (a Pod would need the stack's webhook).
	bound := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bind-target", Namespace: optedIn}}
	if err := stack.Cluster.Client.Create(ctx, bound); err != nil {
		t.Fatal(err)
	}
	with := func(f func(*authenticationv1.TokenRequestSpec)) authenticationv1.TokenRequestSpec {
		s := webhookSpec()
		f(&s)
		return s
	}
	for _, tc := range []struct {
		what, ns, sa string
		spec         authenticationv1.TokenRequestSpec
		want         string
	}{
		{"another audience", optedIn, "app",
			with(func(s *authenticationv1.TokenRequestSpec) { s.Audiences = []string{"https://kubernetes.default.svc"} }),
			"only for the audience sts.amazonaws.com"},
		{"sts.amazonaws.com and another audience", optedIn, "app",
			with(func(s *authenticationv1.TokenRequestSpec) { s.Audiences = []string{stsAudience, "vault"} }),
			"only for the audience sts.amazonaws.com"},
		{"no audience (defaulted to the API server's own)", optedIn, "app",
			with(func(s *authenticationv1.TokenRequestSpec) { s.Audiences = nil }),
			"only for the audience sts.amazonaws.com"},
		{"7200 seconds", optedIn, "app",
			with(func(s *authenticationv1.TokenRequestSpec) { s.ExpirationSeconds = ptr.To[int64](7200) }),
			"only of at most 3600 seconds"},
		{"a token bound to a Secret", optedIn, "app",
			with(func(s *authenticationv1.TokenRequestSpec) {
				s.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: bound.Name, UID: bound.UID}
			}),
			"only bound to no object"},
		{"a namespace without the opt-in label", notOptedIn, "app", webhookSpec(),
			"only in namespaces labelled " + optInSelector},
		{"a namespace whose opt-in label has another value", optedOut, "app", webhookSpec(),
			"only in namespaces labelled " + optInSelector},
		{"its own namespace (opted in, never mutated)", perSANamespace, perSAFullname, webhookSpec(),
			"only in namespaces it mutates"},
	} {
		_, err := request(tc.ns, tc.sa, tc.spec)
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tokenPolicyMsg) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("token of %s/%s with %s: got %v, want the token policy's refusal %q", tc.ns, tc.sa, tc.what, err, tc.want)
		}
	}
}

// A ServiceAccount's pull Secret is artifactory-pull-<serviceAccount>: RBAC
// cannot name it, so it grants Secrets of any name, and the policy
// <release>-secret-writes keeps writes to that form (and deletes to
// managed Secrets). The informer's list and watch by label, in all
// namespaces, are allowed, and so is reading any Secret: the trade-off
// SECURITY.md states, asserted so that it stays true.
func TestPerServiceAccountChartWritesAndDeletesOnlyItsOwnSecrets(t *testing.T) {
	perServiceAccountChart(t)
	ctx := context.Background()
	cs := perSAClientset(t)
	ns := newNamespace(t, "per-sa-secrets", map[string]string{harness.OptInLabel: "enabled"})
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s as the chart's ServiceAccount: %v", what, err)
		}
	}
	refusedWrite := func(what string, err error) {
		t.Helper()
		if !deniedByPolicy(err) {
			t.Errorf("%s as the chart's ServiceAccount: got %v, want the Secret policy's refusal", what, err)
		}
	}
	secrets := cs.CoreV1().Secrets(ns)

	// The informer: both labels, every namespace.
	byLabels := metav1.ListOptions{LabelSelector: pullsecret.ManagedByLabel + "=" + pullsecret.ManagedByValue + "," + perSALabel + "=true"}
	_, err := cs.CoreV1().Secrets("").List(ctx, byLabels)
	must("list per-ServiceAccount Secrets by label in all namespaces", err)
	w, err := cs.CoreV1().Secrets("").Watch(ctx, byLabels)
	must("watch per-ServiceAccount Secrets by label in all namespaces", err)
	if err == nil {
		w.Stop()
	}

	// A ServiceAccount's pull Secret: created, read, rewritten, deleted.
	created, err := secrets.Create(ctx, perSASecret(t, ns, "app"), metav1.CreateOptions{})
	must("create the per-ServiceAccount Secret "+perSAPrefix+"app", err)
	if err == nil {
		got, err := secrets.Get(ctx, created.Name, metav1.GetOptions{})
		must("get the per-ServiceAccount Secret", err)
		if err == nil {
			got.Annotations["artifactory-pull-webhook/expires-at"] = time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
			got, err = secrets.Update(ctx, got, metav1.UpdateOptions{})
			must("update the per-ServiceAccount Secret", err)
		}
		if err == nil {
			delete(got.Labels, perSALabel)
			_, err = secrets.Update(ctx, got, metav1.UpdateOptions{})
			refusedWrite("update dropping the per-service-account label", err)
		}
		must("delete the per-ServiceAccount Secret", secrets.Delete(ctx, created.Name, metav1.DeleteOptions{}))
	}
	// The webhook-identity instance's own name is still allowed.
	_, err = secrets.Create(ctx, pullSecret(t, ns, "onprem-pull"), metav1.CreateOptions{})
	must("create the webhook-identity instance's pull Secret onprem-pull", err)

	// Creates of other forms.
	unlabelled := perSASecret(t, ns, "worker")
	delete(unlabelled.Labels, perSALabel)
	notTrue := perSASecret(t, ns, "worker")
	notTrue.Labels[perSALabel] = "false"
	unmanaged := perSASecret(t, ns, "worker")
	delete(unmanaged.Labels, pullsecret.ManagedByLabel)
	opaque := perSASecret(t, ns, "worker")
	opaque.Type = corev1.SecretTypeOpaque
	unrelated := perSASecret(t, ns, "worker")
	unrelated.Name = "db-credentials"
	webhookInstance := perSASecret(t, ns, "worker")
	webhookInstance.Name = "onprem-pull-worker" // onprem is on the webhook's identity: no per-ServiceAccount Secrets
	for what, s := range map[string]*corev1.Secret{
		"a per-ServiceAccount name without the per-service-account label": unlabelled,
		"a per-ServiceAccount name with per-service-account=false":        notTrue,
		"a per-ServiceAccount name without the managed-by label":          unmanaged,
		"an Opaque Secret of a per-ServiceAccount name":                   opaque,
		"a per-ServiceAccount Secret of an unrelated name":                unrelated,
		"a per-ServiceAccount Secret of a webhook-identity instance":      webhookInstance,
	} {
		_, err := secrets.Create(ctx, s, metav1.CreateOptions{})
		refusedWrite("create "+what, err)
	}

	// Tenants' Secrets: readable (the trade-off), never rewritten into a
	// pull Secret, never deleted.
	tenant := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db-password", Namespace: ns},
		StringData: map[string]string{"password": "hunter2"}}
	lookalike := pullSecret(t, ns, perSAPrefix+"tenant") // the tenant's own, of a per-ServiceAccount name
	lookalike.Labels = nil
	for _, s := range []*corev1.Secret{tenant, lookalike} {
		if err := stack.Cluster.Client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	got, err := secrets.Get(ctx, tenant.Name, metav1.GetOptions{})
	if err != nil || string(got.Data["password"]) != "hunter2" {
		t.Errorf("get a tenant's Secret: %v; identity serviceAccount grants reading every Secret (SECURITY.md)", err)
	}
	_, err = cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	must("list every Secret (the trade-off of identity serviceAccount)", err)
	look, err := secrets.Get(ctx, lookalike.Name, metav1.GetOptions{})
	must("get the tenant's Secret of a per-ServiceAccount name", err)
	if err == nil {
		look.Labels = perSASecret(t, ns, "tenant").Labels
		_, err = secrets.Update(ctx, look, metav1.UpdateOptions{})
		refusedWrite("update a tenant's Secret of a per-ServiceAccount name into a managed one", err)
	}
	for _, name := range []string{tenant.Name, lookalike.Name} {
		err := secrets.Delete(ctx, name, metav1.DeleteOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), deletePolicyMsg) {
			t.Errorf("delete the unmanaged Secret %s: got %v, want the Secret policy's refusal", name, err)
		}
	}
	_, err = secrets.Patch(ctx, tenant.Name, types.MergePatchType, []byte(`{"metadata":{"labels":{"p":"1"}}}`), metav1.PatchOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("patch a tenant's Secret: got %v, want Forbidden (the webhook only updates)", err)
	}
}

// The ServiceAccount informer is metadata-only, in every namespace, with a
// direct read on a cache miss.
func TestPerServiceAccountChartReadsServiceAccountsEverywhere(t *testing.T) {
	perServiceAccountChart(t)
	ctx := context.Background()
	ns := newNamespace(t, "per-sa-accounts", map[string]string{harness.OptInLabel: "enabled"})
	mc, err := metadata.NewForConfig(asPerSAServiceAccount())
	if err != nil {
		t.Fatal(err)
	}
	sas := mc.Resource(corev1.SchemeGroupVersion.WithResource("serviceaccounts"))
	list, err := sas.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list ServiceAccounts (metadata) in all namespaces: %v", err)
	}
	if len(list.Items) == 0 {
		t.Error("listed no ServiceAccount")
	}
	w, err := sas.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Errorf("watch ServiceAccounts (metadata) in all namespaces: %v", err)
	} else {
		w.Stop()
	}
	if _, err := sas.Namespace(ns).Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("get a ServiceAccount: %v", err)
	}
	_, err = perSAClientset(t).CoreV1().ServiceAccounts(ns).Update(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}, metav1.UpdateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("update a ServiceAccount: got %v, want Forbidden", err)
	}
}

// Only identity serviceAccount adds those rules: the stack's webhook-identity
// chart cannot request tokens, read ServiceAccounts, list Secrets by label
// nor write a Secret of a per-ServiceAccount name.
func TestWebhookIdentityChartCannotRequestTokensNorReadServiceAccountsOrOtherSecrets(t *testing.T) {
	chartRBAC(t)
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(asServiceAccount())
	if err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t, "webhook-identity", map[string]string{harness.OptInLabel: "enabled"})
	forbidden := func(what string, err error) {
		t.Helper()
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s as the webhook-identity chart's ServiceAccount: got %v, want Forbidden", what, err)
		}
	}
	_, err = cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "default", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{stsAudience}, ExpirationSeconds: ptr.To[int64](tokenSeconds)}},
		metav1.CreateOptions{})
	forbidden("request a ServiceAccount token for sts.amazonaws.com", err)
	_, err = cs.CoreV1().ServiceAccounts("").List(ctx, metav1.ListOptions{})
	forbidden("list ServiceAccounts", err)
	_, err = cs.CoreV1().ServiceAccounts(ns).Watch(ctx, metav1.ListOptions{})
	forbidden("watch ServiceAccounts", err)
	_, err = cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
	forbidden("get a ServiceAccount", err)
	byLabels := metav1.ListOptions{LabelSelector: pullsecret.ManagedByLabel + "=" + pullsecret.ManagedByValue + "," + perSALabel + "=true"}
	_, err = cs.CoreV1().Secrets("").List(ctx, byLabels)
	forbidden("list per-ServiceAccount Secrets by label", err)
	_, err = cs.CoreV1().Secrets("").Watch(ctx, byLabels)
	forbidden("watch per-ServiceAccount Secrets by label", err)
	_, err = cs.CoreV1().Secrets(ns).Create(ctx, perSASecret(t, ns, "app"), metav1.CreateOptions{})
	if !deniedByPolicy(err) {
		t.Errorf("create a per-ServiceAccount Secret as the webhook-identity chart's ServiceAccount: got %v, want the policy's refusal", err)
	}
}
