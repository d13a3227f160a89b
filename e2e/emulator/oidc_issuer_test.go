package emulator

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// issuerKeys follows iss's discovery document to its JWKS, as a verifier does.
func issuerKeys(t *testing.T, iss *OIDCIssuer) jose.JSONWebKeySet {
	t.Helper()
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := fetchJSON(t.Context(), iss.Client(), iss.URL()+"/.well-known/openid-configuration", &disc); err != nil {
		t.Fatal(err)
	}
	if disc.Issuer != iss.URL() || disc.JWKSURI != iss.URL()+OIDCIssuerJWKSPath {
		t.Fatalf("discovery %+v", disc)
	}
	var keys jose.JSONWebKeySet
	if err := fetchJSON(t.Context(), iss.Client(), disc.JWKSURI, &keys); err != nil {
		t.Fatal(err)
	}
	return keys
}

// verifyWith verifies raw against keys and returns its claims, or an error.
func verifyWith(raw string, keys jose.JSONWebKeySet) (map[string]any, error) {
	tok, err := jwt.ParseSigned(raw, oidcAlgorithms)
	if err != nil {
		return nil, err
	}
	var claims map[string]any
	var lastErr error = errNoKey
	for _, k := range keys.Keys {
		if k.KeyID != tok.Headers[0].KeyID {
			continue
		}
		if lastErr = tok.Claims(k.Public(), &claims); lastErr == nil {
			return claims, nil
		}
	}
	return nil, lastErr
}

var errNoKey = errors.New("no key with the token's kid")

func TestOIDCIssuerSignsVerifiablyAndRotates(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			at := time.Unix(1_800_000_000, 0)
			iss := newTestOIDCIssuer(t, OIDCIssuerOptions{Algorithm: alg, Now: func() time.Time { return at }})
			raw := sign(t, iss, map[string]any{"sub": "s", "aud": "a", "exp": at.Add(time.Hour).Unix()})
			claims, err := verifyWith(raw, issuerKeys(t, iss))
			if err != nil {
				t.Fatal(err)
			}
			if claims["iss"] != iss.URL() || claims["iat"] != float64(at.Unix()) || claims["sub"] != "s" {
				t.Errorf("claims %v, want iss %s and iat %d set", claims, iss.URL(), at.Unix())
			}
			tok, _ := jwt.ParseSigned(raw, oidcAlgorithms)
			if h := tok.Headers[0]; h.Algorithm != alg || h.KeyID != iss.KeyID() || h.ExtraHeaders["typ"] != "JWT" {
				t.Errorf("header %+v", h)
			}
			forged := sign(t, iss, map[string]any{"iss": "https://other.example", "iat": 5})
			if c, err := verifyWith(forged, issuerKeys(t, iss)); err != nil || c["iss"] != "https://other.example" || c["iat"] != float64(5) {
				t.Errorf("caller's iss and iat: %v %v", c, err)
			}

			oldKid := iss.KeyID()
			if err := iss.RotateKey(); err != nil {
				t.Fatal(err)
			}
			keys := issuerKeys(t, iss)
			if len(keys.Keys) != 1 || keys.Keys[0].KeyID == oldKid || keys.Keys[0].KeyID != iss.KeyID() {
				t.Fatalf("JWKS after rotation %+v, want only the new key", keys.Keys)
			}
			if _, err := verifyWith(raw, keys); err == nil {
				t.Error("a token of the old key verified after rotation")
			}
			if _, err := verifyWith(sign(t, iss, map[string]any{"sub": "s"}), keys); err != nil {
				t.Errorf("a token of the new key: %v", err)
			}
			if got := iss.JWKSFetches(); got != 3 {
				t.Errorf("JWKSFetches() = %d, want 3", got)
			}
		})
	}
}

func TestOIDCIssuerTLS(t *testing.T) {
	iss := newTestOIDCIssuer(t, OIDCIssuerOptions{})
	block, _ := pem.Decode(iss.CACertPEM())
	if block == nil {
		t.Fatal("CACertPEM holds no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !cert.IsCA {
		t.Fatalf("CA certificate: %v", err)
	}
	if _, err := http.Get(iss.URL() + "/.well-known/openid-configuration"); err == nil {
		t.Error("a client not trusting the issuer's certificate connected")
	}
	resp, err := iss.Client().Get(iss.URL() + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var disc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&disc); err != nil || disc["issuer"] != iss.URL() {
		t.Errorf("discovery %v %v", disc, err)
	}
	if _, err := NewOIDCIssuer(OIDCIssuerOptions{Algorithm: "HS256"}); err == nil {
		t.Error("an HS256 issuer was created")
	}
}
