package credentials

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/awssig"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
)

const (
	testAccessKey    = "ASIATESTEXCHANGEKEY1"
	testSecretKey    = "Zm9vYmFyU2VjcmV0S2V5VGhhdE11c3ROZXZlckxlYWs"
	testSessionToken = "IQoJb3JpZ2luX2VjSESSIONTOKENFORTEST"
	testRawToken     = "eyJ2ZXIiOiIyIiwidHlwIjoiSldUIn0.eyJzdWIiOiJqZmFjQDAxIn0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
)

var exchangeNow = time.Date(2026, 5, 17, 10, 30, 0, 0, time.UTC)

func testSecrets(id string) (string, string, bool) {
	if id != testAccessKey {
		return "", "", false
	}
	return testSecretKey, testSessionToken, true
}

func staticCreds() aws.CredentialsProvider {
	return awscreds.NewStaticCredentialsProvider(testAccessKey, testSecretKey, testSessionToken)
}

// fakeArtifactory is a TLS server that checks each exchange request the way
// Artifactory would (replaying the forwarded headers as a signed STS request)
// and records the plaintext of every byte it received.
type fakeArtifactory struct {
	t      *testing.T
	URL    string
	CAFile string

	// expectations for the signed STS request
	stsHost   string
	regionSet string
	region    string // expected ?region= on the Artifactory URL
	path      string
	ttl       int64

	respond func(w http.ResponseWriter, r *http.Request)

	mu       sync.Mutex
	wire     bytes.Buffer
	requests int
}

func newFakeArtifactory(t *testing.T) *fakeArtifactory {
	t.Helper()
	f := &fakeArtifactory{t: t, stsHost: "sts.amazonaws.com", regionSet: "*", path: TokenPath, ttl: 3600,
		respond: okResponse(testRawToken, "puller", 3600)}

	cert, caFile := selfSignedCert(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The recorder sits above TLS so it sees the plaintext HTTP request.
	ln := &recordingListener{Listener: tls.NewListener(inner, &tls.Config{Certificates: []tls.Certificate{cert}}), f: f}
	srv := &http.Server{Handler: http.HandlerFunc(f.serve), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	f.URL = "https://" + inner.Addr().String()
	f.CAFile = caFile
	return f
}

func (f *fakeArtifactory) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests++
	f.mu.Unlock()
	t := f.t
	if r.Method != http.MethodPost || r.URL.Path != f.path {
		t.Errorf("request %s %s, want POST %s", r.Method, r.URL.Path, f.path)
	}
	if got := r.URL.Query().Get("region"); got != f.region {
		t.Errorf("?region=%q, want %q", got, f.region)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	body, _ := io.ReadAll(r.Body)
	var req map[string]any
	if err := json.Unmarshal(body, &req); err != nil || len(req) != 1 || req["expires_in"] != float64(f.ttl) {
		t.Errorf("body = %s, want {\"expires_in\": %d}", body, f.ttl)
	}

	allowed := map[string]bool{"Authorization": true, "X-Amz-Date": true, "X-Amz-Security-Token": true,
		"X-Amz-Region-Set": true, "Content-Type": true, "Content-Length": true, "Accept": true,
		"Accept-Encoding": true, "User-Agent": true}
	for name := range r.Header {
		if !allowed[name] {
			t.Errorf("unexpected header %s forwarded", name)
		}
	}
	for _, name := range forwardedHeaders {
		if r.Header.Get(name) == "" {
			t.Errorf("header %s not forwarded", name)
		}
	}
	if got := r.Header.Get("X-Amz-Region-Set"); got != f.regionSet {
		t.Errorf("X-Amz-Region-Set = %q, want %q", got, f.regionSet)
	}

	// Replay as Artifactory does: the STS request with the forwarded headers.
	sts, _ := http.NewRequest(http.MethodGet, "https://"+f.stsHost+"/?Action=GetCallerIdentity&Version=2011-06-15", nil)
	sts.Host = f.stsHost
	for _, name := range forwardedHeaders {
		if v := r.Header.Get(name); v != "" {
			sts.Header.Set(name, v)
		}
	}
	// Artifactory replays to the ?region= endpoint, else the global one (us-east-1).
	want := awssig.Expect{Service: "sts", Region: "us-east-1"}
	if f.region != "" {
		want.Region = f.region
	}
	if id, err := awssig.Verify(sts, nil, want, testSecrets, exchangeNow, 5*time.Minute); err != nil || id != testAccessKey {
		t.Errorf("forwarded signature does not verify for host %s: %v", f.stsHost, err)
	}
	f.respond(w, r)
}

func okResponse(token, username string, expiresIn int) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"token_id": "tid", "access_token": token, "scope": "applied-permissions/user",
			"token_type": "Bearer", "expires_in": expiresIn, "username": username,
		})
	}
}

func status(code int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

type recordingListener struct {
	net.Listener
	f *fakeArtifactory
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, f: l.f}, nil
}

type recordingConn struct {
	net.Conn
	f *fakeArtifactory
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.f.mu.Lock()
	c.f.wire.Write(p[:n])
	c.f.mu.Unlock()
	return n, err
}

func (f *fakeArtifactory) received() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wire.String()
}

func selfSignedCert(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fake-artifactory"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, caFile
}

func newTestExchanger(t *testing.T, f *fakeArtifactory, mod func(*ExchangeOptions)) *Exchanger {
	t.Helper()
	client, err := NewHTTPClient(f.CAFile, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	o := ExchangeOptions{
		Instance: "main", URL: f.URL, TTL: time.Hour, HTTPClient: client,
		Credentials: staticCreds(), Now: func() time.Time { return exchangeNow },
	}
	if mod != nil {
		mod(&o)
	}
	e, err := NewExchanger(o)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestExchangeForwardsVerifiableSignatureAndNeverTheSecretKey(t *testing.T) {
	tests := []struct {
		name      string
		url       func(base string) string
		region    string
		endpoint  string
		stsHost   string
		regionSet string
		path      string
	}{
		{name: "global sigv4a", stsHost: "sts.amazonaws.com", regionSet: "*"},
		{name: "regional aws", region: "eu-central-1", stsHost: "sts.eu-central-1.amazonaws.com", regionSet: "eu-central-1"},
		{name: "regional aws-cn", region: "cn-north-1", stsHost: "sts.cn-north-1.amazonaws.com.cn", regionSet: "cn-north-1"},
		{name: "regional aws-us-gov", region: "us-gov-west-1", stsHost: "sts.us-gov-west-1.amazonaws.com", regionSet: "us-gov-west-1"},
		{name: "sts endpoint override", endpoint: "http://127.0.0.1:1234", stsHost: "127.0.0.1:1234", regionSet: "*"},
		{name: "path prefix and trailing slash", url: func(b string) string { return b + "/artifactory/" },
			stsHost: "sts.amazonaws.com", regionSet: "*", path: "/artifactory" + TokenPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeArtifactory(t)
			f.stsHost, f.regionSet, f.region = tt.stsHost, tt.regionSet, tt.region
			if tt.path != "" {
				f.path = tt.path
			}
			e := newTestExchanger(t, f, func(o *ExchangeOptions) {
				o.Region, o.STSEndpoint = tt.region, tt.endpoint
				if tt.url != nil {
					o.URL = tt.url(o.URL)
				}
			})
			cred, err := e.Exchange(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if cred.Username != "puller" || cred.Token.Reveal() != testRawToken {
				t.Fatalf("credential = %s/%s, want puller and the served token", cred.Username, cred.Token)
			}
			if !cred.IssuedAt.Equal(exchangeNow) || !cred.Expiry.Equal(exchangeNow.Add(time.Hour)) {
				t.Fatalf("issued %s expiry %s, want now and now+1h", cred.IssuedAt, cred.Expiry)
			}

			wire := f.received()
			if !strings.Contains(wire, "POST ") || !strings.Contains(wire, testSessionToken) {
				t.Fatal("recorder did not capture the plaintext request")
			}
			for _, enc := range []string{
				testSecretKey,
				base64.StdEncoding.EncodeToString([]byte(testSecretKey)),
				base64.RawURLEncoding.EncodeToString([]byte(testSecretKey)),
				hex.EncodeToString([]byte(testSecretKey)),
				strings.ToUpper(hex.EncodeToString([]byte(testSecretKey))),
			} {
				if strings.Contains(wire, enc) {
					t.Fatalf("the AWS secret access key (or an encoding of it) was sent on the wire")
				}
			}
		})
	}
}

func TestExchangeUsesTTLWhenResponseHasNoExpiresIn(t *testing.T) {
	f := newFakeArtifactory(t)
	f.ttl = 7200
	f.respond = okResponse(testRawToken, "puller", 0)
	e := newTestExchanger(t, f, func(o *ExchangeOptions) { o.TTL = 2 * time.Hour })
	cred, err := e.Exchange(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !cred.Expiry.Equal(exchangeNow.Add(2 * time.Hour)) {
		t.Fatalf("expiry = %s, want now+TTL", cred.Expiry)
	}
}

// Artifactory caps expires_in at its token.max-expiry and says so in the
// answer: the granted lifetime, not the asked one, is the token's.
func TestExchangeTakesTheGrantedLifetimeWhenArtifactoryGrantsLess(t *testing.T) {
	f := newFakeArtifactory(t)
	f.ttl = 7200
	f.respond = okResponse(testRawToken, "puller", 1200)
	e := newTestExchanger(t, f, func(o *ExchangeOptions) { o.TTL = 2 * time.Hour })
	cred, err := e.Exchange(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !cred.Expiry.Equal(exchangeNow.Add(20*time.Minute)) || cred.Lifetime() != 20*time.Minute {
		t.Fatalf("expiry = %s (lifetime %s), want now+20m as granted", cred.Expiry, cred.Lifetime())
	}
}

func TestExchangeFailuresAreClassifiedAndExplained(t *testing.T) {
	const reason = "No user is mapped to IAM role arn:aws:iam::123456789012:role/puller"
	leaky := fmt.Sprintf(`{"errors":[{"status":401,"message":%q}],"access_token":"reftkn:01:1234567890:AbCdEf","debug":"%s"}`,
		reason, testRawToken)
	tests := []struct {
		name      string
		respond   func(http.ResponseWriter, *http.Request)
		timeout   time.Duration
		creds     aws.CredentialsProvider
		slow      bool // the handler answers only after the test ends
		wantClass string
		want      []string
	}{
		{name: "401 keeps the reason, drops tokens", respond: status(401, leaky), wantClass: "unauthorized",
			want: []string{"HTTP 401", reason}},
		{name: "403", respond: status(403, `{"errors":[{"message":"expires_in above admin limit"}]}`), wantClass: "forbidden",
			want: []string{"HTTP 403", "above admin limit"}},
		{name: "400", respond: status(400, "bad expires_in"), wantClass: "bad_request", want: []string{"HTTP 400", "bad expires_in"}},
		{name: "500", respond: status(500, "internal error"), wantClass: "server_error", want: []string{"HTTP 500", "internal error"}},
		{name: "garbage json", respond: status(200, "<html>login</html>"), wantClass: "bad_response",
			want: []string{"not token JSON", "<html>login</html>"}},
		{name: "no access_token", respond: okResponse("", "puller", 3600), wantClass: "bad_response", want: []string{"no access_token"}},
		{name: "empty username", respond: okResponse(testRawToken, "", 3600), wantClass: "bad_response", want: []string{`username ""`}},
		{name: "anonymous username", respond: okResponse(testRawToken, "anonymous", 3600), wantClass: "bad_response",
			want: []string{`username "anonymous"`}},
		{name: "anonymous username in another case", respond: okResponse(testRawToken, "Anonymous", 3600), wantClass: "bad_response",
			want: []string{`username "Anonymous"`}},
		{name: "timeout", timeout: 200 * time.Millisecond, wantClass: "timeout",
			slow: true},
		{name: "credentials", creds: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{}, errors.New("no IMDS")
		}), wantClass: "credentials", want: []string{"AWS credentials could not be retrieved", "no IMDS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeArtifactory(t)
			f.respond = tt.respond
			if tt.slow {
				stop := make(chan struct{})
				t.Cleanup(func() { close(stop) }) // runs before the server closes
				f.respond = func(http.ResponseWriter, *http.Request) { <-stop }
			}
			reg := prometheus.NewRegistry()
			e := newTestExchanger(t, f, func(o *ExchangeOptions) {
				o.Metrics = metrics.New(reg)
				if tt.timeout != 0 {
					o.HTTPClient.Timeout = tt.timeout
				}
				if tt.creds != nil {
					o.Credentials = tt.creds
				}
			})
			_, err := e.Exchange(context.Background())
			if err == nil {
				t.Fatal("Exchange succeeded")
			}
			var xe *ExchangeError
			if !errors.As(err, &xe) {
				t.Fatalf("error %T is not an *ExchangeError", err)
			}
			if got := FailureClass(err); got != tt.wantClass {
				t.Fatalf("FailureClass = %q, want %q (err: %v)", got, tt.wantClass, err)
			}
			msg := err.Error()
			for _, w := range append(tt.want, "main", strings.TrimPrefix(f.URL, "https://")) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			for _, secret := range []string{testRawToken, "reftkn:01:1234567890:AbCdEf", testSecretKey, testSessionToken} {
				if strings.Contains(msg, secret) {
					t.Errorf("error leaks %q: %s", secret, msg)
				}
			}
			if got := counterValue(t, reg, "artifactory_pull_token_exchanges_total", "main", tt.wantClass); got != 1 {
				t.Errorf("exchanges{result=%s} = %v, want 1", tt.wantClass, got)
			}
		})
	}
}

func TestExchangeTransportFailureIsClassified(t *testing.T) {
	f := newFakeArtifactory(t)
	e := newTestExchanger(t, f, func(o *ExchangeOptions) { o.URL = "https://127.0.0.1:1" })
	_, err := e.Exchange(context.Background())
	if got := FailureClass(err); got != "transport" {
		t.Fatalf("FailureClass = %q, want transport (err: %v)", got, err)
	}
}

func TestExchangeSuccessRecordsMetrics(t *testing.T) {
	f := newFakeArtifactory(t)
	reg := prometheus.NewRegistry()
	e := newTestExchanger(t, f, func(o *ExchangeOptions) { o.Metrics = metrics.New(reg) })
	if _, err := e.Exchange(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, reg, "artifactory_pull_token_exchanges_total", "main", "success"); got != 1 {
		t.Fatalf("exchanges{result=success} = %v, want 1", got)
	}
}

func TestExchangeErrorBodyIsTruncatedTo1KiB(t *testing.T) {
	f := newFakeArtifactory(t)
	f.respond = status(401, strings.Repeat("mapping missing ", 500))
	e := newTestExchanger(t, f, nil)
	_, err := e.Exchange(context.Background())
	var xe *ExchangeError
	if !errors.As(err, &xe) {
		t.Fatal(err)
	}
	if len(xe.Body) > 1024+len("…(truncated)") || !strings.HasSuffix(xe.Body, "(truncated)") {
		t.Fatalf("body of %d bytes not truncated to 1 KiB", len(xe.Body))
	}
}

func TestSanitizeBodyRedactsTokenLikeStrings(t *testing.T) {
	tests := []struct{ in, leak, keep string }{
		{`{"access_token":"short-but-secret"}`, "short-but-secret", `"access_token":"[redacted]"`},
		{"token " + testRawToken + " rejected", testRawToken, "rejected"},
		{"key cmVmdGtuOjAxOjE3MzQ1Njc4OTA6QWJDZEVmR2hJaktsTW5PcA== bad", "cmVmdGtuOjAxOjE3MzQ1Njc4OTA6QWJDZEVmR2hJaktsTW5PcA", "bad"},
		{"sha " + strings.Repeat("ab12", 16), strings.Repeat("ab12", 16), "sha"},
		{"role arn:aws:iam::123456789012:role/artifactory-pull-webhook-role not mapped", "",
			"arn:aws:iam::123456789012:role/artifactory-pull-webhook-role"},
	}
	for _, tt := range tests {
		got := sanitizeBody([]byte(tt.in))
		if tt.leak != "" && strings.Contains(got, tt.leak) {
			t.Errorf("sanitizeBody(%q) = %q leaks %q", tt.in, got, tt.leak)
		}
		if !strings.Contains(got, tt.keep) {
			t.Errorf("sanitizeBody(%q) = %q lost %q", tt.in, got, tt.keep)
		}
	}
}

func TestNewExchangerRejectsBadOptions(t *testing.T) {
	ok := ExchangeOptions{Instance: "main", URL: "https://a.jfrog.io", TTL: time.Hour, Credentials: staticCreds()}
	tests := []struct {
		name string
		mod  func(*ExchangeOptions)
		want string
	}{
		{"no credentials", func(o *ExchangeOptions) { o.Credentials = nil }, "credentials provider is required"},
		{"zero ttl", func(o *ExchangeOptions) { o.TTL = 0 }, "TTL"},
		{"relative url", func(o *ExchangeOptions) { o.URL = "a.jfrog.io" }, "not an absolute"},
		{"plain http", func(o *ExchangeOptions) { o.URL = "http://a.jfrog.io" }, "must use https"},
		{"bad region", func(o *ExchangeOptions) { o.Region = "evil.example/x" }, "not an AWS region"},
		{"bad sts endpoint", func(o *ExchangeOptions) { o.STSEndpoint = "127.0.0.1" }, "STS endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.mod(&o)
			if _, err := NewExchanger(o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestNewHTTPClientNamesCABundleWithoutCertificates(t *testing.T) {
	p := writeFile(t, "not a certificate")
	_, err := NewHTTPClient(p, time.Second)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want it to name %s", err, p)
	}
}

func TestNewHTTPClientWithoutBundleDoesNotTrustSelfSigned(t *testing.T) {
	f := newFakeArtifactory(t)
	client, err := NewHTTPClient("", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	e := newTestExchanger(t, f, func(o *ExchangeOptions) { o.HTTPClient = client })
	if _, err := e.Exchange(context.Background()); err == nil {
		t.Fatal("exchange trusted a certificate outside the system pool")
	}
}

func TestCredentialNeverPrintsToken(t *testing.T) {
	c := Credential{Username: "puller", Token: NewToken(testRawToken), IssuedAt: exchangeNow, Expiry: exchangeNow.Add(time.Hour)}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%s", c), fmt.Sprintf("%#v", c), string(js)} {
		if strings.Contains(out, testRawToken) {
			t.Fatalf("raw token printed: %s", out)
		}
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name, instance, result string) float64 {
	t.Helper()
	labels := map[string]string{"instance": instance}
	if result != "" {
		labels["result"] = result
	}
	if m := findMetric(t, reg, name, labels); m != nil {
		return m.GetCounter().GetValue()
	}
	return 0
}

// findMetric is the sample of name in reg whose labels include labels.
func findMetric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue samples
				}
			}
			return m
		}
	}
	return nil
}

func hasMetric(t *testing.T, reg *prometheus.Registry, name string) bool {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return true
		}
	}
	return false
}
