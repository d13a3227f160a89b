package emulator

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	corev1 "k8s.io/api/core/v1"
)

const (
	testOIDCProvider = "cluster"
	testOIDCAudience = "https://artifactory.example.test"
)

func newTestOIDCIssuer(t *testing.T, o OIDCIssuerOptions) *OIDCIssuer {
	t.Helper()
	iss, err := NewOIDCIssuer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(iss.Close)
	return iss
}

// oidcFixture is an Artifactory with one OIDC provider, "cluster", for a standalone issuer, and a
// shared settable clock.
type oidcFixture struct {
	clk *clock
	iss *OIDCIssuer
	art *Artifactory
}

func newOIDCFixture(t *testing.T) *oidcFixture {
	t.Helper()
	clk := newClock()
	iss := newTestOIDCIssuer(t, OIDCIssuerOptions{Now: clk.Now})
	art, err := NewArtifactory(ArtifactoryOptions{STS: newTestSTS(t, newOIDCIssuer(t), clk), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(art.Close)
	art.SetOIDCProvider(OIDCProvider{Name: testOIDCProvider, IssuerURL: iss.URL(), Audience: testOIDCAudience, Client: iss.Client()})
	return &oidcFixture{clk: clk, iss: iss, art: art}
}

// saClaims are the claims of a ServiceAccount token for ns/sa with the provider's audience, valid
// for an hour from the fixture's clock.
func (f *oidcFixture) saClaims(ns, sa string) map[string]any {
	now := f.clk.Now()
	return map[string]any{
		"sub": "system:serviceaccount:" + ns + ":" + sa,
		"aud": []string{testOIDCAudience},
		"exp": now.Add(time.Hour).Unix(),
		"nbf": now.Unix(),
		"kubernetes.io": map[string]any{
			"namespace": ns, "serviceaccount": map[string]any{"name": sa},
		},
	}
}

func sign(t *testing.T, iss *OIDCIssuer, claims map[string]any) string {
	t.Helper()
	tok, err := iss.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *oidcFixture) saToken(t *testing.T, ns, sa string) string {
	t.Helper()
	return sign(t, f.iss, f.saClaims(ns, sa))
}

// oidcForm is a valid exchange request for token through provider, with kv (name, value, ...)
// set on top; an empty value removes the field.
func oidcForm(token, provider string, kv ...string) url.Values {
	v := url.Values{
		"grant_type":         {OIDCGrantType},
		"subject_token_type": {OIDCSubjectTokenType},
		"subject_token":      {token},
		"provider_name":      {provider},
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			v.Del(kv[i])
		} else {
			v.Set(kv[i], kv[i+1])
		}
	}
	return v
}

func postOIDC(t *testing.T, art *Artifactory, path, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, art.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := art.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func exchangeForm(t *testing.T, art *Artifactory, form url.Values) (int, string) {
	t.Helper()
	return postOIDC(t, art, OIDCTokenExchangePath, "application/x-www-form-urlencoded", form.Encode())
}

type oidcAnswer struct {
	AccessToken     string `json:"access_token"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	IssuedTokenType string `json:"issued_token_type"`
	Username        string `json:"username"`
	ReferenceToken  string `json:"reference_token"`
}

// mustExchange exchanges token through provider and wants a token for wantUser.
func mustExchange(t *testing.T, art *Artifactory, token, provider, wantUser string, kv ...string) oidcAnswer {
	t.Helper()
	status, body := exchangeForm(t, art, oidcForm(token, provider, kv...))
	if status != http.StatusOK {
		t.Fatalf("exchange: %d %s", status, body)
	}
	var a oidcAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatal(err)
	}
	if a.Username != wantUser || a.AccessToken == "" || a.TokenType != "Bearer" || a.IssuedTokenType != OIDCIssuedTokenType {
		t.Fatalf("answer %s, want a Bearer access token for %q", body, wantUser)
	}
	return a
}

// wantAccessError wants a JFrog Access error answer with status, code and a message containing want.
func wantAccessError(t *testing.T, status int, body string, wantStatus int, wantCode, want string) {
	t.Helper()
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if status != wantStatus || json.Unmarshal([]byte(body), &e) != nil || len(e.Errors) != 1 ||
		e.Errors[0].Code != wantCode || !strings.Contains(e.Errors[0].Message, want) {
		t.Fatalf("got %d %s, want %d %s with a message containing %q", status, body, wantStatus, wantCode, want)
	}
}

// realmStatus is the Docker token realm's answer status to user:pass.
func realmStatus(t *testing.T, art *Artifactory, user, pass string) int {
	t.Helper()
	q := url.Values{"service": {RegistryService}, "scope": {"repository:team/app:pull"}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, art.URL()+"/v2/token?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, pass)
	resp, err := art.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestOIDCExchangeMapsSubjectByGlob(t *testing.T) {
	f := newOIDCFixture(t)
	f.art.AddOIDCMapping(testOIDCProvider, OIDCMapping{
		Name:     "team-a",
		Priority: 1,
		Claims:   map[string]string{"iss": f.iss.URL(), "sub": "system:serviceaccount:team-a:*"},
		Username: "team-a-puller",
		Scope:    `applied-permissions/groups:"readers"`,
	})

	teamA := f.saToken(t, "team-a", "puller")
	a := mustExchange(t, f.art, teamA, testOIDCProvider, "team-a-puller")
	if a.ExpiresIn != DefaultOIDCExpiresIn || a.ReferenceToken != "" {
		t.Errorf("answer %+v, want expires_in %d and no reference token", a, DefaultOIDCExpiresIn)
	}
	if got := realmStatus(t, f.art, "team-a-puller", a.AccessToken); got != http.StatusOK {
		t.Errorf("realm with the issued token: %d, want 200", got)
	}

	teamB := f.saToken(t, "team-b", "puller")
	status, body := exchangeForm(t, f.art, oidcForm(teamB, testOIDCProvider))
	wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED",
		`No identity mapping of OIDC provider "cluster" matches the token's claims (sub "system:serviceaccount:team-b:puller")`)
	// The glob spans ':' too: a namespace with the prefix is not the namespace.
	status, body = exchangeForm(t, f.art, oidcForm(f.saToken(t, "team-a-evil", "puller"), testOIDCProvider))
	wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED", "No identity mapping")

	if got := f.art.Exchanges(); got != 1 {
		t.Errorf("Exchanges() = %d, want 1", got)
	}
	if got := f.art.ExchangesFor("team-a-puller"); got != 1 {
		t.Errorf("ExchangesFor(team-a-puller) = %d, want 1", got)
	}
	if got := f.art.OIDCExchanges(); got != 1 {
		t.Errorf("OIDCExchanges() = %d, want 1", got)
	}
	if got := f.art.OIDCAttempts(); got != 3 {
		t.Errorf("OIDCAttempts() = %d, want 3", got)
	}
	if got := f.art.IssuedTokens(); !slices.Equal(got, []string{a.AccessToken}) {
		t.Errorf("IssuedTokens() = %v, want the one access token", got)
	}
	if got := f.art.OIDCSubjectTokens(); len(got) != 3 || got[0] != teamA || got[1] != teamB {
		t.Errorf("OIDCSubjectTokens() = %d tokens, want the 3 received in order", len(got))
	}
	grants := f.art.OIDCGrants()
	if len(grants) != 1 || grants[0].Mapping != "team-a" || grants[0].Scope != `applied-permissions/groups:"readers"` ||
		grants[0].Subject != "system:serviceaccount:team-a:puller" || grants[0].AccessToken != a.AccessToken {
		t.Errorf("OIDCGrants() = %+v", grants)
	}
}

func TestOIDCExchangeMappingPriority(t *testing.T) {
	f := newOIDCFixture(t)
	add := func(name string, prio int, claims map[string]string, user string) {
		f.art.AddOIDCMapping(testOIDCProvider, OIDCMapping{Name: name, Priority: prio, Claims: claims, Username: user})
	}
	add("fallback", 0, map[string]string{"iss": f.iss.URL()}, "fallback-user")
	add("all-sa", 2, map[string]string{"sub": "system:serviceaccount:*"}, "any-sa")
	add("team-a", 1, map[string]string{"sub": "system:serviceaccount:team-a:*"}, "team-a")
	add("by-aud", 3, map[string]string{"aud": testOIDCAudience}, "by-aud") // array claim: any element

	other := f.saClaims("x", "y")
	other["sub"] = "robot"
	tests := []struct {
		name, token, mapping, wantUser string
	}{
		{"priority 1 wins over 2", f.saToken(t, "team-a", "app"), "", "team-a"},
		{"priority 2 when 1 does not match", f.saToken(t, "team-b", "app"), "", "any-sa"},
		{"priority 3 on an array claim before unset priority", sign(t, f.iss, other), "", "by-aud"},
		{"identity_mapping_name selects a lower-priority mapping", f.saToken(t, "team-a", "app"), "all-sa", "any-sa"},
		{"identity_mapping_name selects the unset-priority mapping", f.saToken(t, "team-a", "app"), "fallback", "fallback-user"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := mustExchange(t, f.art, tc.token, testOIDCProvider, tc.wantUser, "identity_mapping_name", tc.mapping)
			if g := f.art.OIDCGrants(); g[len(g)-1].Username != tc.wantUser {
				t.Errorf("grant %+v", g[len(g)-1])
			}
			_ = a
		})
	}

	t.Run("unset priority is evaluated last", func(t *testing.T) {
		f.art.RemoveOIDCMapping(testOIDCProvider, "by-aud")
		mustExchange(t, f.art, sign(t, f.iss, other), testOIDCProvider, "fallback-user")
	})
	t.Run("equal priorities go by name", func(t *testing.T) {
		add("aaa", 1, map[string]string{"sub": "system:serviceaccount:team-a:app"}, "aaa")
		mustExchange(t, f.art, f.saToken(t, "team-a", "app"), testOIDCProvider, "aaa")
	})
	t.Run("identity_mapping_name whose claims do not match is refused", func(t *testing.T) {
		status, body := exchangeForm(t, f.art, oidcForm(f.saToken(t, "team-b", "app"), testOIDCProvider, "identity_mapping_name", "team-a"))
		wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED",
			`do not match identity mapping "team-a" of OIDC provider "cluster"`)
	})
	t.Run("unknown identity_mapping_name is refused", func(t *testing.T) {
		status, body := exchangeForm(t, f.art, oidcForm(f.saToken(t, "team-a", "app"), testOIDCProvider, "identity_mapping_name", "nope"))
		wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED", `Identity mapping "nope" not found`)
	})
}

// forge builds a JWS compact token with an arbitrary header and claims and signature bytes.
func forge(t *testing.T, header, claims map[string]any, sig []byte) string {
	t.Helper()
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "." +
		base64.RawURLEncoding.EncodeToString(sig)
}

func TestOIDCExchangeRejectsInvalidSubjectTokens(t *testing.T) {
	f := newOIDCFixture(t)
	f.art.AddOIDCMapping(testOIDCProvider, OIDCMapping{
		Name: "any", Claims: map[string]string{"sub": "*"}, Username: "u",
	})
	stranger := newTestOIDCIssuer(t, OIDCIssuerOptions{Now: f.clk.Now})
	now := f.clk.Now()
	with := func(edit func(c map[string]any)) string {
		c := f.saClaims("apps", "puller")
		edit(c)
		return sign(t, f.iss, c)
	}
	hmac := func() string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")},
			(&jose.SignerOptions{}).WithHeader("kid", f.iss.KeyID()))
		if err != nil {
			t.Fatal(err)
		}
		c := f.saClaims("apps", "puller")
		c["iss"] = f.iss.URL()
		s, err := jwt.Signed(signer).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name, token, want string
	}{
		{"wrong audience", with(func(c map[string]any) { c["aud"] = "sts.amazonaws.com" }),
			`Invalid audience: token audience ["sts.amazonaws.com"] does not contain "https://artifactory.example.test"`},
		{"expired beyond the skew", with(func(c map[string]any) { c["exp"] = now.Add(-OIDCClockSkew - time.Second).Unix() }),
			"Token expired at"},
		{"no exp", with(func(c map[string]any) { delete(c, "exp") }), "Token has no exp claim"},
		{"nbf in the future", with(func(c map[string]any) { c["nbf"] = now.Add(5 * time.Minute).Unix() }),
			"Token is not valid before"},
		{"iat in the future", with(func(c map[string]any) { c["iat"] = now.Add(5 * time.Minute).Unix() }),
			"Token is issued in the future"},
		{"issuer mismatch", with(func(c map[string]any) { c["iss"] = "https://evil.example.test" }),
			`Token issuer "https://evil.example.test" does not match the issuer URL "` + f.iss.URL() + `" of OIDC provider "cluster"`},
		{"bad signature (payload altered)", func() string {
			parts := strings.Split(f.saToken(t, "apps", "puller"), ".")
			altered := f.saClaims("kube-system", "admin")
			altered["iss"] = f.iss.URL()
			c, _ := json.Marshal(altered)
			return parts[0] + "." + base64.RawURLEncoding.EncodeToString(c) + "." + parts[2]
		}(), "Token signature verification failed"},
		{"signed by another issuer's key, unknown kid", func() string {
			c := f.saClaims("apps", "puller")
			c["iss"] = f.iss.URL()
			return sign(t, stranger, c)
		}(), `has no key with kid "` + stranger.KeyID() + `"`},
		{"alg none", forge(t, map[string]any{"alg": "none", "typ": "JWT"}, f.saClaims("apps", "puller"), nil),
			`unsupported algorithm "none"`},
		{"HS256 keyed with a public secret", hmac(), `unsupported algorithm "HS256"`},
		{"not a JWT", "not-a-jwt", "not a signed JWT"},
		{"unreadable header", "e30x.e30.AAAA", "unreadable JOSE header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := exchangeForm(t, f.art, oidcForm(tc.token, testOIDCProvider))
			wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED", tc.want)
		})
	}
	t.Run("valid within the skew, with aud as a string among others", func(t *testing.T) {
		mustExchange(t, f.art, with(func(c map[string]any) {
			c["exp"] = now.Add(-OIDCClockSkew / 2).Unix()
			c["nbf"] = now.Add(OIDCClockSkew / 2).Unix()
			c["aud"] = []string{"other", testOIDCAudience}
		}), testOIDCProvider, "u")
		mustExchange(t, f.art, with(func(c map[string]any) { c["aud"] = testOIDCAudience }), testOIDCProvider, "u")
	})
	if got := f.art.Exchanges(); got != 2 {
		t.Errorf("Exchanges() = %d, want 2", got)
	}
	if got := len(f.art.OIDCSubjectTokens()); got != len(tests)+2 {
		t.Errorf("OIDCSubjectTokens() has %d, want every one received (%d)", got, len(tests)+2)
	}
}

func TestOIDCExchangeKeyRotation(t *testing.T) {
	f := newOIDCFixture(t)
	f.art.AddOIDCMapping(testOIDCProvider, OIDCMapping{Name: "any", Claims: map[string]string{"sub": "*"}, Username: "u"})
	old := f.saToken(t, "apps", "puller")
	mustExchange(t, f.art, old, testOIDCProvider, "u")
	mustExchange(t, f.art, old, testOIDCProvider, "u")
	if got := f.iss.JWKSFetches(); got != 1 {
		t.Fatalf("JWKS fetched %d times for two exchanges within %s, want 1 (cached)", got, OIDCKeyCacheTTL)
	}
	if err := f.iss.RotateKey(); err != nil {
		t.Fatal(err)
	}
	// Until the set is fetched again, the cached old key still verifies (as in Artifactory).
	mustExchange(t, f.art, old, testOIDCProvider, "u")
	// A new kid is fetched at once ...
	mustExchange(t, f.art, f.saToken(t, "apps", "puller"), testOIDCProvider, "u")
	if got := f.iss.JWKSFetches(); got != 2 {
		t.Fatalf("JWKS fetched %d times, want 2 (unknown kid refetches)", got)
	}
	// ... which drops the old key: a token signed with it now fails.
	status, body := exchangeForm(t, f.art, oidcForm(old, testOIDCProvider))
	wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED", "Failed to get public key: the JWKS of issuer")

	t.Run("the cache expires after its TTL", func(t *testing.T) {
		f := newOIDCFixture(t)
		f.art.AddOIDCMapping(testOIDCProvider, OIDCMapping{Name: "any", Claims: map[string]string{"sub": "*"}, Username: "u"})
		old := f.saToken(t, "apps", "puller")
		mustExchange(t, f.art, old, testOIDCProvider, "u")
		if err := f.iss.RotateKey(); err != nil {
			t.Fatal(err)
		}
		f.clk.Advance(OIDCKeyCacheTTL)
		status, body := exchangeForm(t, f.art, oidcForm(old, testOIDCProvider))
		wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED", "no key with kid")
	})
}

func TestOIDCExchangeDiscoveryFailures(t *testing.T) {
	f := newOIDCFixture(t)
	claims := f.saClaims("apps", "puller")
	t.Run("issuer URL with a trailing slash the discovery document does not name", func(t *testing.T) {
		f.art.SetOIDCProvider(OIDCProvider{Name: "slash", IssuerURL: f.iss.URL() + "/", Audience: testOIDCAudience, Client: f.iss.Client()})
		f.art.AddOIDCMapping("slash", OIDCMapping{Name: "any", Claims: map[string]string{"sub": "*"}, Username: "u"})
		c := cloneClaims(claims)
		c["iss"] = f.iss.URL() + "/"
		status, body := exchangeForm(t, f.art, oidcForm(sign(t, f.iss, c), "slash"))
		wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED",
			`Failed to get public key: the discovery document at `+f.iss.URL()+`/.well-known/openid-configuration names issuer "`+f.iss.URL()+`"`)
	})
	t.Run("issuer whose certificate the default client does not trust", func(t *testing.T) {
		f.art.SetOIDCProvider(OIDCProvider{Name: "untrusted", IssuerURL: f.iss.URL(), Audience: testOIDCAudience})
		f.art.AddOIDCMapping("untrusted", OIDCMapping{Name: "any", Claims: map[string]string{"sub": "*"}, Username: "u"})
		status, body := exchangeForm(t, f.art, oidcForm(sign(t, f.iss, claims), "untrusted"))
		wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED", "Failed to get public key: fetching")
	})
	t.Run("IssuerClient is the default client", func(t *testing.T) {
		art, err := NewArtifactory(ArtifactoryOptions{STS: newTestSTS(t, newOIDCIssuer(t), f.clk), Now: f.clk.Now, IssuerClient: f.iss.Client()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(art.Close)
		art.SetOIDCProvider(OIDCProvider{Name: "p", IssuerURL: f.iss.URL(), Audience: testOIDCAudience})
		art.AddOIDCMapping("p", OIDCMapping{Name: "any", Claims: map[string]string{"sub": "*"}, Username: "u"})
		mustExchange(t, art, sign(t, f.iss, claims), "p", "u")
	})
}

func cloneClaims(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestOIDCExchangeES256Issuer(t *testing.T) {
	f := newOIDCFixture(t)
	es := newTestOIDCIssuer(t, OIDCIssuerOptions{Algorithm: "ES256", Now: f.clk.Now})
	f.art.SetOIDCProvider(OIDCProvider{Name: "es", IssuerURL: es.URL(), Audience: testOIDCAudience, Client: es.Client()})
	f.art.AddOIDCMapping("es", OIDCMapping{Name: "any", Claims: map[string]string{"sub": "system:serviceaccount:*:*"}, Username: "es-user"})
	mustExchange(t, f.art, sign(t, es, f.saClaims("apps", "puller")), "es", "es-user")
	if parts := strings.Split(sign(t, es, f.saClaims("apps", "puller")), "."); !strings.Contains(string(mustDecode(t, parts[0])), `"ES256"`) {
		t.Errorf("ES256 issuer's header %s", mustDecode(t, parts[0]))
	}
}

func mustDecode(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOIDCExchangeRequestBodies(t *testing.T) {
	f := newOIDCFixture(t)
	f.art.AddOIDCMapping(testOIDCProvider, OIDCMapping{Name: "any", Claims: map[string]string{"sub": "*"}, Username: "u"})
	jsonBody := func(kv ...any) string {
		m := map[string]any{
			"grant_type": OIDCGrantType, "subject_token_type": OIDCSubjectTokenType,
			"subject_token": f.saToken(t, "apps", "puller"), "provider_name": testOIDCProvider,
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	form := func(kv ...string) string {
		return oidcForm(f.saToken(t, "apps", "puller"), testOIDCProvider, kv...).Encode()
	}
	const formType, jsonType = "application/x-www-form-urlencoded", "application/json"
	tests := []struct {
		name, path, contentType, body string
		wantStatus                    int
		wantCode, want                string
	}{
		{"form", OIDCTokenExchangePath, formType, form(), 200, "", ""},
		{"form with charset", OIDCTokenExchangePath, formType + "; charset=UTF-8", form(), 200, "", ""},
		{"JSON with optional fields and unknown ones JFrog's clients add", OIDCTokenExchangePath, jsonType,
			jsonBody("project_key", "proj", "audience", "jfrt@*", "identity_mapping_name", "any", "gh_job_id", "build"), 200, "", ""},
		{"JSON include_reference_token as a string", OIDCTokenExchangePath, jsonType, jsonBody("include_reference_token", "true"), 200, "", ""},
		{"trailing slash is not the endpoint", OIDCTokenExchangePath + "/", formType, form(), 404, "", "Not Found"},
		{"other content type", OIDCTokenExchangePath, "text/plain", form(), 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type"},
		{"no content type", OIDCTokenExchangePath, "", form(), 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type"},
		{"form body sent as JSON", OIDCTokenExchangePath, jsonType, form(), 400, "BAD_REQUEST", "not a JSON object"},
		{"JSON array", OIDCTokenExchangePath, jsonType, `[]`, 400, "BAD_REQUEST", "not a JSON object"},
		{"JSON with trailing data", OIDCTokenExchangePath, jsonType, jsonBody() + "{}", 400, "BAD_REQUEST", "data after"},
		{"bad form encoding", OIDCTokenExchangePath, formType, "grant_type=%zz", 400, "BAD_REQUEST", "not form-encoded"},
		{"missing grant_type", OIDCTokenExchangePath, formType, form("grant_type", ""), 400, "BAD_REQUEST", "grant_type is required"},
		{"wrong grant_type", OIDCTokenExchangePath, formType, form("grant_type", "client_credentials"), 400, "BAD_REQUEST", `unsupported grant_type "client_credentials"`},
		{"missing subject_token_type", OIDCTokenExchangePath, formType, form("subject_token_type", ""), 400, "BAD_REQUEST", "subject_token_type is required"},
		{"access token as subject_token_type", OIDCTokenExchangePath, formType,
			form("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"), 400, "BAD_REQUEST", "unsupported subject_token_type"},
		{"missing subject_token", OIDCTokenExchangePath, formType, form("subject_token", ""), 400, "BAD_REQUEST", "subject_token is required"},
		{"missing provider_name", OIDCTokenExchangePath, formType, form("provider_name", ""), 400, "BAD_REQUEST", "provider_name is required"},
		{"repeated provider_name", OIDCTokenExchangePath, formType, form() + "&provider_name=other", 400, "BAD_REQUEST", "more than once"},
		{"JSON provider_name not a string", OIDCTokenExchangePath, jsonType, jsonBody("provider_name", 7), 400, "BAD_REQUEST", "provider_name must be a string"},
		{"JSON include_reference_token not a boolean", OIDCTokenExchangePath, jsonType, jsonBody("include_reference_token", "yes"), 400, "BAD_REQUEST", "include_reference_token must be true or false"},
		{"unknown provider", OIDCTokenExchangePath, formType, form("provider_name", "nope"), 400, "BAD_REQUEST", `OIDC provider "nope" not found`},
	}
	wantExchanges := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := postOIDC(t, f.art, tc.path, tc.contentType, tc.body)
			switch {
			case tc.wantStatus == 200:
				wantExchanges++
				if status != 200 || !strings.Contains(body, `"username":"u"`) {
					t.Fatalf("got %d %s, want a token", status, body)
				}
			case tc.wantCode == "":
				if status != tc.wantStatus || !strings.Contains(body, tc.want) {
					t.Fatalf("got %d %s, want %d with %q", status, body, tc.wantStatus, tc.want)
				}
			default:
				wantAccessError(t, status, body, tc.wantStatus, tc.wantCode, tc.want)
			}
			if got := f.art.OIDCExchanges(); got != wantExchanges {
				t.Errorf("OIDCExchanges() = %d, want %d", got, wantExchanges)
			}
		})
	}
	t.Run("GET is not allowed", func(t *testing.T) {
		resp, err := f.art.Client().Get(f.art.URL() + OIDCTokenExchangePath)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantAccessError(t, resp.StatusCode, string(b), http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "Method Not Allowed")
	})
	t.Run("requests are recorded as received", func(t *testing.T) {
		var sawJSON bool
		for _, r := range f.art.OIDCRequests() {
			if r.ContentType == jsonType && r.ProjectKey == "proj" && r.Audience == "jfrt@*" && r.IdentityMappingName == "any" {
				sawJSON = true
			}
		}
		if !sawJSON {
			t.Errorf("OIDCRequests() = %+v, want the JSON request's project_key, audience and identity_mapping_name", f.art.OIDCRequests())
		}
		g := f.art.OIDCGrants()
		if g[2].ProjectKey != "proj" || g[2].Audience != "jfrt@*" {
			t.Errorf("grant %+v, want the request's project_key and audience", g[2])
		}
	})
}

func TestOIDCExchangeReferenceTokenAndExpiry(t *testing.T) {
	f := newOIDCFixture(t)
	f.art.AddOIDCMapping(testOIDCProvider, OIDCMapping{Name: "long", Claims: map[string]string{"sub": "*"}, Username: "u", ExpiresIn: 7200})

	a := mustExchange(t, f.art, f.saToken(t, "apps", "puller"), testOIDCProvider, "u", "include_reference_token", "true")
	if a.ExpiresIn != 7200 || a.ReferenceToken == "" || a.ReferenceToken == a.AccessToken {
		t.Fatalf("answer %+v, want expires_in 7200 and a distinct reference token", a)
	}
	for name, pass := range map[string]string{"access token": a.AccessToken, "reference token": a.ReferenceToken} {
		if got := realmStatus(t, f.art, "u", pass); got != http.StatusOK {
			t.Errorf("realm with the %s: %d, want 200", name, got)
		}
		if !slices.Contains(f.art.IssuedTokens(), pass) {
			t.Errorf("IssuedTokens() lacks the %s", name)
		}
	}
	if got := f.art.Exchanges(); got != 1 {
		t.Errorf("Exchanges() = %d, want 1 (a reference token is no second exchange)", got)
	}

	f.art.SetMaxExpiry(30 * time.Minute)
	if b := mustExchange(t, f.art, f.saToken(t, "apps", "puller"), testOIDCProvider, "u"); b.ExpiresIn != 1800 {
		t.Errorf("expires_in %d under a 30m max expiry, want 1800", b.ExpiresIn)
	}
	f.art.SetMaxExpiry(0)

	f.clk.Advance(7200 * time.Second)
	if got := realmStatus(t, f.art, "u", a.AccessToken); got != http.StatusUnauthorized {
		t.Errorf("realm with an expired OIDC token: %d, want 401", got)
	}
}

func TestOIDCExchangeUsernameFromClaim(t *testing.T) {
	f := newOIDCFixture(t)
	f.art.AddOIDCMapping(testOIDCProvider, OIDCMapping{Name: "sa", Priority: 1, Claims: map[string]string{"sub": "system:serviceaccount:*"}, UsernameFromClaim: "sub"})
	f.art.AddOIDCMapping(testOIDCProvider, OIDCMapping{Name: "email", Priority: 2, Claims: map[string]string{"sub": "*"}, UsernameFromClaim: "email"})
	a := mustExchange(t, f.art, f.saToken(t, "team-a", "puller"), testOIDCProvider, "system.serviceaccount.team-a.puller")
	if got := realmStatus(t, f.art, "system.serviceaccount.team-a.puller", a.AccessToken); got != http.StatusOK {
		t.Errorf("realm: %d", got)
	}
	c := f.saClaims("x", "y")
	c["sub"], c["email"] = "robot", "robot@example.test"
	mustExchange(t, f.art, sign(t, f.iss, c), testOIDCProvider, "robot@example.test")

	for name, email := range map[string]any{"missing": nil, "not a string": 5, "invalid characters": "a b/c", "anonymous": "Anonymous"} {
		t.Run(name, func(t *testing.T) {
			c := cloneClaims(c)
			if email == nil {
				delete(c, "email")
			} else {
				c["email"] = email
			}
			status, body := exchangeForm(t, f.art, oidcForm(sign(t, f.iss, c), testOIDCProvider))
			wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED", `Identity mapping "email"`)
		})
	}
}

func TestOIDCExchangeFaultsAndProviderRemoval(t *testing.T) {
	f := newOIDCFixture(t)
	f.art.AddOIDCMapping(testOIDCProvider, OIDCMapping{Name: "any", Claims: map[string]string{"sub": "*"}, Username: "u"})
	tok := f.saToken(t, "apps", "puller")

	f.art.SetDown(true)
	if status, _ := exchangeForm(t, f.art, oidcForm(tok, testOIDCProvider)); status != http.StatusServiceUnavailable {
		t.Errorf("down: %d, want 503", status)
	}
	f.art.SetDown(false)
	f.art.SetStatus(http.StatusInternalServerError, `{"errors":[{"code":"INTERNAL","message":"forced"}]}`)
	if status, body := exchangeForm(t, f.art, oidcForm(tok, testOIDCProvider)); status != 500 || !strings.Contains(body, "forced") {
		t.Errorf("forced status: %d %s", status, body)
	}
	f.art.SetStatus(0, "")
	f.art.SetDelay(time.Minute)
	client := *f.art.Client() // a copy: Client() is shared
	client.Timeout = 100 * time.Millisecond
	if resp, err := client.PostForm(f.art.URL()+OIDCTokenExchangePath, oidcForm(tok, testOIDCProvider)); err == nil {
		resp.Body.Close()
		t.Error("delayed OIDC exchange answered before the client timeout")
	}
	f.art.SetDelay(0)
	a := mustExchange(t, f.art, tok, testOIDCProvider, "u")
	// Down is not an attempt; the forced, delayed and good ones are.
	if got, gotOIDC := f.art.Attempts(), f.art.OIDCAttempts(); got != 3 || gotOIDC != 3 {
		t.Errorf("Attempts() = %d, OIDCAttempts() = %d, want 3 and 3", got, gotOIDC)
	}

	f.art.RemoveOIDCProvider(testOIDCProvider)
	status, body := exchangeForm(t, f.art, oidcForm(tok, testOIDCProvider))
	wantAccessError(t, status, body, http.StatusBadRequest, "BAD_REQUEST", `OIDC provider "cluster" not found`)
	if got := realmStatus(t, f.art, "u", a.AccessToken); got != http.StatusOK {
		t.Errorf("token issued before the provider was removed: realm %d, want 200", got)
	}
	// A provider set again starts without mappings.
	f.art.SetOIDCProvider(OIDCProvider{Name: testOIDCProvider, IssuerURL: f.iss.URL(), Audience: testOIDCAudience, Client: f.iss.Client()})
	status, body = exchangeForm(t, f.art, oidcForm(tok, testOIDCProvider))
	wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED", "No identity mapping")
}

func TestOIDCProviderReplacedKeepsMappings(t *testing.T) {
	f := newOIDCFixture(t)
	f.art.AddOIDCMapping(testOIDCProvider, OIDCMapping{Name: "any", Claims: map[string]string{"sub": "*"}, Username: "u"})
	f.art.SetOIDCProvider(OIDCProvider{Name: testOIDCProvider, IssuerURL: f.iss.URL(), Audience: "new-audience", Client: f.iss.Client()})
	status, body := exchangeForm(t, f.art, oidcForm(f.saToken(t, "apps", "puller"), testOIDCProvider))
	wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED", `does not contain "new-audience"`)
	c := f.saClaims("apps", "puller")
	c["aud"] = "new-audience"
	mustExchange(t, f.art, sign(t, f.iss, c), testOIDCProvider, "u")
}

func TestOIDCSetupBugsPanic(t *testing.T) {
	f := newOIDCFixture(t)
	good := OIDCMapping{Name: "m", Claims: map[string]string{"sub": "*"}, Username: "u"}
	for name, fn := range map[string]func(){
		"provider without audience": func() { f.art.SetOIDCProvider(OIDCProvider{Name: "p", IssuerURL: f.iss.URL()}) },
		"provider over http":        func() { f.art.SetOIDCProvider(OIDCProvider{Name: "p", IssuerURL: "http://x", Audience: "a"}) },
		"unknown provider":          func() { f.art.AddOIDCMapping("nope", good) },
		"no claims":                 func() { m := good; m.Claims = nil; f.art.AddOIDCMapping(testOIDCProvider, m) },
		"two usernames":             func() { m := good; m.UsernameFromClaim = "sub"; f.art.AddOIDCMapping(testOIDCProvider, m) },
		"no username":               func() { m := good; m.Username = ""; f.art.AddOIDCMapping(testOIDCProvider, m) },
		"username with a colon":     func() { m := good; m.Username = "a:b"; f.art.AddOIDCMapping(testOIDCProvider, m) },
		"bad scope":                 func() { m := good; m.Scope = "member-of-groups:readers"; f.art.AddOIDCMapping(testOIDCProvider, m) },
		"negative priority":         func() { m := good; m.Priority = -1; f.art.AddOIDCMapping(testOIDCProvider, m) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			fn()
		})
	}
	// The lock is not left held by a panic.
	f.art.AddOIDCMapping(testOIDCProvider, good)
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"abc", "abc", true},
		{"abc", "abcd", false},
		{"*", "", true},
		{"*", "any:thing/at all", true},
		{"system:serviceaccount:team-a:*", "system:serviceaccount:team-a:puller", true},
		{"system:serviceaccount:team-a:*", "system:serviceaccount:team-a-x:puller", false},
		{"system:serviceaccount:*:puller", "system:serviceaccount:ns:puller", true},
		{"system:serviceaccount:*:puller", "system:serviceaccount:ns:puller2", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "acb", false},
		{"ab*ba", "aba", false},
		{"a?c", "abc", false}, // only '*' is special
		{"a[b]c", "a[b]c", true},
	} {
		if got := globMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

func TestOIDCTokensPullThroughTheRegistryWithRepositoryPermissions(t *testing.T) {
	env, err := Start(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	iss := newTestOIDCIssuer(t, OIDCIssuerOptions{})
	art := env.Artifactory
	art.SetOIDCProvider(OIDCProvider{Name: testOIDCProvider, IssuerURL: iss.URL(), Audience: testOIDCAudience, Client: iss.Client()})
	for _, team := range []string{"team-a", "team-b"} {
		art.AddOIDCMapping(testOIDCProvider, OIDCMapping{
			Name: team, Priority: 1, Claims: map[string]string{"sub": "system:serviceaccount:" + team + ":*"}, Username: team + "-puller",
		})
		art.SetRepositoryPermissions(team+"-puller", team+"/*")
		if _, err := env.Registry.PushRandomImage(t.Context(), team+"/app", "v1", env.AdminUser, env.AdminPassword); err != nil {
			t.Fatal(err)
		}
	}
	token := func(ns string) string {
		return sign(t, iss, map[string]any{
			"sub": "system:serviceaccount:" + ns + ":puller", "aud": testOIDCAudience, "exp": time.Now().Add(time.Hour).Unix(),
		})
	}
	host := env.Registry.Host()
	a := mustExchange(t, art, token("team-a"), testOIDCProvider, "team-a-puller")
	b := mustExchange(t, art, token("team-b"), testOIDCProvider, "team-b-puller")
	tests := []struct {
		name, repo string
		secret     corev1.Secret
		wantErr    bool
	}{
		{"team-a pulls its repository", "team-a/app", pullSecret(t, host, a.Username, a.AccessToken), false},
		{"team-a is denied team-b's", "team-b/app", pullSecret(t, host, a.Username, a.AccessToken), true},
		{"team-b pulls its repository", "team-b/app", pullSecret(t, host, b.Username, b.AccessToken), false},
		{"team-b is denied team-a's", "team-a/app", pullSecret(t, host, b.Username, b.AccessToken), true},
		{"team-a's token under team-b's name fails", "team-b/app", pullSecret(t, host, b.Username, a.AccessToken), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := env.Registry.PullManifest(t.Context(), host+"/"+tc.repo+":v1", []corev1.Secret{tc.secret})
			if (err != nil) != tc.wantErr {
				t.Fatalf("PullManifest(%s) = %v, want error %v", tc.repo, err, tc.wantErr)
			}
		})
	}
	if art.ExchangesFor("team-a-puller") != 1 || art.ExchangesFor("team-b-puller") != 1 || art.ExchangesFor(env.Username) != 0 {
		t.Errorf("ExchangesFor: team-a %d, team-b %d, %s %d", art.ExchangesFor("team-a-puller"), art.ExchangesFor("team-b-puller"),
			env.Username, art.ExchangesFor(env.Username))
	}
	t.Run("an OIDC token cannot push", func(t *testing.T) {
		if _, err := env.Registry.PushRandomImage(t.Context(), "team-a/app", "v2", a.Username, a.AccessToken); err == nil {
			t.Fatal("push with an OIDC pull token succeeded")
		}
	})
}
