package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/emulator"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/internal/leaktest"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestGolden")

func TestOptions(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, tc := range []struct {
		name  string
		args  []string
		env   func(string) string
		want  func(options) bool
		error []string // substrings; none: valid
	}{
		{name: "defaults", args: []string{"--url", "https://acme.jfrog.io/"}, want: func(o options) bool {
			return o.Exchange == config.ExchangeAWS && o.Identity == identityNode && o.AuthType == credentials.AuthDefault &&
				o.TokenTTL == config.DefaultTokenTTL && o.CacheDir == DefaultCacheDir && len(o.Registries) == 1 && o.Registries[0] == "acme.jfrog.io"
		}},
		{name: "env fills what args leave", args: []string{"--region", "eu-west-1"},
			env: env("ARTIFACTORY_PROVIDER_URL", "https://a.example.io", "ARTIFACTORY_PROVIDER_REGION", "us-east-2",
				"ARTIFACTORY_PROVIDER_REGISTRY", "A.example.io, *.example.io:5000", "ARTIFACTORY_PROVIDER_TOKEN_TTL", "30m"),
			want: func(o options) bool {
				return o.URL == "https://a.example.io" && o.Region == "eu-west-1" && o.TokenTTL == 30*time.Minute &&
					strings.Join(o.Registries, ",") == "a.example.io,*.example.io:5000"
			}},
		{name: "oidc serviceAccount", args: []string{"--url", "https://a.example.io", "--exchange", "oidc", "--identity", "serviceAccount",
			"--oidc-provider-name", "k8s", "--cache-dir", ""}, want: func(o options) bool {
			return o.Exchange == config.ExchangeOIDC && o.Identity == identityServiceAccount && o.CacheDir == ""
		}},
		{name: "no url", error: []string{"--url (ARTIFACTORY_PROVIDER_URL): the Artifactory base URL is required"}},
		{name: "http url", args: []string{"--url", "http://a.example.io"}, error: []string{"--url", "not an absolute https URL"}},
		{name: "url with credentials", args: []string{"--url", "https://u:p@a.example.io"}, error: []string{"--url", "without credentials"}},
		{name: "bad registry", args: []string{"--url", "https://a.example.io", "--registry", "https://x/y"}, error: []string{"--registry (ARTIFACTORY_PROVIDER_REGISTRY)"}},
		{name: "bad env value", env: env("ARTIFACTORY_PROVIDER_TOKEN_TTL", "soon"), error: []string{"ARTIFACTORY_PROVIDER_TOKEN_TTL"}},
		{name: "bad identity", args: []string{"--url", "https://a.example.io", "--identity", "pod"}, error: []string{"--identity", `"pod"`}},
		{name: "bad exchange", args: []string{"--url", "https://a.example.io", "--exchange", "saml"}, error: []string{"--exchange", `"saml"`}},
		{name: "bad auth type", args: []string{"--url", "https://a.example.io", "--auth-type", "imds"}, error: []string{"--auth-type", `"imds"`}},
		{name: "bad region", args: []string{"--url", "https://a.example.io", "--region", "Europe"}, error: []string{"--region", "not an AWS region"}},
		{name: "bad role", args: []string{"--url", "https://a.example.io", "--assume-role", "puller"}, error: []string{"--assume-role", "not an IAM role ARN"}},
		{name: "external id alone", args: []string{"--url", "https://a.example.io", "--assume-role-external-id", "x"}, error: []string{"--assume-role-external-id", "needs --assume-role"}},
		{name: "oidc without provider", args: []string{"--url", "https://a.example.io", "--exchange", "oidc", "--identity", "serviceAccount"},
			error: []string{"--oidc-provider-name", "required"}},
		{name: "oidc node without token file", args: []string{"--url", "https://a.example.io", "--exchange", "oidc", "--oidc-provider-name", "k8s"},
			error: []string{"--oidc-token-file", "required"}},
		{name: "oidc flags with aws", args: []string{"--url", "https://a.example.io", "--oidc-provider-name", "k8s"}, error: []string{"--oidc-provider-name", "only with --exchange oidc"}},
		{name: "opt-in with node", args: []string{"--url", "https://a.example.io", "--opt-in-annotation", "JFrogExchange"}, error: []string{"--opt-in-annotation"}},
		{name: "ttl", args: []string{"--url", "https://a.example.io", "--token-ttl", "1500ms"}, error: []string{"--token-ttl", "whole seconds"}},
		{name: "threshold", args: []string{"--url", "https://a.example.io", "--refresh-threshold", "1"}, error: []string{"--refresh-threshold"}},
		{name: "timeout", args: []string{"--url", "https://a.example.io", "--timeout", "2m"}, error: []string{"--timeout", "a minute"}},
		{name: "argument", args: []string{"--url", "https://a.example.io", "extra"}, error: []string{`unexpected argument "extra"`}},
		{name: "every error at once", args: []string{"--url", "http://x", "--exchange", "saml", "--token-ttl", "1s"},
			error: []string{"--url", "--exchange", "--token-ttl"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := tc.env
			if getenv == nil {
				getenv = env()
			}
			o, err := parseOptions(tc.args, getenv)
			if len(tc.error) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if !tc.want(o) {
					t.Errorf("options %+v", o)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want one naming %v", tc.error)
			}
			for _, s := range tc.error {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}

// fixture is the emulated world of the golden tests: Artifactory and STS
// on one fixed clock, an OIDC issuer standing for the cluster's
// ServiceAccount issuer (trusted by STS and by Artifactory's OIDC
// integration "k8s"), and a role for the node.
type fixture struct {
	emu      *emulator.Env
	issuer   *emulator.OIDCIssuer
	caFile   string
	now      time.Time
	nodeEnv  map[string]string
	teamRole string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	clock := func() time.Time { return now }
	issuer, err := emulator.NewOIDCIssuer(emulator.OIDCIssuerOptions{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(issuer.Close)
	emu, err := emulator.Start(context.Background(), emulator.Options{Issuer: issuer.URL(), IssuerClient: issuer.Client(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	f := &fixture{emu: emu, issuer: issuer, now: now, teamRole: "arn:aws:iam::111122223333:role/team-a-puller"}
	f.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f.caFile, emu.Artifactory.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	emu.STS.SetTrust(f.teamRole, "system:serviceaccount:team-a:*")
	emu.Artifactory.SetMapping(f.teamRole, "team-a-puller")
	emu.Artifactory.SetOIDCProvider(emulator.OIDCProvider{Name: "k8s", IssuerURL: issuer.URL(), Audience: "artifactory", Client: issuer.Client()})
	emu.Artifactory.AddOIDCMapping("k8s", emulator.OIDCMapping{Name: "sa", Claims: map[string]string{"sub": "system:serviceaccount:*"},
		UsernameFromClaim: "sub", ExpiresIn: 1800})
	node := emu.STS.IssueCredentials(emu.RoleARN, "i-0123456789abcdef0", time.Hour)
	f.nodeEnv = map[string]string{"AWS_ACCESS_KEY_ID": node.AccessKeyID, "AWS_SECRET_ACCESS_KEY": node.SecretAccessKey,
		"AWS_SESSION_TOKEN": node.SessionToken, "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull, "AWS_REGION": "", "AWS_DEFAULT_REGION": "", "AWS_PROFILE": ""}
	return f
}

// serviceAccountToken is a token of ServiceAccount ns/name as the API
// server issues them (claims of a bound TokenRequest).
func (f *fixture) serviceAccountToken(t *testing.T, ns, name, audience string) string {
	t.Helper()
	tok, err := f.issuer.Sign(map[string]any{"iss": f.issuer.URL(), "sub": "system:serviceaccount:" + ns + ":" + name,
		"aud": []string{audience}, "iat": f.now.Unix(), "nbf": f.now.Unix(), "exp": f.now.Add(time.Hour).Unix(),
		"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]any{"name": name, "uid": "0b5c3ad2-" + name},
			"pod": map[string]any{"name": "app", "uid": "5f1e-app"}}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// invoke runs the plugin as kubelet does: args, environment, a request
// on stdin.
func (f *fixture) invoke(t *testing.T, args []string, request string) (stdout, stderr string, code int) {
	t.Helper()
	for k, v := range f.nodeEnv {
		t.Setenv(k, v) // the AWS SDK's default chain reads the process environment
	}
	args = append([]string{"--url", f.emu.Artifactory.URL(), "--registry", f.emu.Registry.Host(), "--ca-bundle", f.caFile,
		"--sts-endpoint", f.emu.STS.URL(), "--cache-dir", filepath.Join(t.TempDir(), "cache")}, args...)
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, func(string) string { return "" }, strings.NewReader(request), &out, &errOut,
		func() time.Time { return f.now })
	return out.String(), errOut.String(), code
}

func request(image, token string, annotations map[string]string) string {
	b, _ := json.Marshal(map[string]any{"apiVersion": apiVersion, "kind": "CredentialProviderRequest", "image": image,
		"serviceAccountToken": token, "serviceAccountAnnotations": annotations})
	return string(b)
}

// TestGolden runs request/response pairs against the emulators: each
// case's stdout (or stderr) and exit code must equal its file in testdata
// (go test -run TestGolden -update rewrites them), with the emulators'
// random hosts and the tokens they issue replaced by placeholders.
func TestGolden(t *testing.T) {
	f := newFixture(t)
	image := f.emu.Registry.Host() + "/team/app:1.0"
	teamA := map[string]string{credentials.RoleARNAnnotation: f.teamRole}
	cases := []struct {
		name    string
		args    []string
		request string
	}{
		{"node-aws", nil, request(image, "", nil)},
		{"node-aws-regional", []string{"--region", "eu-west-1"}, request(image, "", nil)},
		{"serviceaccount-aws", []string{"--identity", "serviceAccount"},
			request(image, f.serviceAccountToken(t, "team-a", "api", "sts.amazonaws.com"), teamA)},
		{"serviceaccount-oidc", []string{"--identity", "serviceAccount", "--exchange", "oidc", "--oidc-provider-name", "k8s"},
			request(image, f.serviceAccountToken(t, "team-b", "worker", "artifactory"), nil)},
		{"serviceaccount-aws-untrusted", []string{"--identity", "serviceAccount"},
			request(image, f.serviceAccountToken(t, "team-b", "api", "sts.amazonaws.com"), teamA)},
		{"serviceaccount-aws-no-role", []string{"--identity", "serviceAccount"},
			request(image, f.serviceAccountToken(t, "team-a", "api", "sts.amazonaws.com"), nil)},
		{"serviceaccount-without-token", []string{"--identity", "serviceAccount"}, request(image, "", nil)},
		{"node-aws-unmapped-role", []string{"--assume-role", "arn:aws:iam::123456789012:role/unmapped"}, request(image, "", nil)},
		{"foreign-host", nil, request("ghcr.io/team/app:1.0", "", nil)},
		// A field a newer kubelet adds is ignored, not a failed pull.
		{"request-from-a-newer-kubelet", nil, strings.Replace(request(image, "", nil), "{", `{"podNamespace":"team-a",`, 1)},
		{"old-api-version", nil, `{"apiVersion":"credentialprovider.kubelet.k8s.io/v1alpha1","kind":"CredentialProviderRequest","image":"` + image + `"}`},
		{"bad-configuration", []string{"--exchange", "saml"}, request(image, "", nil)},
	}
	// The node's role may assume "unmapped", which Artifactory maps to no user.
	f.emu.STS.SetAssumeTrust("arn:aws:iam::123456789012:role/unmapped", "", f.emu.RoleARN)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := f.invoke(t, tc.args, tc.request)
			got := placeholders(f, stdout, stderr, code)
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test -run TestGolden -update writes it)", err)
			}
			if got != string(want) {
				t.Errorf("got:\n%s\nwant (%s):\n%s", got, path, want)
			}
			// Hygiene: kubelet logs stderr; no secret of any kind is in it.
			var req struct{ ServiceAccountToken string }
			_ = json.Unmarshal([]byte(tc.request), &req)
			secrets := append(f.emu.Artifactory.IssuedTokens(), f.nodeEnv["AWS_SECRET_ACCESS_KEY"], f.nodeEnv["AWS_SESSION_TOKEN"])
			if req.ServiceAccountToken != "" {
				secrets = append(secrets, req.ServiceAccountToken, strings.Split(req.ServiceAccountToken, ".")[2])
			}
			for _, c := range f.emu.STS.IssuedCredentials() {
				secrets = append(secrets, c.SecretAccessKey, c.SessionToken)
			}
			for _, found := range leaktest.Find(stderr, secrets...) {
				t.Errorf("stderr carries a secret: %s", found)
			}
		})
	}
}

// placeholders renders one invocation for its golden file.
func placeholders(f *fixture, stdout, stderr string, code int) string {
	if stdout != "" {
		var pretty bytes.Buffer
		if json.Indent(&pretty, []byte(stdout), "", "  ") == nil {
			stdout = pretty.String() + "\n"
		}
	}
	s := "exit " + string(rune('0'+code)) + "\n--- stdout\n" + stdout + "--- stderr\n" + stderr
	for _, tok := range f.emu.Artifactory.IssuedTokens() {
		s = strings.ReplaceAll(s, tok, "<artifactory token>")
	}
	s = strings.ReplaceAll(s, strings.TrimPrefix(f.emu.Artifactory.URL(), "https://"), "<artifactory>")
	s = strings.ReplaceAll(s, f.emu.STS.URL(), "<sts>")
	return strings.ReplaceAll(s, f.emu.Registry.Host(), "<registry>")
}
