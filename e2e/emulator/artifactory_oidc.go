package emulator

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Artifactory's OIDC token exchange (RFC 8693; JFrog Cloud 7.73.1+, self-hosted 7.77.3+).
const (
	// OIDCTokenExchangePath is the only path Artifactory serves the OIDC token exchange on (a
	// trailing slash is another, unknown path: 404).
	OIDCTokenExchangePath = "/access/api/v1/oidc/token"
	// OIDCGrantType is the only grant_type the exchange accepts.
	OIDCGrantType = "urn:ietf:params:oauth:grant-type:token-exchange"
	// OIDCSubjectTokenType is the only subject_token_type the exchange accepts.
	OIDCSubjectTokenType = "urn:ietf:params:oauth:token-type:id_token"
	// OIDCIssuedTokenType is the issued_token_type of every answer.
	OIDCIssuedTokenType = "urn:ietf:params:oauth:token-type:access_token"
	// DefaultOIDCExpiresIn is the lifetime, in seconds, of a token whose mapping sets no ExpiresIn
	// (JFrog's default for identity mappings).
	DefaultOIDCExpiresIn = 3600
	// OIDCClockSkew is the leeway granted to a subject token's exp, nbf and iat.
	OIDCClockSkew = time.Minute
	// OIDCKeyCacheTTL is how long a provider's JWKS is cached (on the emulator's clock). A token
	// whose kid is not in the cached set makes the emulator fetch the set again at once, so a new
	// key is usable immediately; a removed key stays trusted until the set is fetched again.
	OIDCKeyCacheTTL = time.Minute
)

// oidcAlgorithms are the JWS algorithms a subject token may be signed with: asymmetric ones only, so
// never "none" nor HS* (whose "key" would be public).
var oidcAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512,
}

// oidcUsernameRE is what a username taken from a claim must look like once each ':' is replaced by
// '.': no ':' (it would break the username:token basic credential), no '/', no spaces.
var oidcUsernameRE = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,255}$`)

// OIDCProvider is an OIDC integration ("provider") configured in Artifactory.
type OIDCProvider struct {
	// Name is the integration's name, the provider_name of exchange requests.
	Name string
	// IssuerURL is the provider's issuer (https). A subject token's iss must equal it exactly, and
	// IssuerURL (without a trailing slash) + "/.well-known/openid-configuration" must be a
	// discovery document naming this same issuer and a jwks_uri.
	IssuerURL string
	// Audience is the integration's audience: a subject token's aud must contain it.
	Audience string
	// Client fetches the discovery document and JWKS. Default: ArtifactoryOptions.IssuerClient
	// (Options.IssuerClient in Start: the envtest API server's), else a client with a 10s timeout.
	// Give an OIDCIssuer's Client() for that issuer.
	Client *http.Client
}

// OIDCMapping is an identity mapping of an OIDC provider: the claims a verified subject token must
// have, and the access token it is exchanged for.
type OIDCMapping struct {
	// Name identifies the mapping within its provider (identity_mapping_name).
	Name string
	// Priority orders the mappings, as in JFrog's UI: 1 is evaluated first, then 2, and so on; 0
	// (unset) is the lowest priority, evaluated after every numbered one. Ties go by Name.
	Priority int
	// Claims must all match: the claim's value equals the pattern, where each '*' in it matches
	// any run of characters, ':' and '/' included ("system:serviceaccount:team-a:*"). An array
	// claim (aud) matches when any element does; numbers and booleans match their JSON text; an
	// object claim ("kubernetes.io") or a missing one never matches. At least one claim is required.
	Claims map[string]string
	// Username is the fixed user the token is for. Exactly one of Username and UsernameFromClaim.
	Username string
	// UsernameFromClaim names a string claim whose value, with every ':' replaced by '.', is the
	// user: sub "system:serviceaccount:team-a:puller" gives "system.serviceaccount.team-a.puller".
	// The result must consist of letters, digits and ".-_@" (at most 255) and not be "anonymous",
	// else the exchange is refused (401), as JFrog refuses a dynamic mapping whose claim is missing.
	// On ServiceAccount subjects the rule is one-to-one: namespaces hold no '.', names no ':'.
	UsernameFromClaim string
	// Scope is the token's scope, recorded only (the realm grants by username):
	// "applied-permissions/user" (the default), `applied-permissions/groups:"readers"`,
	// "applied-permissions/roles:<project>:<role>", "applied-permissions/admin".
	Scope string
	// ExpiresIn is the token's lifetime in seconds (default DefaultOIDCExpiresIn), capped by the
	// instance's max expiry (ArtifactoryOptions.MaxExpiry, SetMaxExpiry).
	ExpiresIn int64
}

// OIDCRequest is an OIDC exchange request as received (the subject token aside: see
// OIDCSubjectTokens), recorded whether it succeeded or not once its body could be read.
type OIDCRequest struct {
	// ContentType is the request's media type: application/x-www-form-urlencoded or application/json.
	ContentType                                             string
	GrantType, SubjectTokenType                             string
	ProviderName, IdentityMappingName, ProjectKey, Audience string
	IncludeReferenceToken                                   bool
}

// OIDCGrant is an access token the OIDC exchange issued and what decided it.
type OIDCGrant struct {
	Provider, Mapping string
	Username, Scope   string
	ExpiresIn         int64
	// Subject is the subject token's sub.
	Subject string
	// ProjectKey and Audience are the request's (recorded, not interpreted).
	ProjectKey, Audience string
	AccessToken          string
	// ReferenceToken is set when include_reference_token was true: it authenticates as AccessToken does.
	ReferenceToken string
}

// oidcState is the OIDC exchange's part of Artifactory, guarded by Artifactory.mu.
type oidcState struct {
	providers           map[string]*oidcProvider
	subjects            []string
	requests            []OIDCRequest
	grants              []OIDCGrant
	attempts, exchanges int
}

type oidcProvider struct {
	cfg      OIDCProvider
	mappings map[string]OIDCMapping
	keys     *jose.JSONWebKeySet // cached JWKS; nil before the first fetch
	fetched  time.Time           // when keys were fetched, on the emulator's clock
}

// SetOIDCProvider creates or replaces an OIDC integration. Replacing one keeps its identity
// mappings and drops its cached keys. It panics on an empty Name or Audience or a non-https
// IssuerURL: that is a test-setup bug.
func (a *Artifactory) SetOIDCProvider(p OIDCProvider) {
	u, err := url.Parse(p.IssuerURL)
	if p.Name == "" || p.Audience == "" || err != nil || u.Scheme != "https" || u.Host == "" {
		panic(fmt.Sprintf("artifactory emulator: OIDC provider %+v needs a Name, an https IssuerURL and an Audience", p))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.oidc.providers == nil {
		a.oidc.providers = map[string]*oidcProvider{}
	}
	mappings := map[string]OIDCMapping{}
	if old, ok := a.oidc.providers[p.Name]; ok {
		mappings = old.mappings
	}
	a.oidc.providers[p.Name] = &oidcProvider{cfg: p, mappings: mappings}
}

// RemoveOIDCProvider removes an integration and its identity mappings; tokens already issued stay
// valid, as in Artifactory.
func (a *Artifactory) RemoveOIDCProvider(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.oidc.providers, name)
}

// AddOIDCMapping adds an identity mapping to provider, replacing the one of the same name. It
// panics on an unknown provider, an empty Name, no Claims, not exactly one of Username and
// UsernameFromClaim, an invalid Username, a negative Priority or ExpiresIn, or a Scope not under
// "applied-permissions/": those are test-setup bugs.
func (a *Artifactory) AddOIDCMapping(provider string, m OIDCMapping) {
	bad := func(why string) {
		panic(fmt.Sprintf("artifactory emulator: identity mapping %q of %q: %s", m.Name, provider, why))
	}
	switch {
	case m.Name == "":
		bad("no Name")
	case len(m.Claims) == 0:
		bad("no Claims")
	case (m.Username == "") == (m.UsernameFromClaim == ""):
		bad("set exactly one of Username and UsernameFromClaim")
	case m.Username != "" && (!oidcUsernameRE.MatchString(m.Username) || strings.EqualFold(m.Username, "anonymous")):
		bad("invalid Username " + m.Username)
	case m.Priority < 0 || m.ExpiresIn < 0:
		bad("negative Priority or ExpiresIn")
	case m.Scope != "" && !strings.HasPrefix(m.Scope, "applied-permissions/"):
		bad("Scope must be applied-permissions/...")
	}
	if m.Scope == "" {
		m.Scope = "applied-permissions/user"
	}
	m.Claims = copyMap(m.Claims)
	a.mu.Lock()
	p, ok := a.oidc.providers[provider]
	if ok {
		p.mappings[m.Name] = m
	}
	a.mu.Unlock()
	if !ok {
		bad("no such OIDC provider")
	}
}

// RemoveOIDCMapping removes an identity mapping; tokens already issued stay valid.
func (a *Artifactory) RemoveOIDCMapping(provider, name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.oidc.providers[provider]; ok {
		delete(p.mappings, name)
	}
}

// OIDCAttempts counts requests that reached the OIDC exchange path while up, whatever their outcome.
func (a *Artifactory) OIDCAttempts() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.oidc.attempts
}

// OIDCExchanges counts successful OIDC exchanges (each is counted by Exchanges and ExchangesFor too).
func (a *Artifactory) OIDCExchanges() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.oidc.exchanges
}

// OIDCSubjectTokens are the subject tokens the OIDC exchange received, valid or not, for leak searches.
func (a *Artifactory) OIDCSubjectTokens() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.oidc.subjects)
}

// OIDCRequests are the OIDC exchange requests received, in order.
func (a *Artifactory) OIDCRequests() []OIDCRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.oidc.requests)
}

// OIDCGrants are the tokens the OIDC exchange issued, in order. Their access and reference tokens
// are in IssuedTokens too.
func (a *Artifactory) OIDCGrants() []OIDCGrant {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.oidc.grants)
}

// accessError is an Access API error answer.
type accessError struct {
	status  int
	code    string
	message string
}

func badRequest(format string, args ...any) *accessError {
	return &accessError{http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf(format, args...)}
}

func unauthorized(format string, args ...any) *accessError {
	return &accessError{http.StatusUnauthorized, "UNAUTHORIZED", fmt.Sprintf(format, args...)}
}

// writeAccessError answers as JFrog Access does: {"errors":[{"code":"BAD_REQUEST","message":"..."}]}.
func writeAccessError(w http.ResponseWriter, e *accessError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]any{{"code": e.code, "message": e.message}},
	})
}

// oidcExchange implements POST /access/api/v1/oidc/token: verify the subject token against the
// provider's issuer and audience, pick the first identity mapping its claims match, and mint an
// access token for that mapping's user. No Authorization is needed.
func (a *Artifactory) oidcExchange(w http.ResponseWriter, r *http.Request) {
	body, maxExpiry, ok := a.beginExchange(w, r, true)
	if !ok {
		return
	}
	if r.Method != http.MethodPost {
		writeAccessError(w, &accessError{http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "Method Not Allowed"})
		return
	}
	req, subjectToken, perr := parseOIDCRequest(r.Header.Get("Content-Type"), body)
	a.mu.Lock()
	if subjectToken != "" {
		a.oidc.subjects = append(a.oidc.subjects, subjectToken)
	}
	if req != nil {
		a.oidc.requests = append(a.oidc.requests, *req)
	}
	a.mu.Unlock()
	if perr != nil {
		writeAccessError(w, perr)
		return
	}
	grant, err := a.oidcGrant(r.Context(), req, subjectToken)
	if err != nil {
		writeAccessError(w, err)
		return
	}
	if maxExpiry > 0 && grant.ExpiresIn > int64(maxExpiry/time.Second) {
		grant.ExpiresIn = int64(maxExpiry / time.Second)
	}
	grant.AccessToken = randomBase64URL(48)
	if req.IncludeReferenceToken {
		grant.ReferenceToken = randomBase64URL(48)
	}
	a.mu.Lock()
	t := accessToken{username: grant.Username, expires: a.opts.Now().Add(time.Duration(grant.ExpiresIn) * time.Second)}
	a.tokens[grant.AccessToken] = t
	if grant.ReferenceToken != "" {
		a.tokens[grant.ReferenceToken] = t
	}
	a.exchanges++
	a.byUser[grant.Username]++
	a.oidc.exchanges++
	a.oidc.grants = append(a.oidc.grants, *grant)
	a.mu.Unlock()

	answer := map[string]any{
		"access_token":      grant.AccessToken,
		"token_type":        "Bearer",
		"expires_in":        grant.ExpiresIn,
		"issued_token_type": OIDCIssuedTokenType,
		"username":          grant.Username,
	}
	if grant.ReferenceToken != "" {
		answer["reference_token"] = grant.ReferenceToken
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answer)
}

// oidcGrant decides the token a valid request gets: provider, verified claims, mapping, username.
func (a *Artifactory) oidcGrant(ctx context.Context, req *OIDCRequest, subjectToken string) (*OIDCGrant, *accessError) {
	a.mu.Lock()
	p, ok := a.oidc.providers[req.ProviderName]
	var mappings []OIDCMapping
	if ok {
		for _, m := range p.mappings {
			mappings = append(mappings, m)
		}
	}
	a.mu.Unlock()
	if !ok {
		return nil, badRequest("OIDC provider %q not found", req.ProviderName)
	}
	claims, err := a.verifySubjectToken(ctx, p, subjectToken)
	if err != nil {
		return nil, err
	}
	m, err := selectMapping(p.cfg.Name, mappings, req.IdentityMappingName, claims)
	if err != nil {
		return nil, err
	}
	username, err := m.username(claims)
	if err != nil {
		return nil, err
	}
	expiresIn := m.ExpiresIn
	if expiresIn == 0 {
		expiresIn = DefaultOIDCExpiresIn
	}
	sub, _ := claims["sub"].(string)
	return &OIDCGrant{
		Provider:   p.cfg.Name,
		Mapping:    m.Name,
		Username:   username,
		Scope:      m.Scope,
		ExpiresIn:  expiresIn,
		Subject:    sub,
		ProjectKey: req.ProjectKey,
		Audience:   req.Audience,
	}, nil
}

// parseOIDCRequest reads a form-encoded or JSON exchange request and checks its required fields.
// It returns the request as read (nil when the body could not be read at all) and the subject
// token, even when the request is invalid. Unknown fields are ignored, as Artifactory ignores those
// JFrog's own clients add (gh_job_id, application_key, ...).
func parseOIDCRequest(contentType string, body []byte) (*OIDCRequest, string, *accessError) {
	mt, _, _ := mime.ParseMediaType(contentType)
	fields := map[string]string{}
	names := []string{"grant_type", "subject_token_type", "subject_token", "provider_name",
		"identity_mapping_name", "project_key", "audience", "include_reference_token"}
	switch mt {
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, "", badRequest("request body is not form-encoded: %v", err)
		}
		for _, n := range names {
			if len(form[n]) > 1 {
				return nil, form.Get("subject_token"), badRequest("%s is given more than once", n)
			}
			fields[n] = form.Get(n)
		}
	case "application/json":
		dec := json.NewDecoder(bytes.NewReader(body))
		var obj map[string]json.RawMessage
		if err := dec.Decode(&obj); err != nil || obj == nil {
			return nil, "", badRequest("request body is not a JSON object")
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, "", badRequest("request body has data after its JSON object")
		}
		for _, n := range names {
			raw, ok := obj[n]
			if !ok || string(raw) == "null" {
				continue
			}
			var s string
			if err := json.Unmarshal(raw, &s); err == nil {
				fields[n] = s
				continue
			}
			var b bool
			if n == "include_reference_token" && json.Unmarshal(raw, &b) == nil {
				fields[n] = strconv.FormatBool(b)
				continue
			}
			var sub string
			_ = json.Unmarshal(obj["subject_token"], &sub)
			return nil, sub, badRequest("%s must be a string", n)
		}
	default:
		return nil, "", &accessError{http.StatusUnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE",
			"Content-Type must be application/x-www-form-urlencoded or application/json"}
	}
	req := &OIDCRequest{
		ContentType:         mt,
		GrantType:           fields["grant_type"],
		SubjectTokenType:    fields["subject_token_type"],
		ProviderName:        fields["provider_name"],
		IdentityMappingName: fields["identity_mapping_name"],
		ProjectKey:          fields["project_key"],
		Audience:            fields["audience"],
	}
	subject := fields["subject_token"]
	switch v := strings.ToLower(fields["include_reference_token"]); v {
	case "", "false":
	case "true":
		req.IncludeReferenceToken = true
	default:
		return req, subject, badRequest("include_reference_token must be true or false, got %q", v)
	}
	switch {
	case req.GrantType == "":
		return req, subject, badRequest("grant_type is required")
	case req.GrantType != OIDCGrantType:
		return req, subject, badRequest("unsupported grant_type %q: must be %s", req.GrantType, OIDCGrantType)
	case req.SubjectTokenType == "":
		return req, subject, badRequest("subject_token_type is required")
	case req.SubjectTokenType != OIDCSubjectTokenType:
		return req, subject, badRequest("unsupported subject_token_type %q: must be %s", req.SubjectTokenType, OIDCSubjectTokenType)
	case subject == "":
		return req, subject, badRequest("subject_token is required")
	case req.ProviderName == "":
		return req, subject, badRequest("provider_name is required")
	}
	return req, subject, nil
}

// verifySubjectToken checks raw as Artifactory checks an OIDC ID token: an asymmetric JWS whose iss
// is the provider's issuer, signed by a key of the issuer's JWKS (found through discovery), with
// the provider's audience among its aud, unexpired, not used before nbf nor issued in the future
// (OIDCClockSkew of leeway). It returns the token's claims.
func (a *Artifactory) verifySubjectToken(ctx context.Context, p *oidcProvider, raw string) (map[string]any, *accessError) {
	cfg := p.cfg
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, unauthorized("subject_token is not a signed JWT (JWS compact serialization)")
	}
	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(hb, &header) != nil {
		return nil, unauthorized("subject_token has an unreadable JOSE header")
	}
	alg := jose.SignatureAlgorithm(header.Alg)
	if !slices.Contains(oidcAlgorithms, alg) {
		return nil, unauthorized("subject_token is signed with unsupported algorithm %q: only RS*, PS* and ES* signatures are accepted", header.Alg)
	}
	tok, err := jwt.ParseSigned(raw, oidcAlgorithms)
	if err != nil {
		return nil, unauthorized("subject_token is not a valid JWT: %v", err)
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, unauthorized("subject_token claims are unreadable: %v", err)
	}
	if unverified.Issuer != cfg.IssuerURL {
		return nil, unauthorized("Token issuer %q does not match the issuer URL %q of OIDC provider %q",
			unverified.Issuer, cfg.IssuerURL, cfg.Name)
	}
	keys, kerr := a.providerKeys(ctx, p, header.Kid, alg)
	if kerr != nil {
		return nil, kerr
	}
	var std jwt.Claims
	var all map[string]any
	verified := false
	for _, k := range keys {
		if tok.Claims(k.Public(), &std, &all) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, unauthorized("Token signature verification failed with the keys of issuer %s", cfg.IssuerURL)
	}
	now := a.opts.Now()
	switch {
	case std.Expiry == nil:
		return nil, unauthorized("Token has no exp claim")
	case now.After(std.Expiry.Time().Add(OIDCClockSkew)):
		return nil, unauthorized("Token expired at %s (now %s)",
			std.Expiry.Time().UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case std.NotBefore != nil && std.NotBefore.Time().After(now.Add(OIDCClockSkew)):
		return nil, unauthorized("Token is not valid before %s (now %s)",
			std.NotBefore.Time().UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case std.IssuedAt != nil && std.IssuedAt.Time().After(now.Add(OIDCClockSkew)):
		return nil, unauthorized("Token is issued in the future, at %s (now %s)",
			std.IssuedAt.Time().UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case !std.Audience.Contains(cfg.Audience):
		return nil, unauthorized("Invalid audience: token audience %q does not contain %q, the audience of OIDC provider %q",
			[]string(std.Audience), cfg.Audience, cfg.Name)
	}
	return all, nil
}

// providerKeys returns the keys of p's JWKS that may have signed a token with kid (every key when
// kid is empty) and alg, from the cache while it is fresh and holds kid, else fetched again.
func (a *Artifactory) providerKeys(ctx context.Context, p *oidcProvider, kid string, alg jose.SignatureAlgorithm) ([]jose.JSONWebKey, *accessError) {
	lookup := func(set *jose.JSONWebKeySet) []jose.JSONWebKey {
		var out []jose.JSONWebKey
		for _, k := range set.Keys {
			if (kid == "" || k.KeyID == kid) && (k.Use == "" || k.Use == "sig") &&
				(k.Algorithm == "" || k.Algorithm == string(alg)) && k.Valid() {
				out = append(out, k)
			}
		}
		return out
	}
	a.mu.Lock()
	cached, fetched := p.keys, p.fetched
	a.mu.Unlock()
	if cached != nil && a.opts.Now().Sub(fetched) < OIDCKeyCacheTTL {
		if keys := lookup(cached); len(keys) > 0 {
			return keys, nil
		}
	}
	// Stale, never fetched, or without kid (rotated?): fetch the set again, once.
	set, err := a.fetchProviderJWKS(ctx, p.cfg)
	if err != nil {
		return nil, unauthorized("Failed to get public key: %v", err)
	}
	a.mu.Lock()
	p.keys, p.fetched = set, a.opts.Now()
	a.mu.Unlock()
	if keys := lookup(set); len(keys) > 0 {
		return keys, nil
	}
	return nil, unauthorized("Failed to get public key: the JWKS of issuer %s has no key with kid %q for %s", p.cfg.IssuerURL, kid, alg)
}

// fetchProviderJWKS follows cfg's OIDC discovery to its JWKS.
func (a *Artifactory) fetchProviderJWKS(ctx context.Context, cfg OIDCProvider) (*jose.JSONWebKeySet, error) {
	client := cfg.Client
	if client == nil {
		client = a.opts.IssuerClient
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	discoveryURL := strings.TrimSuffix(cfg.IssuerURL, "/") + "/.well-known/openid-configuration"
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := fetchJSON(ctx, client, discoveryURL, &disc); err != nil {
		return nil, err
	}
	if disc.Issuer != cfg.IssuerURL {
		return nil, fmt.Errorf("the discovery document at %s names issuer %q, not %q", discoveryURL, disc.Issuer, cfg.IssuerURL)
	}
	if u, err := url.Parse(disc.JWKSURI); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("the discovery document at %s names no https jwks_uri (%q)", discoveryURL, disc.JWKSURI)
	}
	var keys jose.JSONWebKeySet
	if err := fetchJSON(ctx, client, disc.JWKSURI, &keys); err != nil {
		return nil, err
	}
	return &keys, nil
}

func fetchJSON(ctx context.Context, client *http.Client, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", u, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching %s: status %s", u, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
		return fmt.Errorf("decoding %s: %w", u, err)
	}
	return nil
}

// selectMapping picks the identity mapping for claims: only the one named only when it is set,
// else the first by priority whose claims all match. None → 401.
func selectMapping(provider string, mappings []OIDCMapping, only string, claims map[string]any) (OIDCMapping, *accessError) {
	sub, _ := claims["sub"].(string)
	if only != "" {
		for _, m := range mappings {
			if m.Name == only {
				if m.matches(claims) {
					return m, nil
				}
				return OIDCMapping{}, unauthorized("The token's claims (sub %q) do not match identity mapping %q of OIDC provider %q", sub, only, provider)
			}
		}
		return OIDCMapping{}, unauthorized("Identity mapping %q not found in OIDC provider %q", only, provider)
	}
	rank := func(m OIDCMapping) int {
		if m.Priority == 0 {
			return math.MaxInt
		}
		return m.Priority
	}
	sort.Slice(mappings, func(i, j int) bool {
		if ri, rj := rank(mappings[i]), rank(mappings[j]); ri != rj {
			return ri < rj
		}
		return mappings[i].Name < mappings[j].Name
	})
	for _, m := range mappings {
		if m.matches(claims) {
			return m, nil
		}
	}
	return OIDCMapping{}, unauthorized("No identity mapping of OIDC provider %q matches the token's claims (sub %q)", provider, sub)
}

func (m OIDCMapping) matches(claims map[string]any) bool {
	for name, pattern := range m.Claims {
		if !claimMatches(claims[name], pattern) {
			return false
		}
	}
	return true
}

func (m OIDCMapping) username(claims map[string]any) (string, *accessError) {
	if m.Username != "" {
		return m.Username, nil
	}
	v, ok := claims[m.UsernameFromClaim].(string)
	if !ok {
		return "", unauthorized("Identity mapping %q takes the username from claim %q, which the token does not have as a string", m.Name, m.UsernameFromClaim)
	}
	u := strings.ReplaceAll(v, ":", ".")
	if !oidcUsernameRE.MatchString(u) || strings.EqualFold(u, "anonymous") {
		return "", unauthorized("Identity mapping %q: claim %q value %q does not make a valid username", m.Name, m.UsernameFromClaim, v)
	}
	return u, nil
}

// claimMatches reports whether a claim value matches pattern: a string by glob, an array when any
// element does, a number or boolean by its JSON text; objects and missing claims never match.
func claimMatches(v any, pattern string) bool {
	if arr, ok := v.([]any); ok {
		for _, e := range arr {
			if s, ok := scalarString(e); ok && globMatch(pattern, s) {
				return true
			}
		}
		return false
	}
	s, ok := scalarString(v)
	return ok && globMatch(pattern, s)
}

func scalarString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case json.Number:
		return v.String(), true
	}
	return "", false
}

// globMatch matches s against pattern, where each '*' matches any run of characters (none
// included) and every other character only itself.
func globMatch(pattern, s string) bool {
	segs := strings.Split(pattern, "*")
	if len(segs) == 1 {
		return s == pattern
	}
	if !strings.HasPrefix(s, segs[0]) {
		return false
	}
	s = s[len(segs[0]):]
	last := segs[len(segs)-1]
	for _, seg := range segs[1 : len(segs)-1] {
		i := strings.Index(s, seg)
		if i < 0 {
			return false
		}
		s = s[i+len(seg):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
