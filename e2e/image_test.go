package e2e

import (
	"archive/tar"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	corev1 "k8s.io/api/core/v1"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
)

// TestReleaseImageIsWhatRunsAsTheWebhook builds the release image (make
// image's builder), pushes it to the registry, pulls it back through the
// kubelet keychain with the pull Secret the webhook wrote, checks both
// platforms (user, entrypoint, the two binaries and nothing else — no
// shell; an aarch64 binary in the arm64 image), and runs the amd64 webhook
// extracted from the pulled layer as the stack's webhook: the artifact users
// deploy is the one that is tested.
func TestReleaseImageIsWhatRunsAsTheWebhook(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	out := filepath.Join(dir, "image")
	cmd := exec.CommandContext(ctx, "go", "run", "./hack/image", "--out", out, "--version", "v0.0.0-e2e")
	cmd.Dir = harness.ModuleRoot()
	printed, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("building the image: %v\n%s", err, printed)
	}
	p, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	root, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	rootManifest, err := root.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(rootManifest.Manifests) != 1 || rootManifest.Manifests[0].Annotations["org.opencontainers.image.ref.name"] == "" {
		t.Fatalf("the layout's index.json holds %d entries %+v, want one index named by ref.name", len(rootManifest.Manifests), rootManifest.Manifests)
	}
	built, err := root.ImageIndex(rootManifest.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := built.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(printed), digest.String()) {
		t.Errorf("the builder printed %q, not the index digest %s", printed, digest)
	}
	if _, err := os.Stat(out + ".spdx.json"); err != nil {
		t.Errorf("no SBOM beside the layout: %v", err)
	}

	const repo, tag = "release/artifactory-pull-webhook", "v0.0.0-e2e"
	if err := stack.Emu.Registry.PushIndex(ctx, repo, tag, built, stack.Emu.AdminUser, stack.Emu.AdminPassword); err != nil {
		t.Fatal(err)
	}
	ref := stack.Emu.Registry.Host() + "/" + repo + ":" + tag
	ns := optedIn(t)
	got, _ := createPod(t, ns, pod("webhook", ref))
	var secrets []corev1.Secret
	for _, n := range pullSecretNames(got) {
		s, ok := getSecret(t, ns, n)
		if !ok {
			t.Fatalf("pull Secret %s missing", n)
		}
		secrets = append(secrets, *s)
	}
	idx, err := stack.Emu.Registry.PullIndex(ctx, ref, secrets)
	if err != nil {
		t.Fatalf("pulling the image with the pod's pull Secret (kubelet's keychain): %v", err)
	}
	if d, _ := idx.Digest(); d != digest {
		t.Errorf("pulled index %s, pushed %s", d, digest)
	}
	manifest, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	var platforms []string
	var webhook string
	for _, desc := range manifest.Manifests {
		arch := desc.Platform.Architecture
		platforms = append(platforms, desc.Platform.OS+"/"+arch)
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Config.User != "65532:65532" || !slices.Equal(cfg.Config.Entrypoint, []string{"/artifactory-pull-webhook"}) ||
			cfg.Architecture != arch || !strings.HasPrefix(cfg.Config.Labels["org.opencontainers.image.version"], "v0.0.0-e2e") {
			t.Errorf("%s config: user %q, entrypoint %v, architecture %s, labels %v", arch, cfg.Config.User, cfg.Config.Entrypoint, cfg.Architecture, cfg.Config.Labels)
		}
		files := extract(t, img, filepath.Join(dir, arch))
		if !slices.Equal(files, []string{"artifactory-credential-provider", "artifactory-pull-webhook"}) {
			t.Errorf("%s image holds %v, want the two binaries alone (no shell, no package manager)", arch, files)
		}
		for _, f := range files {
			e, err := elf.Open(filepath.Join(dir, arch, f))
			if err != nil {
				t.Fatalf("%s/%s: %v", arch, f, err)
			}
			if e.Machine != machines[arch] {
				t.Errorf("%s/%s is a %s binary", arch, f, e.Machine)
			}
			_ = e.Close()
		}
		if arch == runtime.GOARCH {
			webhook = filepath.Join(dir, arch, "artifactory-pull-webhook")
		}
	}
	slices.Sort(platforms)
	if !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Fatalf("index platforms %v", platforms)
	}

	head, err := exec.CommandContext(ctx, "git", "-C", harness.ModuleRoot(), "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	v, err := exec.CommandContext(ctx, webhook, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "version v0.0.0-e2e") || !strings.Contains(string(v), "commit "+strings.TrimSpace(string(head))) {
		t.Errorf("--version: %q %v, want the version and commit %s", v, err, head)
	}
	// The pulled binary serves the stack's scenario: a pod patched, its image pulled.
	t.Cleanup(func() { restartWebhook(t, harness.PodIdentity) }) // before: a failed start leaves no webhook
	if err := stack.StartWebhook(ctx, harness.PodIdentity, func(o *harness.WebhookOptions) { o.Binary = webhook }); err != nil {
		t.Fatalf("starting the image's webhook: %v", err)
	}
	ns = optedIn(t)
	p2, warnings := createPod(t, ns, pod("app", stack.Image))
	if !slices.Equal(pullSecretNames(p2), []string{"artifactory-pull"}) || len(warnings) != 0 {
		t.Fatalf("the image's webhook: imagePullSecrets %v, warnings %v", pullSecretNames(p2), warnings)
	}
	if err := pull(ns, stack.Image, pullSecretNames(p2)); err != nil {
		t.Errorf("pull with the Secret the image's webhook wrote: %v", err)
	}
}

// extract writes the files of img's flattened filesystem into dir and
// returns every entry's path, sorted.
func extract(t *testing.T, img v1.Image, dir string) []string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.Typeflag != tar.TypeReg || strings.Contains(hdr.Name, "/") {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, hdr.Name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(names)
	return names
}
