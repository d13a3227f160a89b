package emulator

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"
)

const (
	// GCPIdentityPath is the metadata server's identity token endpoint for the default service
	// account; /computeMetadata/v1/instance/service-accounts/<email>/identity is served too.
	GCPIdentityPath = "/computeMetadata/v1/instance/service-accounts/default/identity"
	// GCPIdentityTokenTTL is the lifetime of the identity tokens, as Google's.
	GCPIdentityTokenTTL = time.Hour

	gcpServiceAccountsPrefix = "/computeMetadata/v1/instance/service-accounts/"
)

// GCPMetadata emulates the GCE/GKE metadata server's identity endpoint over plain HTTP on
// 127.0.0.1, as the real one serves http://169.254.169.254 (metadata.google.internal): it answers
// an ID token for the instance's service account, signed by an OIDCIssuer standing for Google.
type GCPMetadata struct {
	issuer   *OIDCIssuer
	email    string
	uniqueID string
	srv      *httptest.Server

	mu       sync.Mutex
	requests int
	tokens   []string
	down     bool
}

// NewGCPMetadata starts a metadata server whose default service account is email, with tokens
// signed by issuer. Close it when done.
func NewGCPMetadata(issuer *OIDCIssuer, email string) *GCPMetadata {
	sum := sha256.Sum256([]byte(email))
	// A 21-digit numeric unique id, as Google gives service accounts ("1" and 20 digits).
	n := new(big.Int).Mod(new(big.Int).SetBytes(sum[:]), new(big.Int).Exp(big.NewInt(10), big.NewInt(20), nil))
	m := &GCPMetadata{issuer: issuer, email: email, uniqueID: fmt.Sprintf("1%020d", n)}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serveHTTP))
	return m
}

// URL is the server's host:port, what GCE_METADATA_HOST is set to (Google's clients prepend http://).
func (m *GCPMetadata) URL() string { return m.srv.Listener.Addr().String() }

// BaseURL is http://<host:port>.
func (m *GCPMetadata) BaseURL() string { return m.srv.URL }

// Close stops the server.
func (m *GCPMetadata) Close() { m.srv.Close() }

// Email is the default service account's email (the email claim of format=full tokens).
func (m *GCPMetadata) Email() string { return m.email }

// UniqueID is the service account's numeric unique id: the sub and azp of its tokens.
func (m *GCPMetadata) UniqueID() string { return m.uniqueID }

// Requests counts the requests received, whatever their outcome.
func (m *GCPMetadata) Requests() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.requests
}

// IssuedTokens are the identity tokens answered so far, for leak searches.
func (m *GCPMetadata) IssuedTokens() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.tokens)
}

// SetDown makes every request fail with 503 while on.
func (m *GCPMetadata) SetDown(down bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = down
}

func (m *GCPMetadata) serveHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	m.requests++
	down := m.down
	m.mu.Unlock()
	w.Header().Set("Metadata-Flavor", "Google")
	fail := func(status int, message string) {
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, message+"\n")
	}
	switch {
	case down:
		fail(http.StatusServiceUnavailable, "Service Unavailable (emulator down switch)")
		return
	// The real server refuses proxied requests, so that an SSRF through a proxy cannot reach it.
	case len(r.Header.Values("X-Forwarded-For")) > 0:
		fail(http.StatusForbidden, "Request had an X-Forwarded-For header and was rejected.")
		return
	case r.Header.Get("Metadata-Flavor") != "Google":
		fail(http.StatusForbidden, fmt.Sprintf("Your client does not have permission to get URL %s from this server. Missing Metadata-Flavor:Google header.", r.URL.Path))
		return
	}
	account, ok := strings.CutPrefix(r.URL.Path, gcpServiceAccountsPrefix)
	account, ok2 := strings.CutSuffix(account, "/identity")
	if !ok || !ok2 || (account != "default" && account != m.email) {
		fail(http.StatusNotFound, "Not Found")
		return
	}
	if r.Method != http.MethodGet {
		fail(http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	q := r.URL.Query()
	audience := q.Get("audience")
	if audience == "" {
		fail(http.StatusBadRequest, "non-empty audience parameter required")
		return
	}
	format := q.Get("format")
	if format != "" && format != "standard" && format != "full" {
		fail(http.StatusBadRequest, fmt.Sprintf("invalid format %q: must be standard or full", format))
		return
	}
	now := m.issuer.now()
	claims := map[string]any{
		"iss": m.issuer.URL(),
		"aud": audience,
		"azp": m.uniqueID,
		"sub": m.uniqueID,
		"iat": now.Unix(),
		"exp": now.Add(GCPIdentityTokenTTL).Unix(),
	}
	if format == "full" {
		claims["email"] = m.email
		claims["email_verified"] = true
	}
	token, err := m.issuer.Sign(claims)
	if err != nil {
		fail(http.StatusInternalServerError, err.Error())
		return
	}
	m.mu.Lock()
	m.tokens = append(m.tokens, token)
	m.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=UTF-8")
	_, _ = io.WriteString(w, token)
}
