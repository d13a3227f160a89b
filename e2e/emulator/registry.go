package emulator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/authn/kubernetes"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"

	// Registered by import: the token access controller and the inmemory storage driver.
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

// RegistryOptions configures the registry's token auth. Artifactory.RegistryOptions fills it in.
type RegistryOptions struct {
	// Realm is the Docker token endpoint clients are sent to (the Artifactory emulator's /v2/token).
	Realm string
	// Service and Issuer must match the aud and iss of the realm's tokens.
	Service, Issuer string
	// JWKS is the JSON Web Key Set whose keys (by kid) verify the realm's tokens.
	JWKS []byte
	// RealmCAPEM is trusted by the client helpers (PushRandomImage, PullManifest) when they fetch
	// tokens from the realm over TLS.
	RealmCAPEM []byte
}

// Registry is an in-process distribution/v3 registry with in-memory storage, serving plain HTTP on
// 127.0.0.1 and accepting only bearer tokens from the configured realm.
type Registry struct {
	app    *handlers.App
	srv    *http.Server
	ln     net.Listener
	dir    string
	client http.RoundTripper
}

// StartRegistry starts the registry; Close stops it.
func StartRegistry(ctx context.Context, o RegistryOptions) (r *Registry, err error) {
	if o.Realm == "" || o.Service == "" || o.Issuer == "" || len(o.JWKS) == 0 {
		return nil, errors.New("registry emulator: Realm, Service, Issuer and JWKS are required")
	}
	tr, err := realmTransport(o.RealmCAPEM)
	if err != nil {
		return nil, err
	}
	// distribution reads the JWKS from a file only.
	dir, err := os.MkdirTemp("", "registry-emulator-")
	if err != nil {
		return nil, fmt.Errorf("registry emulator: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	jwksPath := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksPath, o.JWKS, 0o600); err != nil {
		return nil, fmt.Errorf("registry emulator: writing JWKS: %w", err)
	}

	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"inmemory":    configuration.Parameters{},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
		Auth: configuration.Auth{"token": configuration.Parameters{
			"realm":   o.Realm,
			"service": o.Service,
			"issuer":  o.Issuer,
			"jwks":    jwksPath,
		}},
	}
	cfg.HTTP.Secret = randomHex(16)
	app, err := newApp(ctx, cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("registry emulator: listening on 127.0.0.1: %w", err)
	}
	r = &Registry{
		app:    app,
		srv:    &http.Server{Handler: app, ReadHeaderTimeout: 10 * time.Second},
		ln:     ln,
		dir:    dir,
		client: tr,
	}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// newApp builds the distribution app, which panics on bad configuration.
func newApp(ctx context.Context, cfg *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("registry emulator: configuring distribution: %v", p)
		}
	}()
	return handlers.NewApp(ctx, cfg), nil
}

func realmTransport(caPEM []byte) (http.RoundTripper, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("registry emulator: RealmCAPEM holds no certificate")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return tr, nil
}

// Host is the registry's host:port, the registry part of image references and dockerconfig keys.
func (r *Registry) Host() string { return r.ln.Addr().String() }

// Close stops the registry and removes its files.
func (r *Registry) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
	_ = r.app.Shutdown()
	_ = os.RemoveAll(r.dir)
}

// PushRandomImage pushes a small random image to <Host>/<repo>:<tag> with a basic credential for the
// realm (the admin's) and returns its manifest digest.
func (r *Registry) PushRandomImage(ctx context.Context, repo, tag, user, pass string) (string, error) {
	ref, err := name.NewTag(r.Host()+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return "", fmt.Errorf("registry emulator: parsing %s:%s: %w", repo, tag, err)
	}
	img, err := random.Image(512, 1)
	if err != nil {
		return "", fmt.Errorf("registry emulator: building random image: %w", err)
	}
	err = remote.Write(ref, img, remote.WithContext(ctx), remote.WithTransport(r.client),
		remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
	if err != nil {
		return "", fmt.Errorf("registry emulator: pushing %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("registry emulator: digest of %s: %w", ref, err)
	}
	return d.String(), nil
}

// PullManifestAs fetches ref's manifest with the basic credentials username and password, as
// kubelet pulls with a credential provider's answer.
func (r *Registry) PullManifestAs(ctx context.Context, ref, username, password string) error {
	parsed, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("registry emulator: parsing %s: %w", ref, err)
	}
	auth := authn.FromConfig(authn.AuthConfig{Username: username, Password: password})
	if _, err := remote.Get(parsed, remote.WithContext(ctx), remote.WithTransport(r.client), remote.WithAuth(auth)); err != nil {
		return fmt.Errorf("registry emulator: pulling manifest %s: %w", ref, err)
	}
	return nil
}

// PushIndex pushes an image index (a multi-platform image) as repo:tag, as user.
func (r *Registry) PushIndex(ctx context.Context, repo, tag string, idx v1.ImageIndex, user, pass string) error {
	ref, err := name.NewTag(r.Host()+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return fmt.Errorf("registry emulator: parsing %s:%s: %w", repo, tag, err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithTransport(r.client),
		remote.WithAuth(&authn.Basic{Username: user, Password: pass})); err != nil {
		return fmt.Errorf("registry emulator: pushing %s: %w", ref, err)
	}
	return nil
}

// PullIndex fetches ref's image index with credentials resolved from pullSecrets as kubelet resolves
// them (PullManifest).
func (r *Registry) PullIndex(ctx context.Context, ref string, pullSecrets []corev1.Secret) (v1.ImageIndex, error) {
	parsed, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("registry emulator: parsing %s: %w", ref, err)
	}
	kc, err := kubernetes.NewFromPullSecrets(ctx, pullSecrets)
	if err != nil {
		return nil, fmt.Errorf("registry emulator: reading pull secrets: %w", err)
	}
	idx, err := remote.Index(parsed, remote.WithContext(ctx), remote.WithTransport(r.client), remote.WithAuthFromKeychain(kc))
	if err != nil {
		return nil, fmt.Errorf("registry emulator: pulling index %s: %w", ref, err)
	}
	return idx, nil
}

// PullManifest fetches ref's manifest with credentials resolved from pullSecrets exactly as kubelet
// resolves them (dockerconfigjson/dockercfg secrets, matched by registry host). No secrets means an
// anonymous pull.
func (r *Registry) PullManifest(ctx context.Context, ref string, pullSecrets []corev1.Secret) error {
	parsed, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("registry emulator: parsing %s: %w", ref, err)
	}
	kc, err := kubernetes.NewFromPullSecrets(ctx, pullSecrets)
	if err != nil {
		return fmt.Errorf("registry emulator: reading pull secrets: %w", err)
	}
	if _, err := remote.Get(parsed, remote.WithContext(ctx), remote.WithTransport(r.client), remote.WithAuthFromKeychain(kc)); err != nil {
		return fmt.Errorf("registry emulator: pulling manifest %s: %w", ref, err)
	}
	return nil
}
