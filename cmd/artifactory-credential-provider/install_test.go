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

func TestCheckProviderConfig(t *testing.T) {
	for _, tc := range []struct{ name, config, want string }{
		{"other kind", "apiVersion: v1\nkind: ConfigMap\n", "want kubelet.config.k8s.io/v1 CredentialProviderConfig"},
		{"no provider", "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders: []\n", "no provider named"},
		{"old plugin api", strings.Replace(strings.Replace(strings.Replace(dropIn, "%s", "", 1), "%s", "1h", 1),
			"credentialprovider.kubelet.k8s.io/v1", "credentialprovider.kubelet.k8s.io/v1beta1", 1), "v1beta1"},
		{"no matchImages", strings.Replace(strings.Replace(strings.Replace(dropIn, "%s", "", 1), "%s", "1h", 1),
			`matchImages: ["acme.jfrog.io"]`, "matchImages: []", 1), "matchImages is empty"},
	} {
		if err := checkProviderConfig([]byte(tc.config)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}
