package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/emulator"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
)

// providerName is the plugin's binary name, which kubelet's
// CredentialProviderConfig names.
const providerName = "artifactory-credential-provider"

var providerBuild struct {
	once sync.Once
	dir  string
	err  error
}

// providerBinDir builds the credential provider once into the directory
// kubelet's runner execs it from.
func providerBinDir(t *testing.T) string {
	t.Helper()
	providerBuild.once.Do(func() {
		providerBuild.dir = filepath.Join(stack.Dir, "kubelet-plugins")
		cmd := exec.Command("go", "build", "-o", filepath.Join(providerBuild.dir, providerName), "./cmd/"+providerName)
		cmd.Dir = harness.ModuleRoot()
		if b, err := cmd.CombinedOutput(); err != nil {
			providerBuild.err = fmt.Errorf("building the credential provider: %w\n%s", err, b)
		}
	})
	if providerBuild.err != nil {
		t.Fatal(providerBuild.err)
	}
	return providerBuild.dir
}

// kubeletKeyring is kubelet's own plugin runner and keyring
// (hack/tools/kube-apiserver/kubelet-keyring, built by make e2e).
func kubeletKeyring(t *testing.T) string {
	t.Helper()
	path := os.Getenv("KUBELET_KEYRING")
	if path == "" {
		path = filepath.Join(harness.ModuleRoot(), "bin", "kubelet-keyring")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("kubelet's plugin runner: %v (make kubelet-keyring builds it; make e2e does)", err)
	}
	return path
}

// providerConfig is a kubelet CredentialProviderConfig running the plugin
// for the registry's host, with args and env; tokenAttributes turn on the
// service-account-token mode.
func providerConfig(t *testing.T, args []string, env map[string]string, tokenAttributes map[string]any) string {
	t.Helper()
	var envList []map[string]string
	for k, v := range env {
		envList = append(envList, map[string]string{"name": k, "value": v})
	}
	p := map[string]any{"name": providerName, "matchImages": []string{stack.Emu.Registry.Host()},
		"defaultCacheDuration": "1m", "apiVersion": "credentialprovider.kubelet.k8s.io/v1", "args": args, "env": envList}
	if tokenAttributes != nil {
		p["tokenAttributes"] = tokenAttributes
	}
	b, err := yaml.Marshal(map[string]any{"apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig",
		"providers": []any{p}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "credential-provider-config.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// providerArgs are the plugin's flags against the emulators, with its
// own disk cache.
func providerArgs(t *testing.T, extra ...string) []string {
	return append([]string{"--url", stack.Emu.Artifactory.URL(), "--registry", stack.Emu.Registry.Host(),
		"--ca-bundle", filepath.Join(stack.Dir, "artifactory-ca.pem"), "--sts-endpoint", stack.Emu.STS.URL(),
		"--cache-dir", filepath.Join(t.TempDir(), "cache")}, extra...)
}

// nodeIdentity maps a fresh IAM role to a fresh Artifactory user and
// returns the user and the environment that makes the role the node's
// identity (its session credentials, as the SDK's default chain reads
// them; IMDS off).
func nodeIdentity(t *testing.T, name string) (string, map[string]string) {
	t.Helper()
	role := "arn:aws:iam::" + fmt.Sprint(444455556666) + ":role/" + name
	user := name + "-node"
	stack.Emu.Artifactory.SetMapping(role, user)
	stack.Emu.Artifactory.SetRepositoryPermissions(user, harness.ImageRepo)
	t.Cleanup(func() {
		stack.Emu.Artifactory.RemoveMapping(role)
		stack.Emu.Artifactory.ClearRepositoryPermissions(user)
	})
	c := stack.Emu.STS.IssueCredentials(role, "i-0123456789abcdef0", time.Hour)
	return user, map[string]string{"AWS_ACCESS_KEY_ID": c.AccessKeyID, "AWS_SECRET_ACCESS_KEY": c.SecretAccessKey,
		"AWS_SESSION_TOKEN": c.SessionToken, "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull}
}

// keyringAuth is one credential kubelet's keyring answered.
type keyringAuth struct{ Username, Password string }

// lookup runs kubelet's plugin runner with config for image, as kubelet
// does for a pod (namespace, name, UID, ServiceAccount; empty for none),
// and returns the keyring's credentials.
func lookup(t *testing.T, config, image string, pod *corev1.Pod) ([]keyringAuth, string) {
	t.Helper()
	args := []string{"--config", config, "--bin-dir", providerBinDir(t)}
	if pod != nil {
		args = append(args, "--kubeconfig", stack.Cluster.Kubeconfig, "--namespace", pod.Namespace, "--pod", pod.Name,
			"--pod-uid", string(pod.UID), "--service-account", pod.Spec.ServiceAccountName)
	}
	cmd := exec.Command(kubeletKeyring(t), append(args, image)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubelet-keyring: %v\n%s", err, stderr.String())
	}
	// Hygiene: what the plugin writes on stderr lands in kubelet's log.
	searchForSecrets(t, map[string]string{"kubelet's log": stderr.String()}, nil)
	var out []struct {
		Found bool
		Auth  []keyringAuth
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || len(out) != 1 {
		t.Fatalf("kubelet-keyring answered %q: %v", stdout.String(), err)
	}
	return out[0].Auth, stderr.String()
}

// pullWith pulls image with the first credential kubelet would try.
func pullWith(image string, auth []keyringAuth) error {
	if len(auth) == 0 {
		return stack.Emu.Registry.PullManifest(context.Background(), image, nil)
	}
	return stack.Emu.Registry.PullManifestAs(context.Background(), image, auth[0].Username, auth[0].Password)
}

// TestKubeletPullsWithTheCredentialProviderAsTheNode runs the plugin
// through kubelet's own exec-plugin runner with a real
// CredentialProviderConfig: the keyring kubelet builds pulls the image as
// the user the node's role maps to, and an anonymous pull is refused.
func TestKubeletPullsWithTheCredentialProviderAsTheNode(t *testing.T) {
	user, env := nodeIdentity(t, "node-a")
	cfg := providerConfig(t, providerArgs(t), env, nil)
	before := stack.Emu.Artifactory.ExchangesFor(user)
	auth, logs := lookup(t, cfg, stack.Image, nil)
	if len(auth) != 1 || auth[0].Username != user {
		t.Fatalf("keyring answered %d credentials (%v), want one of %s; kubelet logs:\n%s", len(auth), usernames(auth), user, logs)
	}
	if err := pullWith(stack.Image, auth); err != nil {
		t.Errorf("pulling with kubelet's credentials: %v", err)
	}
	if err := pullWith(stack.Image, nil); err == nil {
		t.Error("an anonymous pull succeeded: the test proves nothing")
	}
	if d := stack.Emu.Artifactory.ExchangesFor(user) - before; d != 1 {
		t.Errorf("%d exchanges, want 1", d)
	}
	// An image of another registry is not the plugin's: kubelet does not
	// run it (matchImages) and has nothing for it.
	if auth, _ := lookup(t, cfg, "ghcr.io/team/app:1.0", nil); len(auth) != 0 {
		t.Errorf("credentials for ghcr.io: %v", usernames(auth))
	}
}

// TestKubeletPullsAsEachPodsServiceAccount is the service-account-token
// mode through kubelet's runner: kubelet requests a token bound to the pod
// from the API server and passes the ServiceAccount's role annotation; two
// ServiceAccounts map to two users with different repository permissions,
// each pulls its own team's image and is denied the other's. A
// ServiceAccount naming the other team's role gets nothing: STS does not
// let it assume the role.
func TestKubeletPullsAsEachPodsServiceAccount(t *testing.T) {
	a, b := newTeamIn(t, namespace(t, nil), "a"), newTeamIn(t, namespace(t, nil), "b")
	attrs := map[string]any{"serviceAccountTokenAudience": "sts.amazonaws.com", "cacheType": "ServiceAccount",
		"requireServiceAccount": true, "optionalServiceAccountAnnotationKeys": []string{config.RoleARNAnnotation}}
	cfg := providerConfig(t, providerArgs(t, "--identity", "serviceAccount"), map[string]string{"AWS_EC2_METADATA_DISABLED": "true"}, attrs)
	role := func(tm team) map[string]string { return map[string]string{config.RoleARNAnnotation: tm.role} }
	createServiceAccount(t, a.ns, "api", role(a))
	createServiceAccount(t, b.ns, "api", role(b))
	createServiceAccount(t, b.ns, "intruder", role(a))

	for _, tc := range []struct{ tm, other team }{{a, b}, {b, a}} {
		p := createdPod(t, tc.tm.ns, podAs("app", "api", tc.tm.image))
		before := exchangesOf(a.user, b.user)
		auth, logs := lookup(t, cfg, tc.tm.image, p)
		if len(auth) != 1 || auth[0].Username != tc.tm.user {
			t.Fatalf("%s/api: keyring answered %v, want %s; kubelet logs:\n%s", tc.tm.ns, usernames(auth), tc.tm.user, logs)
		}
		if d := exchangesOf(a.user, b.user) - before; d != 1 {
			t.Errorf("%s/api: %d exchanges, want 1", tc.tm.ns, d)
		}
		if err := pullWith(tc.tm.image, auth); err != nil {
			t.Errorf("%s pulling its own team's image: %v", tc.tm.user, err)
		}
		if err := pullWith(tc.other.image, auth); err == nil {
			t.Errorf("%s pulled the other team's image %s", tc.tm.user, tc.other.image)
		}
	}

	p := createdPod(t, b.ns, podAs("intruder", "intruder", a.image))
	before := exchangesOf(a.user, b.user)
	auth, logs := lookup(t, cfg, a.image, p)
	if len(auth) != 0 {
		t.Errorf("a ServiceAccount naming another team's role got credentials of %v", usernames(auth))
	}
	if d := exchangesOf(a.user, b.user) - before; d != 0 {
		t.Errorf("%d exchanges for an untrusted ServiceAccount", d)
	}
	if !strings.Contains(logs, "AssumeRoleWithWebIdentity") || !strings.Contains(logs, "intruder") {
		t.Errorf("kubelet's log does not say why:\n%s", logs)
	}
}

// createdPod creates p in ns (no kubelet runs it) and returns it with its UID.
func createdPod(t *testing.T, ns string, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	p.Namespace = ns
	if err := stack.Cluster.Client.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

func usernames(auth []keyringAuth) []string {
	var names []string
	for _, a := range auth {
		names = append(names, a.Username)
	}
	return names
}

// TestCredentialProviderInvocationsShareOneExchange execs the plugin as
// kubelet does, once per pull, with one disk cache: 20 invocations one
// after another make one exchange, and 20 at once (a fresh cache) make
// one too, each answering the same token.
func TestCredentialProviderInvocationsShareOneExchange(t *testing.T) {
	binary := filepath.Join(providerBinDir(t), providerName)
	request := fmt.Sprintf(`{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":%q}`, stack.Image)
	user, env := nodeIdentity(t, "node-cache")
	invoke := func(args []string) (string, error) {
		cmd := exec.Command(binary, args...)
		cmd.Env = os.Environ()
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Stdin = strings.NewReader(request)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("%w: %s", err, stderr.String())
		}
		var resp struct {
			Auth map[string]keyringAuth `json:"auth"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil {
			return "", err
		}
		return resp.Auth[stack.Emu.Registry.Host()].Password, nil
	}

	args := providerArgs(t)
	before := stack.Emu.Artifactory.ExchangesFor(user)
	tokens := map[string]bool{}
	for range 20 {
		tok, err := invoke(args)
		if err != nil {
			t.Fatal(err)
		}
		tokens[tok] = true
	}
	if d := stack.Emu.Artifactory.ExchangesFor(user) - before; d != 1 || len(tokens) != 1 {
		t.Errorf("20 sequential invocations: %d exchanges, %d distinct tokens; want 1 and 1", d, len(tokens))
	}

	args = providerArgs(t) // a fresh cache
	before = stack.Emu.Artifactory.ExchangesFor(user)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	tokens = map[string]bool{}
	for range 20 {
		wg.Go(func() {
			tok, err := invoke(args)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			tokens[tok] = true
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	if d := stack.Emu.Artifactory.ExchangesFor(user) - before; d != 1 || len(tokens) != 1 {
		t.Errorf("20 concurrent invocations: %d exchanges, %d distinct tokens; want 1 and 1", d, len(tokens))
	}
}

// TestKubeletPullsAsEachPodsServiceAccountThroughTheOIDCExchange is the
// token mode with --exchange oidc: kubelet's pod-bound token, of the
// audience the Artifactory integration expects, is the subject token; the
// cluster's own issuer is the OIDC provider, and each namespace's
// ServiceAccounts map to their team's user.
func TestKubeletPullsAsEachPodsServiceAccountThroughTheOIDCExchange(t *testing.T) {
	provider, audience := "kubelet-"+runInstance("ko"), "artifactory-kubelet"
	stack.Emu.Artifactory.SetOIDCProvider(emulator.OIDCProvider{Name: provider, IssuerURL: stack.Cluster.Issuer(), Audience: audience})
	t.Cleanup(func() { stack.Emu.Artifactory.RemoveOIDCProvider(provider) })
	a, b := newOIDCTeam(t, provider, 1), newOIDCTeam(t, provider, 2)
	attrs := map[string]any{"serviceAccountTokenAudience": audience, "cacheType": "ServiceAccount", "requireServiceAccount": true}
	cfg := providerConfig(t, providerArgs(t, "--identity", "serviceAccount", "--exchange", "oidc", "--oidc-provider-name", provider), nil, attrs)
	for _, tc := range []struct{ tm, other oidcTeam }{{a, b}, {b, a}} {
		createServiceAccount(t, tc.tm.ns, "api", nil)
		p := createdPod(t, tc.tm.ns, podAs("kubelet-app", "api", tc.tm.image))
		auth, logs := lookup(t, cfg, tc.tm.image, p)
		if len(auth) != 1 || auth[0].Username != tc.tm.user {
			t.Fatalf("%s/api: keyring answered %v, want %s; kubelet logs:\n%s", tc.tm.ns, usernames(auth), tc.tm.user, logs)
		}
		if err := pullWith(tc.tm.image, auth); err != nil {
			t.Errorf("%s pulling its own team's image: %v", tc.tm.user, err)
		}
		if err := pullWith(tc.other.image, auth); err == nil {
			t.Errorf("%s pulled the other team's image %s", tc.tm.user, tc.other.image)
		}
	}
}
