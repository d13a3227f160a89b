package emulator

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// startEnvtest starts kube-apiserver and etcd from KUBEBUILDER_ASSETS (default: the module's
// bin/k8s), serving OIDC discovery on 127.0.0.1 as e2e/harness does. It skips the test when the
// binaries are absent.
func startEnvtest(t *testing.T) (*envtest.Environment, *rest.Config) {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join("..", "..", "bin", "k8s")
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			t.Skipf("%s not found in %s (set KUBEBUILDER_ASSETS or run `make envtest-bins`)", bin, assets)
		}
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	env.ControlPlane.GetAPIServer().Configure().Set("advertise-address", "127.0.0.1")
	env.ControlPlane.GetAPIServer().Configure().Set("endpoint-reconciler-type", "none")
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	return env, cfg
}

// TestOIDCExchangeOfEnvtestServiceAccountTokens exchanges real ServiceAccount tokens of the envtest
// API server (TokenRequest), verified through its OIDC discovery and JWKS with Options.IssuerClient.
func TestOIDCExchangeOfEnvtestServiceAccountTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver")
	}
	kube, cfg := startEnvtest(t)
	issuer := kube.ControlPlane.APIServer.SecureServing.URL("https", "/").String()
	issuerClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	env, err := Start(t.Context(), Options{Issuer: issuer, IssuerClient: issuerClient})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	art := env.Artifactory
	audience := art.URL()
	// No Client: the provider is reached with Options.IssuerClient.
	art.SetOIDCProvider(OIDCProvider{Name: "kubernetes", IssuerURL: issuer, Audience: audience})
	art.AddOIDCMapping("kubernetes", OIDCMapping{
		Name: "team-a", Priority: 1, Username: "team-a-puller",
		Claims: map[string]string{"iss": issuer, "sub": "system:serviceaccount:team-a:*"},
	})
	art.AddOIDCMapping("kubernetes", OIDCMapping{
		Name: "any-sa", Priority: 2, UsernameFromClaim: "sub",
		Claims: map[string]string{"sub": "system:serviceaccount:*:*"},
	})

	saToken := func(ns, sa string, audiences ...string) string {
		t.Helper()
		ctx := t.Context()
		if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
			if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, sa, metav1.GetOptions{}); err != nil {
			if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr.To[int64](600)},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}

	if _, err := env.Registry.PushRandomImage(t.Context(), "team-a/app", "v1", env.AdminUser, env.AdminPassword); err != nil {
		t.Fatal(err)
	}
	art.SetRepositoryPermissions("team-a-puller", "team-a/*")

	a := mustExchange(t, art, saToken("team-a", "puller", audience), "kubernetes", "team-a-puller")
	if err := env.Registry.PullManifest(t.Context(), env.Registry.Host()+"/team-a/app:v1",
		[]corev1.Secret{pullSecret(t, env.Registry.Host(), a.Username, a.AccessToken)}); err != nil {
		t.Errorf("pull with the exchanged token: %v", err)
	}
	mustExchange(t, art, saToken("team-b", "builder", audience), "kubernetes", "system.serviceaccount.team-b.builder")
	// identity_mapping_name picks the lower-priority mapping for team-a too.
	mustExchange(t, art, saToken("team-a", "puller", audience), "kubernetes", "system.serviceaccount.team-a.puller",
		"identity_mapping_name", "any-sa")

	status, body := exchangeForm(t, art, oidcForm(saToken("team-a", "puller", "sts.amazonaws.com"), "kubernetes"))
	wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED", `Invalid audience: token audience ["sts.amazonaws.com"]`)

	if got := art.OIDCExchanges(); got != 3 {
		t.Errorf("OIDCExchanges() = %d, want 3", got)
	}
	if got := len(art.OIDCSubjectTokens()); got != 4 {
		t.Errorf("OIDCSubjectTokens() has %d, want 4", got)
	}
}
