package credentials

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Tests that pin behaviour the mutation run (make mutation) found unpinned.

// A mint runs under MintTimeout (30s when unset), whoever's context it
// started from.
func TestCacheMintRunsUnderMintTimeout(t *testing.T) {
	for _, tc := range []struct {
		set, want time.Duration
	}{{0, 30 * time.Second}, {5 * time.Second, 5 * time.Second}} {
		var left time.Duration
		c := NewCache(func(ctx context.Context, _ Key) (Credential, error) {
			dl, ok := ctx.Deadline()
			if !ok {
				return Credential{}, errors.New("no deadline")
			}
			left = time.Until(dl)
			now := time.Now()
			return Credential{Token: NewToken("t"), IssuedAt: now, Expiry: now.Add(time.Hour)}, nil
		}, CacheOptions{MintTimeout: tc.set})
		if _, err := c.Get(context.Background(), cacheKey); err != nil {
			t.Fatal(err)
		}
		if left > tc.want || left < tc.want-5*time.Second {
			t.Errorf("MintTimeout %s: the mint had %s left, want about %s", tc.set, left, tc.want)
		}
	}
}

// "Refresh when less than the threshold is left": at the refresh point
// exactly the token is still fresh; a nanosecond later it is due.
func TestCacheRefreshesJustPastTheRefreshPointNotAtIt(t *testing.T) {
	c, m, clock := newTestCache(time.Hour)
	if _, err := c.Get(context.Background(), cacheKey); err != nil {
		t.Fatal(err)
	}
	clock.Advance(45 * time.Minute) // 15 min = 0.25 of the hour left: the default threshold
	if _, err := c.Get(context.Background(), cacheKey); err != nil || m.calls.Load() != 1 {
		t.Fatalf("at the refresh point: %v, mints %d; want the cached token", err, m.calls.Load())
	}
	clock.Advance(time.Nanosecond)
	if _, err := c.Get(context.Background(), cacheKey); err != nil || m.calls.Load() != 2 {
		t.Errorf("past the refresh point: %v, mints %d; want a new mint", err, m.calls.Load())
	}
}

// A fallback credential with exactly MinRemaining left is served.
func TestCacheFallsBackWithExactlyMinRemainingLeft(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := &countingMint{clock: clock, lifetime: time.Hour}
	c := NewCache(m.mint, CacheOptions{Now: clock.Now, MinRemaining: 5 * time.Minute})
	if _, err := c.Get(context.Background(), cacheKey); err != nil {
		t.Fatal(err)
	}
	m.fail.Store(true)
	clock.Advance(55 * time.Minute)
	if got, err := c.Get(context.Background(), cacheKey); err != nil || got.Token.IsZero() {
		t.Errorf("with exactly MinRemaining left: %v; want the cached token", err)
	}
}

func TestNewExchangerAcceptsAOneSecondTTL(t *testing.T) {
	f := newFakeArtifactory(t)
	e, err := NewExchanger(ExchangeOptions{Instance: "main", URL: f.URL, TTL: time.Second, Credentials: staticCreds()})
	if err != nil || e == nil || e.o.HTTPClient == nil {
		t.Errorf("TTL 1s, default HTTP client: %v, %v", e, err)
	}
}

func TestSanitizeBodyAtItsBounds(t *testing.T) {
	// Letters and digits at the ends of their ranges still read as random.
	edges := "A" + strings.Repeat("z", 30) + "0"
	if got := sanitizeBody([]byte("key " + edges)); strings.Contains(got, edges) {
		t.Errorf("a run of A, z and 0 was not redacted: %q", got)
	}
	alsoEdges := "Z" + strings.Repeat("a", 30) + "9"
	if got := sanitizeBody([]byte("key " + alsoEdges)); strings.Contains(got, alsoEdges) {
		t.Errorf("a run of Z, a and 9 was not redacted: %q", got)
	}
	// Hex of exactly 40 characters (a SHA-1) is key material.
	hex40 := strings.Repeat("0123456789", 4)
	if got := sanitizeBody([]byte("digest " + hex40)); strings.Contains(got, hex40) {
		t.Errorf("40 hex characters were not redacted: %q", got)
	}
	// A body of exactly 1 KiB is kept whole.
	exact := strings.Repeat("x ", maxErrorBody/2)
	exact = exact[:maxErrorBody-1] + "y"
	if got := sanitizeBody([]byte(exact)); got != exact {
		t.Errorf("a %d-byte body was cut to %d bytes", len(exact), len(got))
	}
	// A cut never splits a character.
	split := strings.Repeat("a ", maxErrorBody/2-1) + "a" + "é" + strings.Repeat(" b", 100) // é at bytes 1023-1024
	if got := sanitizeBody([]byte(split)); !utf8.ValidString(got) || !strings.HasSuffix(got, "…(truncated)") ||
		len(got) > maxErrorBody+len("…(truncated)") {
		t.Errorf("cut body is not valid UTF-8 ending in the mark: %q", got[len(got)-20:])
	}
}

// A CA bundle is added to the system roots, never in place of them.
func TestNewHTTPClientAddsTheBundleToTheSystemRoots(t *testing.T) {
	_, caFile := selfSignedCert(t)
	c, err := NewHTTPClient(caFile, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want, err := x509.SystemCertPool()
	if err != nil {
		t.Skipf("no system pool here: %v", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	want.AppendCertsFromPEM(pem)
	got := c.Transport.(*http.Transport).TLSClientConfig.RootCAs
	if got == nil || !got.Equal(want) {
		t.Error("the client's roots are not the system roots plus the bundle")
	}
}

// Session names keep exactly what STS allows and map the rest to '-'; a
// name of exactly 64 characters is kept whole.
func TestSessionNameCharacterClassAndLengthBounds(t *testing.T) {
	id := Identity{RoleARN: "arn:aws:iam::123456789012:role/r", Namespace: "azAZ09+=,.@_-", ServiceAccount: "`{[/:~é"}
	if got, want := SessionName(id), "apw@azAZ09+=,.@_-.-------"; got != want {
		t.Errorf("SessionName = %q, want %q", got, want)
	}
	exact := Identity{RoleARN: "arn:aws:iam::123456789012:role/r", Namespace: strings.Repeat("n", 57), ServiceAccount: "sa"}
	if got := SessionName(exact); len(got) != 64 || got != "apw@"+strings.Repeat("n", 57)+".sa" {
		t.Errorf("a 64-character session name became %q", got)
	}
}
