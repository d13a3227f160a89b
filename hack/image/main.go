// Command image builds the release image of artifactory-pull-webhook
// without a container daemon: an OCI image index for linux/amd64 and
// linux/arm64 whose images hold the two static binaries alone (the webhook,
// the entrypoint, and the kubelet credential provider), run as
// 65532:65532, written as an OCI layout whose index.json names the index by
// its version (crane push <dir> <ref>; skopeo copy --multi-arch all
// oci:<dir>:<version>), with an SPDX SBOM of the module graph beside it. It is built with go-containerregistry's mutate and layout
// packages, the ones ko is built on: ko itself wants a base image from a
// registry (or its default, cgr.dev/chainguard/static), and no registry is
// reachable where this project is built and tested; the base here is
// empty, and the binaries carry their CA roots
// (golang.org/x/crypto/x509roots/fallback).
//
// Reproducible: the binaries are built with -trimpath and the commit's
// stamp, every timestamp is SOURCE_DATE_EPOCH (default: the commit's time),
// tar entries are ordered with fixed owners and modes, and gzip is
// deterministic; two builds of one commit give one index digest, which it
// prints.
//
//	go run ./hack/image --out bin/image [--push registry.example/artifactory-pull-webhook:v1.2.3]
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// binaries are the commands the image holds, at its root; the first is the
// entrypoint. deploy/Dockerfile lays out the same files.
var binaries = []string{"artifactory-pull-webhook", "artifactory-credential-provider"}

const (
	user       = "65532:65532"
	versionPkg = "github.com/artifactory-pull-webhook/artifactory-pull-webhook/internal/version"
)

func main() {
	out := flag.String("out", "bin/image", "Directory of the OCI layout to write (replaced).")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "Comma-separated os/arch list.")
	version := flag.String("version", "", "Version stamped into the binaries and the annotations (default: git describe).")
	source := flag.String("source", "https://github.com/artifactory-pull-webhook/artifactory-pull-webhook", "org.opencontainers.image.source.")
	push := flag.String("push", "", "Also push the index to this reference (registry/repository:tag), with the Docker keychain's credentials.")
	flag.Parse()
	if err := run(context.Background(), *out, strings.Split(*platforms, ","), *version, *source, *push); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out string, platforms []string, version, source, push string) error {
	root, err := git("rev-parse", "--show-toplevel")
	if err != nil {
		return err
	}
	revision, err := git("rev-parse", "HEAD")
	if err != nil {
		return err
	}
	if version == "" {
		if version, err = git("describe", "--tags", "--always"); err != nil {
			return err
		}
	}
	// A tree with changes is not the commit it names: say so, and push no
	// such image.
	if status, err := git("status", "--porcelain"); err != nil {
		return err
	} else if status != "" {
		version += "-dirty"
		if push != "" {
			return fmt.Errorf("the work tree has uncommitted changes: commit them before pushing (version %s)", version)
		}
	}
	epoch, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	build, err := os.MkdirTemp("", "apw-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(build)

	annotations := map[string]string{
		"org.opencontainers.image.source":   source,
		"org.opencontainers.image.revision": revision,
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.created":  epoch.UTC().Format(time.RFC3339),
		"org.opencontainers.image.title":    "artifactory-pull-webhook",
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var sbomFrom []string // the binaries of the first platform
	for _, p := range platforms {
		osName, arch, ok := strings.Cut(strings.TrimSpace(p), "/")
		if !ok {
			return fmt.Errorf("platform %q is not os/arch", p)
		}
		dir := filepath.Join(build, osName+"-"+arch)
		for _, b := range binaries {
			cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
				"-ldflags", "-s -w -X "+versionPkg+".Version="+version+" -X "+versionPkg+".Commit="+revision,
				"-o", filepath.Join(dir, b), "./cmd/"+b)
			cmd.Dir = root
			// Everything that changes the output is fixed here, not taken from
			// the machine: the same commit gives the same bytes anywhere.
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+osName, "GOARCH="+arch, "GOFLAGS=-mod=readonly",
				"GOAMD64=v1", "GOARM64=v8.0", "GOEXPERIMENT=")
			if output, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("building %s for %s: %w\n%s", b, p, err, output)
			}
		}
		if sbomFrom == nil {
			for _, b := range binaries {
				sbomFrom = append(sbomFrom, filepath.Join(dir, b))
			}
		}
		img, err := image(dir, osName, arch, epoch, annotations)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: osName, Architecture: arch}}})
	}
	idx = mutate.Annotations(idx, annotations).(v1.ImageIndex)

	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	// The layout's own index names ours by its version (ref.name), as
	// crane push, skopeo (oci:<dir>:<version>) and containerd's import read
	// it.
	p, err := layout.Write(out, empty.Index)
	if err != nil {
		return fmt.Errorf("writing the OCI layout: %w", err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": version})); err != nil {
		return fmt.Errorf("writing the OCI layout: %w", err)
	}
	if err := writeSBOM(out+".spdx.json", sbomFrom, version, revision, digest.String(), epoch); err != nil {
		return err
	}
	fmt.Printf("%s %s (index of %s; SBOM %s.spdx.json)\n", out, digest, strings.Join(platforms, ", "), out)
	if push != "" {
		ref, err := name.ParseReference(push)
		if err != nil {
			return err
		}
		if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("pushing %s: %w", ref, err)
		}
		fmt.Printf("pushed %s@%s\n", ref.Context(), digest)
	}
	return nil
}

// image is one platform's image: the binaries in dir at the root, in one
// layer, run as user, with the first binary as entrypoint.
func image(dir, osName, arch string, epoch time.Time, annotations map[string]string) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, b := range binaries {
		content, err := os.ReadFile(filepath.Join(dir, b))
		if err != nil {
			return nil, err
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: b, Mode: 0o755, Size: int64(len(content)),
			ModTime: epoch, Uid: 0, Gid: 0, Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(content); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: epoch},
		CreatedBy: "hack/image: " + strings.Join(binaries, ", ")}})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = osName, arch
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.User = user
	cfg.Config.Entrypoint = []string{"/" + binaries[0]}
	cfg.Config.Labels = annotations
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, err
	}
	return mutate.Annotations(img, annotations).(v1.Image), nil
}

// sourceDateEpoch is SOURCE_DATE_EPOCH, else the commit's time.
func sourceDateEpoch() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		var err error
		if v, err = git("log", "-1", "--format=%ct"); err != nil {
			return time.Time{}, err
		}
	}
	s, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", v, err)
	}
	return time.Unix(s, 0).UTC(), nil
}

// writeSBOM writes an SPDX 2.3 document of the module graph of binaries
// (their dependencies merged, each module once).
func writeSBOM(path string, binaries []string, version, revision, digest string, epoch time.Time) error {
	type pkg struct {
		SPDXID           string `json:"SPDXID"`
		Name             string `json:"name"`
		VersionInfo      string `json:"versionInfo"`
		DownloadLocation string `json:"downloadLocation"`
		FilesAnalyzed    bool   `json:"filesAnalyzed"`
		ExternalRefs     []any  `json:"externalRefs,omitempty"`
	}
	purl := func(p string) []any {
		return []any{map[string]string{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": p}}
	}
	var pkgs []pkg
	var rels []map[string]string
	seen := map[string]string{} // path@version → SPDXID
	for i, b := range binaries {
		bi, err := buildinfo.ReadFile(b)
		if err != nil {
			return fmt.Errorf("reading the build info of %s: %w", b, err)
		}
		if i == 0 {
			pkgs = append(pkgs,
				pkg{SPDXID: "SPDXRef-Package-main", Name: bi.Main.Path, VersionInfo: version, DownloadLocation: "NOASSERTION"},
				pkg{SPDXID: "SPDXRef-Package-stdlib", Name: "stdlib", VersionInfo: bi.GoVersion, DownloadLocation: "NOASSERTION",
					ExternalRefs: purl("pkg:golang/stdlib@" + strings.TrimPrefix(bi.GoVersion, "go"))})
			rels = append(rels,
				map[string]string{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-Package-main"},
				map[string]string{"spdxElementId": "SPDXRef-Package-main", "relationshipType": "DEPENDS_ON", "relatedSpdxElement": "SPDXRef-Package-stdlib"})
		}
		for _, d := range bi.Deps {
			m := d
			if d.Replace != nil {
				m = d.Replace
			}
			key := m.Path + "@" + m.Version
			if _, ok := seen[key]; ok {
				continue
			}
			id := fmt.Sprintf("SPDXRef-Package-%d", len(seen))
			seen[key] = id
			pkgs = append(pkgs, pkg{SPDXID: id, Name: m.Path, VersionInfo: m.Version, DownloadLocation: "NOASSERTION",
				ExternalRefs: purl("pkg:golang/" + m.Path + "@" + m.Version)})
			rels = append(rels, map[string]string{"spdxElementId": "SPDXRef-Package-main", "relationshipType": "DEPENDS_ON", "relatedSpdxElement": id})
		}
	}
	doc := map[string]any{
		"spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
		"name":              "artifactory-pull-webhook " + version,
		"documentNamespace": "https://spdx.org/spdxdocs/artifactory-pull-webhook-" + version + "-" + revision + "-" + strings.TrimPrefix(digest, "sha256:"),
		"creationInfo":      map[string]any{"created": epoch.UTC().Format(time.RFC3339), "creators": []string{"Tool: artifactory-pull-webhook-hack-image-" + version}},
		"packages":          pkgs, "relationships": rels,
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func git(args ...string) (string, error) {
	b, err := exec.Command("git", args...).Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(b)), nil
}
