package emulator

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

type exchangeFixture struct {
	clk  *clock
	sts  *STS
	art  *Artifactory
	role Creds // session credentials of the mapped role
}

func newExchangeFixture(t *testing.T, maxExpiry time.Duration) *exchangeFixture {
	t.Helper()
	clk := newClock()
	s := newTestSTS(t, newOIDCIssuer(t), clk)
	art, err := NewArtifactory(ArtifactoryOptions{
		STS:       s,
		Mappings:  map[string]string{testRoleARN: "k8s-puller"},
		MaxExpiry: maxExpiry,
		Now:       clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(art.Close)
	return &exchangeFixture{clk: clk, sts: s, art: art, role: s.IssueCredentials(testRoleARN, "webhook", time.Hour)}
}

// exchange POSTs the forwarded headers of signed to the Artifactory emulator, as the webhook does.
func (f *exchangeFixture) exchange(t *testing.T, urlSuffix string, signed *http.Request, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, f.art.URL()+urlSuffix, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, h := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Region-Set"} {
		if v := signed.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	resp, err := f.art.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type tokenAnswer struct {
	TokenID     string `json:"token_id"`
	AccessToken string `json:"access_token"`
	Scope       string `json:"scope"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Username    string `json:"username"`
}

func TestArtifactoryExchange(t *testing.T) {
	f := newExchangeFixture(t, 3*time.Hour)
	global := func() *http.Request { return signGetCallerIdentity(t, f.role, "sts.amazonaws.com", "*", f.clk.Now()) }
	unmappedCreds := f.sts.IssueCredentials("arn:aws:iam::123456789012:role/unmapped", "webhook", time.Hour)

	tests := []struct {
		name       string
		suffix     string
		signed     func() *http.Request
		body       string
		wantStatus int
		wantInBody string
		wantExpiry int64
	}{
		{"signed global request gets a token for the mapped user", TokenExchangePath, global,
			`{"expires_in": 3600}`, http.StatusOK, `"username":"k8s-puller"`, 3600},
		{"expires_in above max expiry is capped", TokenExchangePath, global,
			`{"expires_in": 86400}`, http.StatusOK, `"token_type":"Bearer"`, 10800},
		{"regional request with ?region is verified against the regional host", TokenExchangePath + "?region=eu-west-1",
			func() *http.Request {
				return signGetCallerIdentity(t, f.role, "sts.eu-west-1.amazonaws.com", "eu-west-1", f.clk.Now())
			}, `{"expires_in": 600}`, http.StatusOK, `"username":"k8s-puller"`, 600},
		{"request signed for the global host fails when ?region names another", TokenExchangePath + "?region=eu-west-1",
			global, `{"expires_in": 600}`, http.StatusUnauthorized, "SignatureDoesNotMatch", 0},
		{"unmapped role is refused naming the role", TokenExchangePath,
			func() *http.Request {
				return signGetCallerIdentity(t, unmappedCreds, "sts.amazonaws.com", "*", f.clk.Now())
			}, `{"expires_in": 600}`, http.StatusUnauthorized, "no user is mapped to IAM role arn:aws:iam::123456789012:role/unmapped", 0},
		{"bad signature is refused with the STS reason", TokenExchangePath,
			func() *http.Request {
				r := global()
				auth := r.Header.Get("Authorization")
				r.Header.Set("Authorization", auth[:len(auth)-8]+"00000000")
				return r
			}, `{"expires_in": 600}`, http.StatusUnauthorized, "Failed to verify AWS identity: SignatureDoesNotMatch", 0},
		{"missing signature headers are refused", TokenExchangePath,
			func() *http.Request { return &http.Request{Header: http.Header{}} },
			`{"expires_in": 600}`, http.StatusUnauthorized, "missing AWS signature headers", 0},
		{"trailing slash is not the exchange endpoint", TokenExchangePath + "/", global,
			`{"expires_in": 600}`, http.StatusNotFound, "Not Found", 0},
		{"string expires_in is a bad request", TokenExchangePath, global,
			`{"expires_in": "600"}`, http.StatusBadRequest, "expires_in", 0},
		{"zero expires_in is a bad request", TokenExchangePath, global,
			`{"expires_in": 0}`, http.StatusBadRequest, "expires_in", 0},
		{"negative expires_in is a bad request", TokenExchangePath, global,
			`{"expires_in": -5}`, http.StatusBadRequest, "expires_in", 0},
		{"fractional expires_in is a bad request", TokenExchangePath, global,
			`{"expires_in": 1.5}`, http.StatusBadRequest, "expires_in", 0},
		{"missing expires_in is a bad request", TokenExchangePath, global,
			`{}`, http.StatusBadRequest, "expires_in", 0},
		{"invalid region is a bad request", TokenExchangePath + "?region=moon", global,
			`{"expires_in": 600}`, http.StatusBadRequest, "invalid region", 0},
	}
	wantExchanges, wantAttempts := 0, 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := f.exchange(t, tc.suffix, tc.signed(), tc.body)
			if status != tc.wantStatus || !strings.Contains(body, tc.wantInBody) {
				t.Fatalf("got %d %s, want %d containing %q", status, body, tc.wantStatus, tc.wantInBody)
			}
			if status == http.StatusOK {
				wantExchanges++
				var tok tokenAnswer
				if err := json.Unmarshal([]byte(body), &tok); err != nil {
					t.Fatal(err)
				}
				if tok.AccessToken == "" || tok.TokenID == "" || tok.ExpiresIn != tc.wantExpiry {
					t.Errorf("token answer %+v, want expires_in %d and a token", tok, tc.wantExpiry)
				}
			}
			if got := f.art.Exchanges(); got != wantExchanges {
				t.Errorf("Exchanges() = %d, want %d", got, wantExchanges)
			}
			// The trailing-slash request is another path: not an exchange attempt.
			if tc.suffix != TokenExchangePath+"/" {
				wantAttempts++
			}
			if got := f.art.Attempts(); got != wantAttempts {
				t.Errorf("Attempts() = %d, want %d", got, wantAttempts)
			}
		})
	}
}

func TestArtifactoryFaultSwitches(t *testing.T) {
	f := newExchangeFixture(t, 0)
	signed := func() *http.Request { return signGetCallerIdentity(t, f.role, "sts.amazonaws.com", "*", f.clk.Now()) }
	body := `{"expires_in": 600}`

	f.art.SetDown(true)
	if status, _ := f.exchange(t, TokenExchangePath, signed(), body); status != http.StatusServiceUnavailable {
		t.Errorf("down: status %d, want 503", status)
	}
	f.art.SetDown(false)

	f.art.SetStatus(http.StatusForbidden, `{"errors":[{"status":403,"message":"forced"}]}`)
	if status, got := f.exchange(t, TokenExchangePath, signed(), body); status != http.StatusForbidden || !strings.Contains(got, "forced") {
		t.Errorf("forced status: got %d %s", status, got)
	}
	f.art.SetStatus(0, "")

	f.art.RemoveMapping(testRoleARN)
	if status, _ := f.exchange(t, TokenExchangePath, signed(), body); status != http.StatusUnauthorized {
		t.Errorf("after RemoveMapping: status %d, want 401", status)
	}
	f.art.SetMapping(testRoleARN, "other-user")
	if status, got := f.exchange(t, TokenExchangePath, signed(), body); status != http.StatusOK || !strings.Contains(got, `"username":"other-user"`) {
		t.Errorf("after SetMapping: got %d %s", status, got)
	}

	f.sts.SetDeny(true)
	if status, got := f.exchange(t, TokenExchangePath, signed(), body); status != http.StatusUnauthorized || !strings.Contains(got, "AccessDenied") {
		t.Errorf("STS denying: got %d %s, want 401 naming AccessDenied", status, got)
	}
	f.sts.SetDeny(false)

	// The request while down never reached the instance.
	if got := f.art.Attempts(); got != 4 {
		t.Errorf("Attempts() = %d, want 4", got)
	}
	if got := f.art.Exchanges(); got != 1 {
		t.Errorf("Exchanges() = %d, want 1", got)
	}
}

func TestArtifactoryDelayGivesUpWithTheClient(t *testing.T) {
	f := newExchangeFixture(t, 0)
	f.art.SetDelay(time.Minute)
	client := f.art.Client()
	client.Timeout = 100 * time.Millisecond
	req, _ := http.NewRequest(http.MethodPost, f.art.URL()+TokenExchangePath, bytes.NewReader([]byte(`{"expires_in":1}`)))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("delayed exchange answered before the client timeout")
	}
}

// TestArtifactoryExchangeChecksCredentialScope replays each scope case through the token exchange,
// with ?region= naming the regional endpoint it was signed for: only a scope STS accepts buys a token.
func TestArtifactoryExchangeChecksCredentialScope(t *testing.T) {
	f := newExchangeFixture(t, 0)
	for _, tc := range scopeCases {
		t.Run(tc.name, func(t *testing.T) {
			suffix := TokenExchangePath
			if m := stsHostRE.FindStringSubmatch(tc.host); m[1] != "" {
				suffix += "?region=" + m[1]
			}
			status, body := f.exchange(t, suffix, signScoped(t, f.role, tc.alg, tc.host, tc.service, tc.region, f.clk.Now()), `{"expires_in": 600}`)
			if tc.wantMessage == "" {
				if status != http.StatusOK || !strings.Contains(body, `"username":"k8s-puller"`) {
					t.Fatalf("got %d %s, want a token for k8s-puller", status, body)
				}
				return
			}
			if want := "SignatureDoesNotMatch: " + tc.wantMessage; status != http.StatusUnauthorized || !strings.Contains(body, want) {
				t.Fatalf("got %d %s, want 401 naming %q", status, body, want)
			}
		})
	}
}

// TestArtifactoryRepositoriesTakeABearerAccessToken: GET Repositories
// answers an issued, unexpired access token presented as a bearer token
// with its user's repositories, and 401 otherwise (anonymous access off).
func TestArtifactoryRepositoriesTakeABearerAccessToken(t *testing.T) {
	f := newExchangeFixture(t, 3*time.Hour)
	f.art.SetRepositoryPermissions("k8s-puller", "team-a/*")
	code, body := f.exchange(t, TokenExchangePath, signGetCallerIdentity(t, f.role, "sts.amazonaws.com", "*", f.clk.Now()), `{"expires_in": 600}`)
	var tok tokenAnswer
	if code != http.StatusOK || json.Unmarshal([]byte(body), &tok) != nil {
		t.Fatalf("exchange: %d %s", code, body)
	}
	get := func(auth string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.art.URL()+RepositoriesPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := f.art.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("Bearer " + tok.AccessToken); code != http.StatusOK || !strings.Contains(body, `"key":"team-a/*"`) {
		t.Errorf("bearer token: %d %s", code, body)
	}
	for name, auth := range map[string]string{
		"no credentials": "",
		"unknown token":  "Bearer not-a-token",
		"basic auth":     "Basic " + base64.StdEncoding.EncodeToString([]byte("k8s-puller:"+tok.AccessToken)),
	} {
		if code, _ := get(auth); code != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", name, code)
		}
	}
	f.clk.Advance(11 * time.Minute)
	if code, _ := get("Bearer " + tok.AccessToken); code != http.StatusUnauthorized {
		t.Errorf("expired token: %d, want 401", code)
	}
}
