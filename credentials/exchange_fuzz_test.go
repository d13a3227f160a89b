package credentials

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// answer is a RoundTripper that returns one canned Artifactory answer
// without a network: the fuzzer then runs the parser at memory speed.
type answer struct {
	status int
	body   []byte
}

func (a *answer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
	return &http.Response{StatusCode: a.status, Status: http.StatusText(a.status), Header: http.Header{},
		Body: io.NopCloser(bytes.NewReader(a.body)), Request: r}, nil
}

// fuzzToken is what a real access token looks like (the emulator issues 64
// characters of base64url); the fuzzer places it anywhere in a body.
const fuzzToken = "Qm9ndXNUb2tlbi1mdXp6LTAxMjM0NTY3ODlhYmNkZWZnaGlqa2xtbm9wcXJzdHV2"

// FuzzExchangeResponse runs Exchange against arbitrary Artifactory answers
// (any status, any body, optionally with a token spliced into it). A success
// must carry a real user and token and a future expiry; a failure must be
// classified, and its text must hold neither the token nor the AWS secret
// key or session token, and stay short whatever the body's size.
func FuzzExchangeResponse(f *testing.F) {
	ok := func(token, user string, expiresIn any) []byte {
		b, _ := json.Marshal(map[string]any{"token_id": "id", "access_token": token, "scope": "applied-permissions/user",
			"token_type": "Bearer", "expires_in": expiresIn, "username": user})
		return b
	}
	for _, s := range []struct {
		status int
		prefix []byte
		suffix string
	}{
		{200, ok(fuzzToken, "k8s-puller", 3600), ""},
		{200, ok(fuzzToken, "anonymous", 3600), ""},
		{200, ok(fuzzToken, "", 3600), ""},
		{200, ok("", "k8s-puller", 3600), ""},
		{200, ok(fuzzToken, "k8s-puller", -5), ""},
		{200, ok(fuzzToken, "k8s-puller", "3600"), ""},
		{200, ok(fuzzToken, "k8s-puller", 1e300), ""},
		{200, []byte(`<html>login</html>`), ""},
		{401, []byte(`{"errors":[{"status":401,"message":"no user is mapped to IAM role arn:aws:iam::123456789012:role/p","access_token":"`), `"}]}`},
		{403, []byte(`{"errors":[{"message":"expires_in above admin limit"}]}`), ""},
		{500, []byte("internal error \xff\xfe"), ""},
		{302, nil, ""},
		{200, []byte(`{"access_token":`), `,"username":"u"}`},
		{204, []byte(strings.Repeat("a", 4096)), ""},
	} {
		f.Add(s.status, s.prefix, s.suffix, false)
		f.Add(s.status, s.prefix, s.suffix, true)
	}
	now := time.Date(2026, 5, 17, 10, 30, 0, 0, time.UTC)
	rt := &answer{}
	ex, err := NewExchanger(ExchangeOptions{Instance: "fuzz", URL: "https://artifactory.example.com", TTL: time.Hour,
		HTTPClient: &http.Client{Transport: rt}, Credentials: staticCreds(), Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, status int, prefix []byte, suffix string, withToken bool) {
		if status < 100 || status > 999 {
			return // not an HTTP status line net/http could deliver
		}
		rt.status, rt.body = status, append([]byte(nil), prefix...)
		if withToken {
			rt.body = append(rt.body, fuzzToken...)
		}
		rt.body = append(rt.body, suffix...)

		cred, err := ex.Exchange(context.Background())
		if err == nil {
			switch {
			case status < 200 || status > 299:
				t.Fatalf("HTTP %d accepted as a token", status)
			case cred.Token.IsZero():
				t.Fatal("success without a token")
			case cred.Username == "" || strings.EqualFold(cred.Username, "anonymous"):
				t.Fatalf("success for username %q", cred.Username)
			case !cred.Expiry.After(cred.IssuedAt):
				t.Fatalf("token expires %s, not after it was issued %s", cred.Expiry, cred.IssuedAt)
			}
			return
		}
		if class := FailureClass(err); class == "" || class == "success" {
			t.Fatalf("failure classified %q", class)
		}
		msg := err.Error()
		for _, secret := range []string{fuzzToken, testSecretKey, testSessionToken} {
			if strings.Contains(msg, secret) {
				t.Fatalf("error text leaks a secret: %s", msg)
			}
		}
		if len(msg) > 2*maxErrorBody {
			t.Fatalf("error text is %d bytes, want it bounded near %d", len(msg), maxErrorBody)
		}
	})
}
