package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/emulator"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// bearerRepositories calls Artifactory's GET Repositories with token as a
// bearer token, as a tool given the generic token Secret does, and
// returns the HTTP status.
func bearerRepositories(t *testing.T, token string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, stack.Emu.Artifactory.URL()+emulator.RepositoriesPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := stack.Emu.Artifactory.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var repos []json.RawMessage
	if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&repos) != nil {
		t.Errorf("GET Repositories answered 200 without a JSON list")
	}
	return resp.StatusCode
}

// TestOptedInNamespaceGetsAGenericTokenSecretForItsTools: an instance with
// tokenSecretName gives every opted-in namespace an Opaque Secret whose
// token works as a bearer token against Artifactory's API and, with its
// username, for a registry login; it is refreshed at rotation, never put
// on pods, and deleted at opt-out.
func TestOptedInNamespaceGetsAGenericTokenSecretForItsTools(t *testing.T) {
	ctx := context.Background()
	run := runInstance("tok")
	name := "token-" + run
	cfg := strings.Replace(lifecycleConfig(run, "24s", 0.5), "  secretName: pull-"+run+"\n",
		"  secretName: pull-"+run+"\n  tokenSecretName: "+name+"\n", 1)
	if !strings.Contains(cfg, "tokenSecretName") {
		t.Fatal("no secretName line to add tokenSecretName after")
	}
	startLifecycleWebhook(t, cfg)
	ns := optedIn(t)

	var first *corev1.Secret
	eventually(t, 15*time.Second, "the token Secret in an opted-in namespace", func() bool {
		var ok bool
		first, ok = getSecret(t, ns, name)
		return ok
	})
	d := first.Data
	if first.Type != corev1.SecretTypeOpaque || string(d[pullsecret.TokenSecretUsername]) != stack.Emu.Username ||
		string(d[pullsecret.TokenSecretURL]) != stack.Emu.Artifactory.URL() || string(d[pullsecret.TokenSecretRegistry]) != stack.Emu.Registry.Host() {
		t.Fatalf("token Secret: type %s, username %q, url %q, registry %q", first.Type, d[pullsecret.TokenSecretUsername],
			d[pullsecret.TokenSecretURL], d[pullsecret.TokenSecretRegistry])
	}
	token := string(d[pullsecret.TokenSecretToken])
	if code := bearerRepositories(t, token); code != http.StatusOK {
		t.Errorf("its token as a bearer token: HTTP %d", code)
	}
	if code := bearerRepositories(t, token+"x"); code != http.StatusUnauthorized {
		t.Errorf("precondition: a wrong bearer token got HTTP %d", code)
	}
	if err := stack.Emu.Registry.PullManifestAs(ctx, stack.Image, string(d[pullsecret.TokenSecretUsername]), token); err != nil {
		t.Errorf("registry login with its username and token: %v", err)
	}

	got, _ := createPod(t, ns, pod("app", stack.Image))
	if slices.Contains(pullSecretNames(got), name) || !slices.Equal(pullSecretNames(got), []string{"pull-" + run}) {
		t.Errorf("pod's imagePullSecrets %v: want only the pull Secret", pullSecretNames(got))
	}

	eventually(t, 30*time.Second, "the token Secret refreshed at its token's half-life", func() bool {
		s, ok := getSecret(t, ns, name)
		return ok && string(s.Data[pullsecret.TokenSecretToken]) != token
	})
	now, _ := getSecret(t, ns, name)
	if code := bearerRepositories(t, string(now.Data[pullsecret.TokenSecretToken])); code != http.StatusOK {
		t.Errorf("the refreshed token as a bearer token: HTTP %d", code)
	}
	// One exchange serves both: the pull Secret carries the same token
	// (they may be a moment apart while the refresher writes them).
	eventually(t, 10*time.Second, "the pull and token Secrets to carry one token", func() bool {
		p, ok1 := getSecret(t, ns, "pull-"+run)
		n, ok2 := getSecret(t, ns, name)
		if !ok1 || !ok2 {
			return false
		}
		_, pt, err := pullsecret.ParseDockerConfigJSON(p.Data[corev1.DockerConfigJsonKey], stack.Emu.Registry.Host())
		return err == nil && pt.Reveal() == string(n.Data[pullsecret.TokenSecretToken])
	})

	var nsObj corev1.Namespace
	if err := stack.Cluster.Client.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		t.Fatal(err)
	}
	delete(nsObj.Labels, harness.OptInLabel)
	if err := stack.Cluster.Client.Update(ctx, &nsObj); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the token Secret deleted at opt-out", func() bool {
		_, ok := getSecret(t, ns, name)
		return !ok
	})
	// Hygiene: the token Secrets' writes, refreshes and deletion put no
	// token in the log, the metrics or an Event.
	searchForSecrets(t, operatorView(t, nil), map[string]string{"the first token Secret's token": token})
}
