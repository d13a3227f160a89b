package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const dropIn = `apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
- name: artifactory-credential-provider
  apiVersion: credentialprovider.kubelet.k8s.io/v1
  matchImages: ["acme.jfrog.io"]
  defaultCacheDuration: 5m
  args: [--url, "https://acme.jfrog.io"%s]
  env:
  - name: ARTIFACTORY_PROVIDER_TOKEN_TTL
    value: %s
`

func TestInstallChecksTheDropInThenCopiesBinaryAndDropIn(t *testing.T) {
	dir := t.TempDir()
	bin, conf := filepath.Join(dir, "bin"), filepath.Join(dir, "config.d")
	write := func(extraArgs, ttl string) string {
		path := filepath.Join(dir, "in.yaml")
		if err := os.WriteFile(path, []byte(strings.Replace(strings.Replace(dropIn, "%s", extraArgs, 1), "%s", ttl, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct{ name, args, ttl, want string }{
		{"bad arg", `, --identity, pod`, "1h", "--identity"},
		{"bad env", "", "soon", "ARTIFACTORY_PROVIDER_TOKEN_TTL"},
	} {
		var stderr bytes.Buffer
		if code := install([]string{"--config", write(tc.args, tc.ttl), "--bin-dir", bin, "--config-dir", conf}, &stderr); code != 1 ||
			!strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%s: exit %d, %q; want 1 naming %s", tc.name, code, stderr.String(), tc.want)
		}
		if _, err := os.Stat(bin); !os.IsNotExist(err) {
			t.Fatalf("%s: a rejected configuration installed something", tc.name)
		}
	}

	var stderr bytes.Buffer
	if code := install([]string{"--config", write("", "1h"), "--bin-dir", bin, "--config-dir", conf}, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	self, _ := os.Executable()
	want, _ := os.ReadFile(self)
	got, err := os.ReadFile(filepath.Join(bin, providerName))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("installed binary differs from this one (%v)", err)
	}
	if info, err := os.Stat(filepath.Join(bin, providerName)); err != nil || info.Mode().Perm() != 0o755 {
		t.Errorf("binary mode: %v %v", info, err)
	}
	if b, err := os.ReadFile(filepath.Join(conf, providerName+".yaml")); err != nil || !strings.Contains(string(b), "acme.jfrog.io") {
		t.Errorf("drop-in: %q %v", b, err)
	}
	entries, _ := os.ReadDir(conf)
	if len(entries) != 1 {
		t.Errorf("config dir holds %d files, want the drop-in only (no temporary file left)", len(entries))
	}
}

const tokenAttributes = `  tokenAttributes:
    serviceAccountTokenAudience: sts.amazonaws.com
    cacheType: ServiceAccount
    requireServiceAccount: true
    requiredServiceAccountAnnotationKeys: [eks.amazonaws.com/role-arn]
    optionalServiceAccountAnnotationKeys: [x]
`

// withArgs is dropIn with extra args and extra provider fields.
func withArgs(args, fields string) string {
	return strings.Replace(strings.Replace(dropIn, "%s", args, 1), "%s", "1h", 1) + fields
}

func TestCheckProviderConfig(t *testing.T) {
	if err := checkProviderConfig([]byte(withArgs(`, --identity, serviceAccount`, tokenAttributes))); err != nil {
		t.Errorf("the token mode's drop-in: %v", err)
	}
	for _, tc := range []struct{ name, config, want string }{
		{"other kind", "apiVersion: v1\nkind: ConfigMap\n", "want kubelet.config.k8s.io/v1 CredentialProviderConfig"},
		{"no provider", "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders: []\n", "no provider named"},
		{"old plugin api", strings.Replace(strings.Replace(strings.Replace(dropIn, "%s", "", 1), "%s", "1h", 1),
			"credentialprovider.kubelet.k8s.io/v1", "credentialprovider.kubelet.k8s.io/v1beta1", 1), "v1beta1"},
		{"no matchImages", strings.Replace(strings.Replace(strings.Replace(dropIn, "%s", "", 1), "%s", "1h", 1),
			`matchImages: ["acme.jfrog.io"]`, "matchImages: []", 1), "matchImages: empty"},
		{"unknown field", withArgs("", "  cacheKeyType: Registry\n"), "unknown field"},
		{"serviceAccount without tokenAttributes", withArgs(`, --identity, serviceAccount`, ""), "tokenAttributes: required with --identity serviceAccount"},
		{"tokenAttributes with node", withArgs("", tokenAttributes), "--identity is node"},
		{"incomplete tokenAttributes", withArgs(`, --identity, serviceAccount`, "  tokenAttributes: {serviceAccountTokenAudience: sts.amazonaws.com}\n"),
			"tokenAttributes.requireServiceAccount: required"},
		{"no cacheType", withArgs(`, --identity, serviceAccount`, "  tokenAttributes: {serviceAccountTokenAudience: sts.amazonaws.com, requireServiceAccount: true}\n"),
			"tokenAttributes.cacheType"},
		{"required and optional", withArgs(`, --identity, serviceAccount`, strings.Replace(tokenAttributes, "optionalServiceAccountAnnotationKeys: [x]",
			"optionalServiceAccountAnnotationKeys: [eks.amazonaws.com/role-arn]", 1)), "both required and optional"},
	} {
		if err := checkProviderConfig([]byte(tc.config)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

// Kubelet reads the drop-in only at start: a changed one says to restart
// it, and one on the node that this binary would reject is a warning.
func TestInstallSaysWhenKubeletMustRestart(t *testing.T) {
	dir := t.TempDir()
	bin, conf := filepath.Join(dir, "bin"), filepath.Join(dir, "config.d")
	in := filepath.Join(dir, "in.yaml")
	installed := func(config string) string {
		t.Helper()
		if err := os.WriteFile(in, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		if code := install([]string{"--config", in, "--bin-dir", bin, "--config-dir", conf}, &stderr); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		return stderr.String()
	}
	if out := installed(withArgs("", "")); strings.Contains(out, "restart kubelet") {
		t.Errorf("a first install asks for a restart of nothing: %s", out)
	}
	if out := installed(withArgs("", "")); strings.Contains(out, "restart kubelet") {
		t.Errorf("an unchanged drop-in asks for a restart: %s", out)
	}
	if out := installed(withArgs(`, --token-ttl, 2h`, "")); !strings.Contains(out, "restart kubelet") || strings.Contains(out, "warning") {
		t.Errorf("a changed drop-in: %q, want a restart notice and no warning", out)
	}
	if err := os.WriteFile(filepath.Join(conf, providerName+".yaml"), []byte(withArgs(`, --retired-flag, x`, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := installed(withArgs("", "")); !strings.Contains(out, "warning") || !strings.Contains(out, "retired-flag") {
		t.Errorf("a drop-in on the node this binary rejects: %q, want a warning naming the flag", out)
	}
}
