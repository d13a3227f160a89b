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

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/emulator"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// oidcConfig has two OIDC instances: per ServiceAccount on the registry's
// own host (the cluster's issuer is the provider), and the webhook's own
// identity with a token file (a second, standalone issuer) on the localhost
// alias.
func oidcConfig(run, provider, fileProvider, tokenFile string) string {
	return fmt.Sprintf(`instances:
- name: oidc%[1]s
  url: %[2]s
  registryHosts: [%[3]q]
  tokenTTL: 24s
  caBundle: %[5]s
  secretName: oidc-%[1]s
  identity: serviceAccount
  exchange: oidc
  oidc: {providerName: %[6]s}
- name: file%[1]s
  url: %[2]s
  registryHosts: [%[4]q]
  tokenTTL: 24s
  caBundle: %[5]s
  secretName: file-%[1]s
  exchange: oidc
  oidc: {providerName: %[7]s, subjectToken: {source: file, path: %[8]s}}
refreshThreshold: 0.5
requestTimeout: 2s
provisionOnOptIn: false
backoffCap: 4s
`, run, stack.Emu.Artifactory.URL(), stack.Emu.Registry.Host(), stack.BurstHost,
		filepath.Join(stack.Dir, "artifactory-ca.pem"), provider, fileProvider, tokenFile)
}

// oidcTeam is a namespace whose ServiceAccounts map, by sub, to one
// Artifactory user that may pull only the namespace's repository.
type oidcTeam struct{ ns, user, image string }

func newOIDCTeam(t *testing.T, provider string, priority int) oidcTeam {
	t.Helper()
	ns := optedIn(t)
	tm := oidcTeam{ns: ns, user: ns + "-oidc", image: stack.Emu.Registry.Host() + "/" + ns + "/app:1.0"}
	if _, err := stack.Emu.Registry.PushRandomImage(context.Background(), ns+"/app", "1.0", stack.Emu.AdminUser, stack.Emu.AdminPassword); err != nil {
		t.Fatal(err)
	}
	stack.Emu.Artifactory.AddOIDCMapping(provider, emulator.OIDCMapping{Name: ns, Priority: priority, Username: tm.user,
		Claims: map[string]string{"sub": "system:serviceaccount:" + ns + ":*"}})
	stack.Emu.Artifactory.SetRepositoryPermissions(tm.user, ns+"/*")
	t.Cleanup(func() { stack.Emu.Artifactory.ClearRepositoryPermissions(tm.user) })
	return tm
}

// TestOIDCExchangeGivesEachServiceAccountItsMappedUser runs issue #12
// through admission with the cluster's own issuer as the OIDC provider: no
// AWS at all. Two ServiceAccounts of two namespaces are mapped by sub to
// two users with different repository permissions; each pod's Secret pulls
// its own repository and is denied the other's; one exchange per
// ServiceAccount and rotation; a token of the wrong audience is refused with
// Artifactory's reason in the warning and the Event; the file source picks
// up a rotated file.
func TestOIDCExchangeGivesEachServiceAccountItsMappedUser(t *testing.T) {
	run := runInstance("oi")
	provider, fileProvider := "k8s-"+run, "file-"+run
	stack.Emu.Artifactory.SetOIDCProvider(emulator.OIDCProvider{Name: provider, IssuerURL: stack.Cluster.Issuer(), Audience: stack.Emu.Artifactory.URL()})
	t.Cleanup(func() { stack.Emu.Artifactory.RemoveOIDCProvider(provider) })
	issuer, err := emulator.NewOIDCIssuer(emulator.OIDCIssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(issuer.Close)
	stack.Emu.Artifactory.SetOIDCProvider(emulator.OIDCProvider{Name: fileProvider, IssuerURL: issuer.URL(), Audience: "artifactory", Client: issuer.Client()})
	t.Cleanup(func() { stack.Emu.Artifactory.RemoveOIDCProvider(fileProvider) })
	fileUser := "ci-" + run
	stack.Emu.Artifactory.AddOIDCMapping(fileProvider, emulator.OIDCMapping{Name: "ci", Priority: 1, Username: fileUser,
		Claims: map[string]string{"sub": "ci-runner"}})
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeToken := func(sub string) {
		t.Helper()
		tok, err := issuer.Sign(map[string]any{"sub": sub, "aud": "artifactory", "exp": time.Now().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tokenFile, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeToken("ci-runner")
	a, b := newOIDCTeam(t, provider, 1), newOIDCTeam(t, provider, 2)
	createServiceAccount(t, a.ns, "api", nil) // no annotation: the ServiceAccount is the identity
	createServiceAccount(t, b.ns, "api", nil)
	startLifecycleWebhook(t, oidcConfig(run, provider, fileProvider, tokenFile))
	secret := "oidc-" + run + "-api"

	before := exchangesOf(a.user, b.user)
	for _, c := range []struct{ tm, other oidcTeam }{{a, b}, {b, a}} {
		got, warnings := createPod(t, c.tm.ns, podAs("app", "api", c.tm.image))
		if n := pullSecretNames(got); !slices.Equal(n, []string{secret}) {
			t.Fatalf("%s: imagePullSecrets %v, want [%s] (warnings %v)", c.tm.ns, n, secret, warnings)
		}
		s, _ := getSecret(t, c.tm.ns, secret)
		if user, _, err := pullsecret.ParseDockerConfigJSON(s.Data[corev1.DockerConfigJsonKey], stack.Emu.Registry.Host()); err != nil || user != c.tm.user {
			t.Errorf("%s: Secret of user %q (%v), want %q", c.tm.ns, user, err, c.tm.user)
		}
		if s.Annotations[pullsecret.AnnotationIdentity] != "sa:"+c.tm.ns+"/api" {
			t.Errorf("identity annotation %q", s.Annotations[pullsecret.AnnotationIdentity])
		}
		if err := pull(c.tm.ns, c.tm.image, []string{secret}); err != nil {
			t.Errorf("%s pulling its own image: %v", c.tm.user, err)
		}
		if err := pull(c.tm.ns, c.other.image, []string{secret}); err == nil {
			t.Errorf("%s pulled the other team's image", c.tm.user)
		}
	}
	// A second ServiceAccount of team A: its own token, its own exchange
	// (the token is the ServiceAccount's, not shared).
	createServiceAccount(t, a.ns, "worker", nil)
	if got, w := createPod(t, a.ns, podAs("worker", "worker", a.image)); !slices.Equal(pullSecretNames(got), []string{"oidc-" + run + "-worker"}) {
		t.Fatalf("worker: %v %v", pullSecretNames(got), w)
	}
	if d := exchangesOf(a.user, b.user) - before; d != 3 {
		t.Errorf("%d exchanges for three ServiceAccounts, want 3 (one each)", d)
	}
	// A warm pod: no exchange.
	before = exchangesOf(a.user, b.user)
	createPod(t, a.ns, podAs("app2", "api", a.image))
	if d := exchangesOf(a.user, b.user) - before; d != 0 {
		t.Errorf("a warm admission cost %d exchanges", d)
	}
	// Refresh at half-life: one exchange per ServiceAccount.
	old, _ := getSecret(t, a.ns, secret)
	before = exchangesOf(a.user, b.user)
	eventually(t, 30*time.Second, "the ServiceAccounts' Secrets refreshed", func() bool {
		s, _ := getSecret(t, a.ns, secret)
		return s != nil && token(t, s) != token(t, old)
	})
	if d := exchangesOf(a.user, b.user) - before; d < 1 || d > 3 {
		t.Errorf("%d exchanges for one rotation of three ServiceAccounts", d)
	}

	// The file source: the webhook's own identity; a rotated file is read
	// at the next exchange.
	sharedImage := stack.BurstHost + "/" + a.ns + "/app:1.0"
	stack.Emu.Artifactory.SetRepositoryPermissions(fileUser, a.ns+"/*")
	t.Cleanup(func() { stack.Emu.Artifactory.ClearRepositoryPermissions(fileUser) })
	got, w := createPod(t, a.ns, podAs("ci", "api", sharedImage))
	if n := pullSecretNames(got); !slices.Equal(n, []string{"file-" + run}) {
		t.Fatalf("file source: %v %v", n, w)
	}
	if err := pull(a.ns, sharedImage, []string{"file-" + run}); err != nil {
		t.Errorf("file source's Secret: %v", err)
	}
	subjects := len(stack.Emu.Artifactory.OIDCSubjectTokens())
	writeToken("ci-runner") // rotated by the kubelet
	rotated, _ := os.ReadFile(tokenFile)
	eventually(t, 30*time.Second, "the rotated token file sent at the next exchange", func() bool {
		return slices.Contains(stack.Emu.Artifactory.OIDCSubjectTokens()[subjects:], string(rotated))
	})
}

// TestOIDCExchangeWithTheWrongAudienceExplainsTheRefusal: the integration
// expects another audience; the pod is admitted without the Secret, and the
// warning and the namespace's Event carry Artifactory's reason.
func TestOIDCExchangeWithTheWrongAudienceExplainsTheRefusal(t *testing.T) {
	run := runInstance("oa")
	provider := "k8s-" + run
	stack.Emu.Artifactory.SetOIDCProvider(emulator.OIDCProvider{Name: provider, IssuerURL: stack.Cluster.Issuer(), Audience: "https://not-this.example"})
	t.Cleanup(func() { stack.Emu.Artifactory.RemoveOIDCProvider(provider) })
	a := newOIDCTeam(t, provider, 1)
	createServiceAccount(t, a.ns, "api", nil)
	startLifecycleWebhook(t, oidcConfig(run, provider, provider, "/nonexistent"))
	got, warnings := createPod(t, a.ns, podAs("app", "api", a.image))
	if n := pullSecretNames(got); len(n) != 0 {
		t.Fatalf("patched %v though the audience is wrong", n)
	}
	w := strings.Join(warnings, "\n")
	if !strings.Contains(w, "as ServiceAccount api") || !strings.Contains(w, "HTTP 401") || !strings.Contains(strings.ToLower(w), "audience") {
		t.Errorf("warnings %q: want the ServiceAccount, the 401 and Artifactory's reason (audience)", warnings)
	}
	eventually(t, 10*time.Second, "a TokenExchangeFailed Event naming the audience", func() bool {
		return namespaceEventContains(t, a.ns, "TokenExchangeFailed", "audience")
	})
}

// TestOIDCExchangeWithTheGCPMetadataServersIdentityToken: with source
// gcpMetadata the webhook asks the metadata server (GCE_METADATA_HOST) for
// an identity token of the configured audience, with its Metadata-Flavor
// header, and Artifactory maps Google's claims (here the email) to a user.
func TestOIDCExchangeWithTheGCPMetadataServersIdentityToken(t *testing.T) {
	run := runInstance("og")
	google, err := emulator.NewOIDCIssuer(emulator.OIDCIssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(google.Close)
	email := "puller-" + run + "@project.iam.gserviceaccount.com"
	md := emulator.NewGCPMetadata(google, email)
	t.Cleanup(md.Close)
	provider, user := "gke-"+run, "gke-"+run+"-puller"
	stack.Emu.Artifactory.SetOIDCProvider(emulator.OIDCProvider{Name: provider, IssuerURL: google.URL(), Audience: "artifactory-" + run, Client: google.Client()})
	t.Cleanup(func() { stack.Emu.Artifactory.RemoveOIDCProvider(provider) })
	stack.Emu.Artifactory.AddOIDCMapping(provider, emulator.OIDCMapping{Name: "gke", Priority: 1, Username: user, Claims: map[string]string{"email": email}})
	cfg := fmt.Sprintf(`instances:
- name: gke%[1]s
  url: %[2]s
  registryHosts: [%[3]q]
  tokenTTL: 1h
  caBundle: %[4]s
  secretName: gke-%[1]s
  exchange: oidc
  oidc: {providerName: %[5]s, subjectToken: {source: gcpMetadata, audience: artifactory-%[1]s}}
requestTimeout: 2s
provisionOnOptIn: false
`, run, stack.Emu.Artifactory.URL(), stack.Emu.Registry.Host(), filepath.Join(stack.Dir, "artifactory-ca.pem"), provider)
	err = stack.StartWebhook(context.Background(), harness.PodIdentity, func(o *harness.WebhookOptions) {
		o.Config = cfg
		o.Env = append(o.Env, "GCE_METADATA_HOST="+md.URL())
		o.Args = append(o.Args, leaderArgs...)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && stack.Webhook != nil {
			t.Log("webhook logs:\n" + stack.Webhook.Logs())
		}
		restartWebhook(t, harness.PodIdentity)
	})
	ns := optedIn(t)
	got, warnings := createPod(t, ns, pod("app", stack.Image))
	if n := pullSecretNames(got); !slices.Equal(n, []string{"gke-" + run}) {
		t.Fatalf("imagePullSecrets %v, want [gke-%s] (warnings %v)", n, run, warnings)
	}
	s, _ := getSecret(t, ns, "gke-"+run)
	if u, _, err := pullsecret.ParseDockerConfigJSON(s.Data[corev1.DockerConfigJsonKey], stack.Emu.Registry.Host()); err != nil || u != user {
		t.Errorf("Secret of user %q (%v), want %q", u, err, user)
	}
	if err := pull(ns, stack.Image, []string{"gke-" + run}); err != nil {
		t.Errorf("pull: %v", err)
	}
	if md.Requests() == 0 {
		t.Error("the metadata server was not asked")
	}
}
