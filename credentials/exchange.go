package credentials

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	httpauthcreds "github.com/aws/smithy-go/aws-http-auth/credentials"
	"github.com/aws/smithy-go/aws-http-auth/sigv4a"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
)

// TokenPath is Artifactory's AWS token exchange endpoint. It must be exactly
// this: a trailing slash has been seen to yield an anonymous token.
const TokenPath = "/access/api/v1/aws/token"

const (
	getCallerIdentityQuery = "Action=GetCallerIdentity&Version=2011-06-15"
	globalSTSEndpoint      = "https://sts.amazonaws.com"
	defaultExchangeTimeout = 30 * time.Second
	maxErrorBody           = 1 << 10
	maxReadBody            = 1 << 20
)

// forwardedHeaders are the signed request's headers Artifactory needs to
// replay it to STS; nothing else of it (and never the secret key) is sent.
var forwardedHeaders = [...]string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Region-Set"}

var regionPattern = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

// ValidRegion reports whether region is shaped like an AWS region name
// (eu-west-1, us-gov-west-1, cn-north-1), as ExchangeOptions.Region must be.
func ValidRegion(region string) bool { return regionPattern.MatchString(region) }

// ExchangeOptions configures an Exchanger.
type ExchangeOptions struct {
	// Instance is the configured instance name (metrics label, error text).
	Instance string
	// URL is the Artifactory base URL, possibly with a path prefix; https.
	URL string
	// Region, when set, signs for that region's STS endpoint with region set
	// <Region> and adds ?region= to the Artifactory URL. Empty signs SigV4A
	// for all regions ("*") against the global endpoint.
	Region string
	// STSEndpoint overrides the scheme and host of the signed STS URL.
	STSEndpoint string
	// TTL is the token lifetime asked for (expires_in); whole seconds.
	TTL time.Duration
	// HTTPClient reaches Artifactory; NewHTTPClient("", 30s) when nil. The
	// Exchanger uses a copy that refuses redirects.
	HTTPClient *http.Client
	// Credentials signs the request.
	Credentials aws.CredentialsProvider
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Metrics records exchanges; nil records nothing.
	Metrics *metrics.Metrics
}

// Exchanger trades the process's AWS identity for Artifactory tokens of one
// instance. It is safe for concurrent use.
type Exchanger struct {
	o         ExchangeOptions
	tokenURL  string
	stsURL    string
	regionSet string
	signer    *sigv4a.Signer
}

// NewExchanger validates o and builds an Exchanger.
func NewExchanger(o ExchangeOptions) (*Exchanger, error) {
	if o.Credentials == nil {
		return nil, fmt.Errorf("instance %q: AWS credentials provider is required", o.Instance)
	}
	if o.TTL < time.Second {
		return nil, fmt.Errorf("instance %q: token TTL %s is shorter than one second", o.Instance, o.TTL)
	}
	base, err := url.Parse(strings.TrimRight(o.URL, "/"))
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("instance %q: Artifactory URL %q is not an absolute https URL", o.Instance, o.URL)
	}
	if base.Scheme != "https" {
		// The request carries the session token and yields an access token.
		return nil, fmt.Errorf("instance %q: Artifactory URL %q must use https: the exchange carries AWS session credentials and an access token", o.Instance, o.URL)
	}
	base.Path += TokenPath
	base.RawPath = ""

	sts, err := url.Parse(globalSTSEndpoint)
	if err != nil {
		return nil, err
	}
	regionSet := "*"
	if o.Region != "" {
		if !regionPattern.MatchString(o.Region) {
			return nil, fmt.Errorf("instance %q: %q is not an AWS region", o.Instance, o.Region)
		}
		sts.Host = regionalSTSHost(o.Region)
		regionSet = o.Region
		base.RawQuery = url.Values{"region": {o.Region}}.Encode()
	}
	if o.STSEndpoint != "" {
		override, err := url.Parse(o.STSEndpoint)
		if err != nil || override.Scheme == "" || override.Host == "" {
			return nil, fmt.Errorf("instance %q: STS endpoint %q is not scheme://host[:port]", o.Instance, o.STSEndpoint)
		}
		sts.Scheme, sts.Host = override.Scheme, override.Host
	}
	sts.Path = "/"
	sts.RawQuery = getCallerIdentityQuery

	if o.HTTPClient, err = noRedirects(o.HTTPClient); err != nil {
		return nil, err
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Exchanger{
		o:         o,
		tokenURL:  base.String(),
		stsURL:    sts.String(),
		regionSet: regionSet,
		signer:    sigv4a.New(),
	}, nil
}

// errRedirect marks a refused redirect of the exchange.
var errRedirect = errors.New("redirect refused")

// noRedirects is a copy of hc (NewHTTPClient's default when nil) that
// refuses redirects: the caller's client keeps its own policy.
func noRedirects(hc *http.Client) (*http.Client, error) {
	if hc == nil {
		var err error
		if hc, err = NewHTTPClient("", defaultExchangeTimeout); err != nil {
			return nil, err
		}
	}
	client := *hc
	client.CheckRedirect = refuseRedirect
	return &client, nil
}

// refuseRedirect is the exchange client's CheckRedirect. Following would
// replay the signed headers, session token included, to a URL nobody
// configured (for a 307/308 with the body; http.Client drops only
// Authorization across hosts) and might downgrade to plain http. The 3xx
// status is reported by the ExchangeError, not here.
func refuseRedirect(req *http.Request, _ []*http.Request) error {
	return fmt.Errorf("%w: Artifactory redirected to %s; the signed request is sent only to the configured URL "+
		"(set the instance's url to the final address if it is trusted)", errRedirect, redactURL(req.URL))
}

// redactURL is u without userinfo, query or fragment, where credentials
// could hide.
func redactURL(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// regionalSTSHost is the STS host of a region's partition.
func regionalSTSHost(region string) string {
	if strings.HasPrefix(region, "cn-") {
		return "sts." + region + ".amazonaws.com.cn"
	}
	return "sts." + region + ".amazonaws.com" // aws and aws-us-gov
}

// tokenResponse is Artifactory's answer. It never leaves exchange: the token
// is wrapped in a Token at once.
type tokenResponse struct {
	TokenID     string `json:"token_id"`
	AccessToken string `json:"access_token"`
	Scope       string `json:"scope"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Username    string `json:"username"`
}

// Exchange signs sts:GetCallerIdentity with the current AWS credentials and
// posts its headers to Artifactory for a token.
func (e *Exchanger) Exchange(ctx context.Context) (Credential, error) {
	return e.ExchangeWith(ctx, e.o.Credentials)
}

// ExchangeWith is Exchange signing with creds instead: the credentials of
// another Identity, such as a ServiceAccount's role (RoleCredentials).
func (e *Exchanger) ExchangeWith(ctx context.Context, creds aws.CredentialsProvider) (Credential, error) {
	cred, err := e.exchange(ctx, creds)
	if err != nil {
		e.o.Metrics.Exchange(e.o.Instance, ExchangeAWS, FailureClass(err))
		return Credential{}, err
	}
	e.o.Metrics.Exchange(e.o.Instance, ExchangeAWS, "success")
	return cred, nil
}

func (e *Exchanger) exchange(ctx context.Context, provider aws.CredentialsProvider) (Credential, error) {
	host := hostOf(e.tokenURL)
	fail := func(status int, body []byte, reason string, err error) *ExchangeError {
		return &ExchangeError{Instance: e.o.Instance, Host: host, Status: status,
			Body: sanitizeBody(body), Reason: reason, Err: err,
			Exchange: ExchangeAWS, Region: e.o.Region, TTL: e.o.TTL, Timeout: e.o.HTTPClient.Timeout}
	}

	creds, err := provider.Retrieve(ctx)
	if err != nil {
		return Credential{}, fail(0, nil, "", fmt.Errorf("%w: %w", errCredentials, err))
	}
	signed, err := e.sign(ctx, creds)
	if err != nil {
		return Credential{}, fail(0, nil, "sign sts:GetCallerIdentity", err)
	}

	payload, err := json.Marshal(map[string]int64{"expires_in": int64(e.o.TTL / time.Second)})
	if err != nil {
		return Credential{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.tokenURL, bytes.NewReader(payload))
	if err != nil {
		return Credential{}, fail(0, nil, "build request", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	for _, h := range forwardedHeaders {
		if v := signed.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}

	return post(e.o.HTTPClient, req, e.o.Now, e.o.TTL, TokenPath, fail)
}

// post sends an exchange request and reads its answer: a token for a
// mapped user, living at most ttl. fail builds the error of each failure
// (the instance, host and Artifactory's reason, redacted).
func post(hc *http.Client, req *http.Request, clock func() time.Time, ttl time.Duration, path string,
	fail func(status int, body []byte, reason string, err error) *ExchangeError) (Credential, error) {
	now := clock()
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, errRedirect) {
			// Do returns the 3xx response, its body closed, beside a url.Error
			// naming the raw Location; refuseRedirect's error names it redacted.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return Credential{}, fail(statusOf(resp), nil, "POST "+path, err)
		}
		return Credential{}, fail(0, nil, "POST "+path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReadBody))
	if err != nil {
		return Credential{}, fail(resp.StatusCode, nil, "read response", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return Credential{}, fail(resp.StatusCode, body, "Artifactory refused the exchange", nil)
	}

	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		return Credential{}, fail(resp.StatusCode, body, "response is not token JSON", err)
	}
	switch {
	case tr.AccessToken == "":
		return Credential{}, fail(resp.StatusCode, body, "response has no access_token", nil)
	case tr.Username == "" || strings.EqualFold(tr.Username, "anonymous"):
		// An anonymous token would make pulls fail later, far from the cause.
		return Credential{}, fail(resp.StatusCode, body, fmt.Sprintf("response username %q is not a mapped user", tr.Username), nil)
	}
	lifetime, err := lifetime(ttl, tr.ExpiresIn)
	if err != nil {
		return Credential{}, fail(resp.StatusCode, body, "", err)
	}
	return Credential{Username: tr.Username, Token: NewToken(tr.AccessToken), IssuedAt: now, Expiry: now.Add(lifetime)}, nil
}

// lifetime turns the response's expires_in into a lifetime no longer than
// ttl, the one asked for. Artifactory only ever shortens expires_in (its
// token.max-expiry), so a longer answer is kept within the configured TTL —
// the operator's bound on how long one token is used — and comparing in
// seconds first keeps a huge value from overflowing time.Duration. Zero or
// absent (a token without expiry) also gets the TTL; a negative value is a
// broken answer and fails.
func lifetime(ttl time.Duration, expiresIn int64) (time.Duration, error) {
	asked := int64(ttl / time.Second)
	switch {
	case expiresIn < 0:
		return 0, fmt.Errorf("response expires_in %d is negative", expiresIn)
	case expiresIn == 0 || expiresIn >= asked:
		return time.Duration(asked) * time.Second, nil
	default:
		return time.Duration(expiresIn) * time.Second, nil
	}
}

// sign returns the headers of a SigV4A-signed sts:GetCallerIdentity request.
func (e *Exchanger) sign(ctx context.Context, creds aws.Credentials) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.stsURL, nil)
	if err != nil {
		return nil, err
	}
	empty := sha256.Sum256(nil)
	err = e.signer.SignRequest(&sigv4a.SignRequestInput{
		Request:     req,
		PayloadHash: empty[:],
		Credentials: httpauthcreds.Credentials{
			AccessKeyID:     creds.AccessKeyID,
			SecretAccessKey: creds.SecretAccessKey,
			SessionToken:    creds.SessionToken,
			Expires:         creds.Expires,
		},
		Service:   "sts",
		RegionSet: []string{e.regionSet},
		Time:      e.o.Now(),
	})
	if err != nil {
		return nil, err
	}
	return req.Header, nil
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

func hostOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return u.Host
}

var errCredentials = errors.New("AWS credentials could not be retrieved")

// ExchangeError is a failed exchange. Body is the server's answer, truncated
// to 1 KiB with token-like strings redacted, so that the reason Artifactory
// gives (a missing role mapping, a partition mismatch) reaches the operator.
type ExchangeError struct {
	Instance string
	Host     string
	Status   int // 0 when no HTTP answer was received
	Body     string
	Reason   string
	Err      error // underlying cause, if any

	// What the exchange asked, for Explain: the exchange (ExchangeAWS or
	// ExchangeOIDC), the region signed for ("" global), the token
	// lifetime asked and the HTTP timeout.
	Exchange string
	Region   string
	TTL      time.Duration
	Timeout  time.Duration
}

func (e *ExchangeError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "token exchange for instance %q with %s", e.Instance, e.Host)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Reason != "" {
		b.WriteString(": " + e.Reason)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	if e.Body != "" {
		b.WriteString(": body: " + e.Body)
	}
	return b.String()
}

func (e *ExchangeError) Unwrap() error { return e.Err }

// FailureClass maps an Exchange error to a bounded metrics label:
// unauthorized, forbidden, bad_request, server_error, bad_response, timeout,
// transport or credentials.
func FailureClass(err error) string {
	var xe *ExchangeError
	status := 0
	if errors.As(err, &xe) {
		status = xe.Status
	}
	switch {
	case errors.Is(err, errCredentials), errors.Is(err, errSubjectToken):
		return "credentials"
	case isTimeout(err): // before status: a body read can time out after a 200
		return "timeout"
	case status == http.StatusUnauthorized:
		return "unauthorized"
	case status == http.StatusForbidden:
		return "forbidden"
	case status >= 400 && status < 500:
		return "bad_request"
	case status >= 500:
		return "server_error"
	case status != 0:
		return "bad_response"
	default:
		return "transport"
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

var (
	jwtPattern        = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.?[A-Za-z0-9_-]*`)
	secretKVPattern   = regexp.MustCompile(`("(?:access_token|refresh_token|token|id_token|password|secret[A-Za-z_]*)"\s*:\s*)"[^"]*"`)
	longRunPattern    = regexp.MustCompile(`[A-Za-z0-9+/_=-]{32,}`)
	hexOnlyPattern    = regexp.MustCompile(`^[0-9a-fA-F]+$`)
	whitespacePattern = regexp.MustCompile(`\s+`)
)

// looksRandom reports whether a long run reads like key material: random
// tokens mix cases and digits (or are long hex), while role names and ARNs in
// an error explanation rarely do and must stay readable.
func looksRandom(run string) bool {
	has := func(lo, hi rune) bool {
		return strings.ContainsFunc(run, func(r rune) bool { return lo <= r && r <= hi })
	}
	return (has('A', 'Z') && has('a', 'z') && has('0', '9')) || (len(run) >= 40 && hexOnlyPattern.MatchString(run))
}

// sanitizeBody redacts token-like strings, then truncates to 1 KiB: redacting
// first so that a cut cannot split a secret out of its pattern.
func sanitizeBody(body []byte) string {
	s := strings.ToValidUTF8(string(body), "?")
	s = secretKVPattern.ReplaceAllString(s, `$1"`+redacted+`"`)
	s = jwtPattern.ReplaceAllString(s, redacted)
	s = longRunPattern.ReplaceAllStringFunc(s, func(run string) string {
		if looksRandom(run) {
			return redacted
		}
		return run
	})
	s = strings.TrimSpace(whitespacePattern.ReplaceAllString(s, " "))
	if len(s) > maxErrorBody {
		cut := maxErrorBody
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…(truncated)"
	}
	return s
}

// NewHTTPClient returns a client with the given timeout that honours the
// proxy environment, requires TLS 1.2+ and trusts the system roots plus the
// certificates in caBundlePEMFile when it is set.
func NewHTTPClient(caBundlePEMFile string, timeout time.Duration) (*http.Client, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if caBundlePEMFile != "" {
		pem, err := os.ReadFile(caBundlePEMFile)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s holds no PEM certificates", caBundlePEMFile)
		}
		tlsConfig.RootCAs = pool
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = http.ProxyFromEnvironment
	transport.TLSClientConfig = tlsConfig
	return &http.Client{Transport: transport, Timeout: timeout}, nil
}
