package credentials

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingServer records every request that reaches it and the
// security-relevant headers it carried.
type countingServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests int
	headers  []string
}

func newCountingServer(t *testing.T, tls bool) *countingServer {
	c := &countingServer{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.requests++
		for _, name := range forwardedHeaders {
			if v := r.Header.Get(name); v != "" {
				c.headers = append(c.headers, name)
			}
		}
		c.mu.Unlock()
		okResponse(testRawToken, "puller", 3600)(w, r)
	})
	if tls {
		c.Server = httptest.NewTLSServer(h)
	} else {
		c.Server = httptest.NewServer(h)
	}
	t.Cleanup(c.Close)
	return c
}

func (c *countingServer) seen() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests, append([]string(nil), c.headers...)
}

// trustBoth writes a CA bundle trusting the fake Artifactory and target, so
// that only the redirect policy (not TLS) can keep the request from target.
func trustBoth(t *testing.T, f *fakeArtifactory, target *countingServer) string {
	t.Helper()
	ca, err := os.ReadFile(f.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if target.Certificate() != nil {
		ca = append(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: target.Certificate().Raw})...)
	}
	return writeFile(t, string(ca))
}

func TestExchangeRefusesRedirectsSoTheSignedRequestReachesOnlyTheConfiguredURL(t *testing.T) {
	tests := []struct {
		name   string
		status int
		tls    bool
	}{
		{"301", http.StatusMovedPermanently, true},
		{"302", http.StatusFound, true},
		{"303", http.StatusSeeOther, true},
		{"307 keeps method and body", http.StatusTemporaryRedirect, true},
		{"308 keeps method and body", http.StatusPermanentRedirect, true},
		{"307 downgrade to plain http", http.StatusTemporaryRedirect, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := newCountingServer(t, tt.tls)
			// Credentials in the Location must not reach the error text either.
			location := strings.Replace(target.URL, "://", "://user:location-password@", 1) +
				"/elsewhere/access/api/v1/aws/token?sig=location-query-secret#frag"
			f := newFakeArtifactory(t)
			f.respond = func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, location, tt.status)
			}
			client, err := NewHTTPClient(trustBoth(t, f, target), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			e := newTestExchanger(t, f, func(o *ExchangeOptions) { o.HTTPClient = client })
			if client.CheckRedirect != nil {
				t.Error("NewExchanger changed the caller's client")
			}

			_, err = e.Exchange(context.Background())
			if n, headers := target.seen(); n != 0 {
				t.Fatalf("redirect target received %d request(s) carrying %v", n, headers)
			}
			if err == nil {
				t.Fatal("Exchange followed the redirect and succeeded")
			}
			f.mu.Lock()
			origin := f.requests
			f.mu.Unlock()
			if origin != 1 {
				t.Fatalf("configured server received %d requests, want exactly 1", origin)
			}

			var xe *ExchangeError
			if !errors.As(err, &xe) || xe.Status != tt.status {
				t.Fatalf("err = %#v, want an *ExchangeError with status %d", err, tt.status)
			}
			if got := FailureClass(err); got != "bad_response" {
				t.Errorf("FailureClass = %q, want bad_response", got)
			}
			msg := err.Error()
			for _, want := range []string{"redirect refused", target.Listener.Addr().String() + "/elsewhere/access/api/v1/aws/token",
				`instance "main"`} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
			for _, secret := range []string{"location-password", "location-query-secret", testSessionToken, testSecretKey, testRawToken} {
				if strings.Contains(msg, secret) {
					t.Errorf("error leaks %q: %s", secret, msg)
				}
			}
		})
	}
}

func TestNewExchangerRequiresHTTPS(t *testing.T) {
	for _, u := range []string{"http://artifactory.example.com", "http://127.0.0.1:8081", "http://localhost/artifactory", "ftp://a.example"} {
		_, err := NewExchanger(ExchangeOptions{Instance: "main", URL: u, TTL: time.Hour, Credentials: staticCreds()})
		if err == nil || !strings.Contains(err.Error(), "must use https") || !strings.Contains(err.Error(), u) {
			t.Errorf("NewExchanger(%q) = %v, want an error saying it must use https", u, err)
		}
	}
}

// expiresInAnswer serves a valid token whose expires_in is any JSON number.
func expiresInAnswer(expiresIn int64) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": testRawToken, "username": "puller", "expires_in": expiresIn})
	}
}

func TestExchangeBoundsExpiresInByTheAskedTTL(t *testing.T) {
	const asked = time.Hour
	tests := []struct {
		name      string
		expiresIn int64
		want      time.Duration
	}{
		{"shorter answer is honoured (token.max-expiry)", 1800, 30 * time.Minute},
		{"the asked lifetime", 3600, time.Hour},
		{"a second", 1, time.Second},
		{"zero or absent: the asked TTL", 0, asked},
		{"longer than asked is capped", 86400, asked},
		{"just past time.Duration's range in nanoseconds", math.MaxInt64/int64(time.Second) + 1, asked},
		{"wraps to a positive 290ms when multiplied", 18446744074, asked},
		{"wraps to nearly an hour when multiplied", 18446747673, asked},
		{"math.MaxInt64", math.MaxInt64, asked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeArtifactory(t)
			f.respond = expiresInAnswer(tt.expiresIn)
			e := newTestExchanger(t, f, func(o *ExchangeOptions) { o.TTL = asked })
			cred, err := e.Exchange(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got := cred.Lifetime(); got != tt.want {
				t.Fatalf("lifetime for expires_in %d = %s, want %s", tt.expiresIn, got, tt.want)
			}
		})
	}
}

func TestExchangeRejectsNegativeExpiresIn(t *testing.T) {
	for _, n := range []int64{-1, -3600, math.MinInt64} {
		f := newFakeArtifactory(t)
		f.respond = expiresInAnswer(n)
		e := newTestExchanger(t, f, nil)
		_, err := e.Exchange(context.Background())
		if err == nil || !strings.Contains(err.Error(), "expires_in") || !strings.Contains(err.Error(), "negative") {
			t.Fatalf("expires_in %d: err = %v, want it refused as negative", n, err)
		}
		if got := FailureClass(err); got != "bad_response" {
			t.Errorf("expires_in %d: FailureClass = %q, want bad_response", n, got)
		}
		if strings.Contains(err.Error(), testRawToken) {
			t.Errorf("error leaks the token: %v", err)
		}
	}
}
