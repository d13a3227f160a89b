package emulator

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// OIDCIssuerJWKSPath is where an OIDCIssuer serves its JWKS (its discovery document's jwks_uri).
const OIDCIssuerJWKSPath = "/openid/v1/jwks"

// OIDCIssuerOptions configures NewOIDCIssuer. The zero value is an RS256 issuer on the real clock.
type OIDCIssuerOptions struct {
	// Algorithm signs the tokens: "RS256" (default, 2048-bit keys) or "ES256" (P-256 keys).
	Algorithm string
	// Now is the clock of the iat Sign sets. Default: time.Now.
	Now func() time.Time
}

// OIDCIssuer is a standalone OIDC identity provider over TLS on 127.0.0.1: a discovery document at
// /.well-known/openid-configuration, a JWKS holding its one current signing key, and Sign to mint
// tokens with that key. It stands for any issuer other than the cluster's: the one behind a
// projected token file (Azure workload identity), Google's behind the GCP metadata server.
type OIDCIssuer struct {
	opts OIDCIssuerOptions
	alg  jose.SignatureAlgorithm
	srv  *httptest.Server

	mu          sync.Mutex
	key         crypto.Signer
	kid         string
	jwksFetches int
}

// NewOIDCIssuer starts an issuer. Close it when done.
func NewOIDCIssuer(o OIDCIssuerOptions) (*OIDCIssuer, error) {
	if o.Algorithm == "" {
		o.Algorithm = string(jose.RS256)
	}
	if o.Algorithm != string(jose.RS256) && o.Algorithm != string(jose.ES256) {
		return nil, fmt.Errorf("oidc issuer emulator: algorithm %q is neither RS256 nor ES256", o.Algorithm)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	i := &OIDCIssuer{opts: o, alg: jose.SignatureAlgorithm(o.Algorithm)}
	if err := i.RotateKey(); err != nil {
		return nil, err
	}
	cert, err := selfSignedCert()
	if err != nil {
		return nil, fmt.Errorf("oidc issuer emulator: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", i.discovery)
	mux.HandleFunc("GET "+OIDCIssuerJWKSPath, i.jwks)
	i.srv = httptest.NewUnstartedServer(mux)
	i.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	i.srv.StartTLS()
	return i, nil
}

// URL is the issuer (https://127.0.0.1:<port>, no trailing slash): the iss of its tokens.
func (i *OIDCIssuer) URL() string { return i.srv.URL }

// Client is an HTTP client that trusts the issuer's certificate.
func (i *OIDCIssuer) Client() *http.Client { return i.srv.Client() }

// CACertPEM is the PEM of the issuer's self-signed (CA) certificate.
func (i *OIDCIssuer) CACertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: i.srv.Certificate().Raw})
}

// Close stops the server.
func (i *OIDCIssuer) Close() { i.srv.Close() }

// KeyID is the kid of the current signing key.
func (i *OIDCIssuer) KeyID() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.kid
}

// JWKSFetches counts the requests for the JWKS served so far (to observe a verifier's caching).
func (i *OIDCIssuer) JWKSFetches() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.jwksFetches
}

// RotateKey replaces the signing key with a new one under a new kid; the JWKS then holds only the
// new key, so tokens signed before fail verification once a verifier fetches the set again.
func (i *OIDCIssuer) RotateKey() error {
	var key crypto.Signer
	var err error
	if i.alg == jose.ES256 {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	} else {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		return fmt.Errorf("oidc issuer emulator: generating key: %w", err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.key, i.kid = key, "oidc-emulator-"+randomHex(8)
	return nil
}

// Sign signs claims with the current key (header alg, kid and typ JWT). It sets iss to URL() and
// iat to now unless claims has them (to forge a token, set iss yourself); sub, aud, exp and the
// rest are the caller's.
func (i *OIDCIssuer) Sign(claims map[string]any) (string, error) {
	c := make(map[string]any, len(claims)+2)
	for k, v := range claims {
		c[k] = v
	}
	if _, ok := c["iss"]; !ok {
		c["iss"] = i.URL()
	}
	if _, ok := c["iat"]; !ok {
		c["iat"] = i.opts.Now().Unix()
	}
	i.mu.Lock()
	key, kid := i.key, i.kid
	i.mu.Unlock()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: i.alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("oidc issuer emulator: creating signer: %w", err)
	}
	s, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		return "", fmt.Errorf("oidc issuer emulator: signing: %w", err)
	}
	return s, nil
}

func (i *OIDCIssuer) now() time.Time { return i.opts.Now() }

func (i *OIDCIssuer) discovery(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"issuer":                                i.URL(),
		"jwks_uri":                              i.URL() + OIDCIssuerJWKSPath,
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{string(i.alg)},
	})
}

func (i *OIDCIssuer) jwks(w http.ResponseWriter, _ *http.Request) {
	i.mu.Lock()
	i.jwksFetches++
	key, kid := i.key, i.kid
	i.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: key.Public(), KeyID: kid, Algorithm: string(i.alg), Use: "sig",
	}}})
}
