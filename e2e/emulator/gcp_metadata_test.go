package emulator

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// metadataGet GETs path?query from m as Google's clients do (Metadata-Flavor: Google) unless
// headers says otherwise; a header with an empty value is removed.
func metadataGet(t *testing.T, m *GCPMetadata, method, path string, query url.Values, headers map[string]string) (int, string, http.Header) {
	t.Helper()
	u := "http://" + m.URL() + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(t.Context(), method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Metadata-Flavor", "Google")
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestGCPMetadataIdentity(t *testing.T) {
	clk := newClock()
	google := newTestOIDCIssuer(t, OIDCIssuerOptions{Now: clk.Now})
	const email = "puller@proj.iam.gserviceaccount.com"
	m := NewGCPMetadata(google, email)
	t.Cleanup(m.Close)
	if !strings.HasPrefix(m.BaseURL(), "http://") || m.BaseURL() != "http://"+m.URL() || strings.Contains(m.URL(), "/") {
		t.Fatalf("URL() %q, BaseURL() %q: want host:port and http://host:port", m.URL(), m.BaseURL())
	}
	if len(m.UniqueID()) != 21 || strings.Trim(m.UniqueID(), "0123456789") != "" {
		t.Fatalf("UniqueID() = %q, want 21 digits", m.UniqueID())
	}
	aud := url.Values{"audience": {testOIDCAudience}}

	for _, tc := range []struct {
		name       string
		method     string
		path       string
		query      url.Values
		headers    map[string]string
		wantStatus int
		want       string
	}{
		{"missing Metadata-Flavor", "GET", GCPIdentityPath, aud, map[string]string{"Metadata-Flavor": ""}, 403, "Missing Metadata-Flavor:Google header"},
		{"wrong Metadata-Flavor", "GET", GCPIdentityPath, aud, map[string]string{"Metadata-Flavor": "google"}, 403, "Missing Metadata-Flavor:Google header"},
		{"proxied request", "GET", GCPIdentityPath, aud, map[string]string{"X-Forwarded-For": "10.0.0.1"}, 403, "X-Forwarded-For"},
		{"no audience", "GET", GCPIdentityPath, nil, nil, 400, "non-empty audience parameter required"},
		{"bad format", "GET", GCPIdentityPath, url.Values{"audience": {"a"}, "format": {"compact"}}, nil, 400, "invalid format"},
		{"POST", "POST", GCPIdentityPath, aud, nil, 405, "Method Not Allowed"},
		{"another service account", "GET", "/computeMetadata/v1/instance/service-accounts/other@x.iam.gserviceaccount.com/identity", aud, nil, 404, "Not Found"},
		{"another path", "GET", "/computeMetadata/v1/instance/service-accounts/default/token", aud, nil, 404, "Not Found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, h := metadataGet(t, m, tc.method, tc.path, tc.query, tc.headers)
			if status != tc.wantStatus || !strings.Contains(body, tc.want) || h.Get("Metadata-Flavor") != "Google" {
				t.Fatalf("got %d %q (Metadata-Flavor %q), want %d with %q", status, body, h.Get("Metadata-Flavor"), tc.wantStatus, tc.want)
			}
		})
	}
	if got := len(m.IssuedTokens()); got != 0 {
		t.Fatalf("IssuedTokens() has %d after refusals only", got)
	}

	for _, tc := range []struct {
		name, path, format string
		wantEmail          bool
	}{
		{"standard format", GCPIdentityPath, "", false},
		{"full format", GCPIdentityPath, "full", true},
		{"by email", "/computeMetadata/v1/instance/service-accounts/" + email + "/identity", "standard", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{"audience": {testOIDCAudience}}
			if tc.format != "" {
				q.Set("format", tc.format)
			}
			status, token, _ := metadataGet(t, m, "GET", tc.path, q, nil)
			if status != http.StatusOK {
				t.Fatalf("got %d %s", status, token)
			}
			claims, err := verifyWith(token, issuerKeys(t, google))
			if err != nil {
				t.Fatalf("token does not verify against the issuer: %v", err)
			}
			now := clk.Now().Unix()
			if claims["iss"] != google.URL() || claims["aud"] != testOIDCAudience || claims["sub"] != m.UniqueID() ||
				claims["azp"] != m.UniqueID() || claims["iat"] != float64(now) || claims["exp"] != float64(now+int64(GCPIdentityTokenTTL/time.Second)) {
				t.Errorf("claims %v", claims)
			}
			if _, has := claims["email"]; has != tc.wantEmail || (tc.wantEmail && (claims["email"] != email || claims["email_verified"] != true)) {
				t.Errorf("claims %v, want email %v", claims, tc.wantEmail)
			}
		})
	}

	t.Run("the token exchanges at Artifactory for the requested audience only", func(t *testing.T) {
		art, err := NewArtifactory(ArtifactoryOptions{STS: newTestSTS(t, newOIDCIssuer(t), clk), Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(art.Close)
		art.SetOIDCProvider(OIDCProvider{Name: "gcp", IssuerURL: google.URL(), Audience: testOIDCAudience, Client: google.Client()})
		art.AddOIDCMapping("gcp", OIDCMapping{Name: "sa", Claims: map[string]string{"email": email}, UsernameFromClaim: "email"})
		full := url.Values{"audience": {testOIDCAudience}, "format": {"full"}}
		_, token, _ := metadataGet(t, m, "GET", GCPIdentityPath, full, nil)
		mustExchange(t, art, token, "gcp", email)
		_, other, _ := metadataGet(t, m, "GET", GCPIdentityPath, url.Values{"audience": {"https://elsewhere"}, "format": {"full"}}, nil)
		status, body := exchangeForm(t, art, oidcForm(other, "gcp"))
		wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED", "Invalid audience")
		// Standard format has no email: the mapping does not match.
		_, std, _ := metadataGet(t, m, "GET", GCPIdentityPath, aud, nil)
		status, body = exchangeForm(t, art, oidcForm(std, "gcp"))
		wantAccessError(t, status, body, http.StatusUnauthorized, "UNAUTHORIZED", "No identity mapping")
	})

	m.SetDown(true)
	if status, _, _ := metadataGet(t, m, "GET", GCPIdentityPath, aud, nil); status != http.StatusServiceUnavailable {
		t.Errorf("down: %d, want 503", status)
	}
	m.SetDown(false)
	if got := len(m.IssuedTokens()); got != 6 {
		t.Errorf("IssuedTokens() has %d, want 6", got)
	}
}
