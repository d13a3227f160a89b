package emulator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/awssig"
)

const (
	stsVersion    = "2011-06-15"
	stsNamespace  = "https://sts.amazonaws.com/doc/2011-06-15/"
	stsAudience   = "sts.amazonaws.com"
	maxClockSkew  = 5 * time.Minute
	amzDateLayout = "20060102T150405Z"
)

var (
	// stsHostRE is an STS endpoint host: global, regional, or a China region's.
	stsHostRE         = regexp.MustCompile(`^sts(?:\.([a-z0-9-]+))?\.amazonaws\.com(?:\.cn)?$`)
	roleSessionNameRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	roleARNRE         = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})$`)
	roleSessionCharRE = regexp.MustCompile(`^[\w+=,.@-]*$`)
	externalIDCharRE  = regexp.MustCompile(`^[\w+=,.@:/-]*$`)
)

// DurationSeconds bounds, in seconds. STS caps a session assumed with another role's session
// credentials (role chaining) at one hour, whatever the target role's MaxSessionDuration.
const (
	minSessionSeconds     = 900
	maxSessionSeconds     = 43200
	maxChainedSessionSecs = 3600
)

// STSOptions configures the STS emulator.
type STSOptions struct {
	// Issuer is the only OIDC issuer trusted for AssumeRoleWithWebIdentity (an IAM OIDC provider).
	// Its discovery document and JWKS are fetched on every call, so key rotation just works.
	Issuer string
	// HTTPClient fetches the issuer's discovery document and JWKS. Default: a client with a 10s timeout.
	HTTPClient *http.Client
	// Roles maps each assumable role ARN to the web-identity subjects its trust policy allows. A subject
	// may be a path.Match pattern ("system:serviceaccount:ns:*"), like IAM's StringLike condition.
	Roles map[string][]string
	// Now is STS's clock. Default: time.Now.
	Now func() time.Time
}

// Creds are temporary session credentials issued by the emulator.
type Creds struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	Expiration      time.Time
	// RoleARN is the IAM role the session is of (arn:<partition>:iam::<account>:role/[<path>/]<role>).
	RoleARN string
	// AssumedRoleARN is arn:<partition>:sts::<account>:assumed-role/<role>/<session>.
	AssumedRoleARN string
	Account        string
	// UserID is the GetCallerIdentity UserId: <role id>:<session>.
	UserID string
}

// STS emulates the AWS STS Query API over plain HTTP on 127.0.0.1.
type STS struct {
	opts STSOptions
	srv  *httptest.Server

	mu       sync.Mutex
	sessions map[string]Creds           // by access key id
	webIDs   []string                   // web identity tokens received
	assume   map[string]assumeRoleTrust // AssumeRole trust policies, by target role ARN
	deny     bool
	skew     time.Duration
}

// NewSTS starts an STS emulator. Close it when done.
func NewSTS(o STSOptions) *STS {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &STS{opts: o, sessions: map[string]Creds{}, assume: map[string]assumeRoleTrust{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	return s
}

// URL is the emulator's base URL (http://127.0.0.1:<port>).
func (s *STS) URL() string { return s.srv.URL }

// Close stops the server.
func (s *STS) Close() { s.srv.Close() }

// SetDeny makes every call fail with AccessDenied while on.
func (s *STS) SetDeny(deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deny = deny
}

// SetClockSkew shifts STS's clock by d relative to Now, to simulate a client whose clock is off.
func (s *STS) SetClockSkew(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.skew = d
}

// IssueCredentials mints session credentials for roleArn directly, as the EKS Pod Identity agent
// gets them. It panics if roleArn is not an IAM role ARN: that is a test-setup bug.
func (s *STS) IssueCredentials(roleArn, session string, ttl time.Duration) Creds {
	c, err := s.issue(roleArn, session, ttl)
	if err != nil {
		panic(err)
	}
	return c
}

// WebIdentityTokens are the web identity tokens (ServiceAccount JWTs)
// AssumeRoleWithWebIdentity received, valid or not, for leak searches.
func (s *STS) WebIdentityTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.webIDs)
}

// IssuedCredentials returns every session STS has issued (directly, through
// AssumeRoleWithWebIdentity or through AssumeRole), so that tests can prove no secret key
// or session token leaks into logs, metrics or events.
func (s *STS) IssuedCredentials() []Creds {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Creds, 0, len(s.sessions))
	for _, c := range s.sessions {
		out = append(out, c)
	}
	return out
}

func (s *STS) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.Now().Add(s.skew)
}

func (s *STS) issue(roleArn, session string, ttl time.Duration) (Creds, error) {
	m := roleARNRE.FindStringSubmatch(roleArn)
	if m == nil {
		return Creds{}, fmt.Errorf("sts emulator: %q is not an IAM role ARN", roleArn)
	}
	partition, account, role := m[1], m[2], m[3]
	c := Creds{
		AccessKeyID:     "ASIA" + randomBase32(16),
		SecretAccessKey: randomBase64(30),
		SessionToken:    randomBase64(120),
		Expiration:      s.now().Add(ttl).UTC().Truncate(time.Second),
		RoleARN:         roleArn,
		AssumedRoleARN:  fmt.Sprintf("arn:%s:sts::%s:assumed-role/%s/%s", partition, account, role, session),
		Account:         account,
		UserID:          roleID(roleArn) + ":" + session,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions[c.AccessKeyID] = c
	return c, nil
}

// stsError is an STS error answer: HTTP status, error code and message.
type stsError struct {
	status  int
	code    string
	message string
}

func (e *stsError) Error() string { return e.code + ": " + e.message }

func senderError(status int, code, format string, args ...any) *stsError {
	return &stsError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func (s *STS) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeSTSError(w, senderError(http.StatusBadRequest, "InvalidRequest", "reading body: %v", err))
		return
	}
	params, err := queryParams(r, body)
	if err != nil {
		writeSTSError(w, senderError(http.StatusBadRequest, "MalformedQueryString", "%v", err))
		return
	}
	var resp any
	err = func() error {
		s.mu.Lock()
		deny := s.deny
		s.mu.Unlock()
		switch {
		case deny:
			return senderError(http.StatusForbidden, "AccessDenied", "access denied (emulator deny switch)")
		case r.URL.Path != "/":
			return senderError(http.StatusNotFound, "InvalidAction", "unknown path %q", r.URL.Path)
		case params.Get("Version") != stsVersion:
			return senderError(http.StatusBadRequest, "InvalidParameterValue", "Version must be %s", stsVersion)
		}
		switch action := params.Get("Action"); action {
		case "AssumeRoleWithWebIdentity":
			resp, err = s.assumeRoleWithWebIdentity(r.Context(), params)
		case "AssumeRole":
			resp, err = s.assumeRole(r, body, params)
		case "GetCallerIdentity":
			resp, err = s.getCallerIdentity(r, body)
		default:
			err = senderError(http.StatusBadRequest, "InvalidAction", "could not find operation %q for version %s", action, stsVersion)
		}
		return err
	}()
	var se *stsError
	if errors.As(err, &se) {
		writeSTSError(w, se)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", requestID())
	_, _ = w.Write([]byte(xml.Header))
	_ = xml.NewEncoder(w).Encode(resp)
}

// queryParams merges the URL query with a form-encoded body, the two ways the Query API is sent.
func queryParams(r *http.Request, body []byte) (url.Values, error) {
	params := r.URL.Query()
	if r.Method != http.MethodPost || len(body) == 0 {
		return params, nil
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return nil, fmt.Errorf("unsupported content type %q", mt)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, err
	}
	for k, v := range form {
		params[k] = append(params[k], v...)
	}
	return params, nil
}

func writeSTSError(w http.ResponseWriter, e *stsError) {
	type errorBody struct {
		Type    string
		Code    string
		Message string
	}
	type errorResponse struct {
		XMLName   xml.Name `xml:"ErrorResponse"`
		Xmlns     string   `xml:"xmlns,attr"`
		Error     errorBody
		RequestID string `xml:"RequestId"`
	}
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.status)
	_ = xml.NewEncoder(w).Encode(errorResponse{
		Xmlns:     stsNamespace,
		Error:     errorBody{Type: "Sender", Code: e.code, Message: e.message},
		RequestID: requestID(),
	})
}

type xmlCredentials struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string
	SessionToken    string
	Expiration      string
}

type assumeRoleWithWebIdentityResponse struct {
	XMLName xml.Name `xml:"AssumeRoleWithWebIdentityResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Result  struct {
		SubjectFromWebIdentityToken string
		Audience                    string
		AssumedRoleUser             struct {
			Arn           string
			AssumedRoleID string `xml:"AssumedRoleId"`
		}
		Credentials xmlCredentials
		Provider    string
	} `xml:"AssumeRoleWithWebIdentityResult"`
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

func (s *STS) assumeRoleWithWebIdentity(ctx context.Context, p url.Values) (any, error) {
	roleArn, session, rawToken := p.Get("RoleArn"), p.Get("RoleSessionName"), p.Get("WebIdentityToken")
	if rawToken != "" {
		s.mu.Lock()
		s.webIDs = append(s.webIDs, rawToken)
		s.mu.Unlock()
	}
	if !roleARNRE.MatchString(roleArn) {
		return nil, senderError(http.StatusBadRequest, "ValidationError", "RoleArn %q is not a valid IAM role ARN", roleArn)
	}
	if !roleSessionNameRE.MatchString(session) {
		return nil, senderError(http.StatusBadRequest, "ValidationError", "RoleSessionName must match %s", roleSessionNameRE)
	}
	ttl := time.Hour
	if d := p.Get("DurationSeconds"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 900 || n > 43200 {
			return nil, senderError(http.StatusBadRequest, "ValidationError", "DurationSeconds must be between 900 and 43200")
		}
		ttl = time.Duration(n) * time.Second
	}
	claims, err := s.verifyWebIdentity(ctx, rawToken)
	if err != nil {
		return nil, err
	}
	if !s.trusts(roleArn, claims.Subject) {
		return nil, senderError(http.StatusForbidden, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
	}
	c, err := s.issue(roleArn, session, ttl)
	if err != nil {
		return nil, senderError(http.StatusBadRequest, "ValidationError", "%v", err)
	}
	var resp assumeRoleWithWebIdentityResponse
	resp.Xmlns = stsNamespace
	resp.Result.SubjectFromWebIdentityToken = claims.Subject
	resp.Result.Audience = stsAudience
	resp.Result.AssumedRoleUser.Arn = c.AssumedRoleARN
	resp.Result.AssumedRoleUser.AssumedRoleID = c.UserID
	resp.Result.Credentials = xmlCredentials{
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey,
		SessionToken:    c.SessionToken,
		Expiration:      c.Expiration.Format(time.RFC3339),
	}
	resp.Result.Provider = s.opts.Issuer
	resp.RequestID = requestID()
	return resp, nil
}

// verifyWebIdentity checks the token the way STS checks an IAM OIDC provider's token: trusted issuer,
// signature against the issuer's published JWKS, sts.amazonaws.com audience, and validity window.
func (s *STS) verifyWebIdentity(ctx context.Context, raw string) (*jwt.Claims, error) {
	invalid := func(format string, args ...any) error {
		return senderError(http.StatusBadRequest, "InvalidIdentityToken", format, args...)
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		return nil, invalid("token is not a valid RS256/ES256 JWT: %v", err)
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, invalid("token claims: %v", err)
	}
	if unverified.Issuer != s.opts.Issuer {
		return nil, invalid("No OpenIDConnect provider found in your account for %s", unverified.Issuer)
	}
	keys, err := s.fetchJWKS(ctx)
	if err != nil {
		return nil, senderError(http.StatusBadRequest, "IDPCommunicationError", "%v", err)
	}
	var claims jwt.Claims
	verified := false
	for _, k := range keys.Keys {
		if kid := tok.Headers[0].KeyID; kid != "" && k.KeyID != kid {
			continue
		}
		if tok.Claims(k.Public(), &claims) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, invalid("token signature could not be verified with the issuer's keys")
	}
	if claims.Expiry == nil {
		return nil, invalid("token has no exp claim")
	}
	err = claims.ValidateWithLeeway(jwt.Expected{
		Issuer:      s.opts.Issuer,
		AnyAudience: jwt.Audience{stsAudience},
		Time:        s.now(),
	}, 0)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return nil, senderError(http.StatusBadRequest, "ExpiredTokenException", "Token expired: current date/time %s must be before the expiration date/time %s",
			s.now().UTC().Format(time.RFC3339), claims.Expiry.Time().UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, invalid("Incorrect token audience")
	case err != nil:
		return nil, invalid("%v", err)
	}
	return &claims, nil
}

// fetchJWKS follows OIDC discovery from the issuer to its JWKS.
func (s *STS) fetchJWKS(ctx context.Context) (*jose.JSONWebKeySet, error) {
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	discoveryURL := strings.TrimSuffix(s.opts.Issuer, "/") + "/.well-known/openid-configuration"
	if err := s.getJSON(ctx, discoveryURL, &disc); err != nil {
		return nil, err
	}
	if disc.Issuer != s.opts.Issuer || disc.JWKSURI == "" {
		return nil, fmt.Errorf("discovery document at %s names issuer %q and jwks_uri %q", discoveryURL, disc.Issuer, disc.JWKSURI)
	}
	var keys jose.JSONWebKeySet
	if err := s.getJSON(ctx, disc.JWKSURI, &keys); err != nil {
		return nil, err
	}
	return &keys, nil
}

func (s *STS) getJSON(ctx context.Context, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", u, err)
	}
	resp, err := s.opts.HTTPClient.Do(req)
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

// SetTrust replaces the web-identity subjects roleArn's trust policy
// allows (path.Match patterns, as in STSOptions.Roles); none removes the
// role.
func (s *STS) SetTrust(roleArn string, subjects ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	roles := make(map[string][]string, len(s.opts.Roles)+1)
	for k, v := range s.opts.Roles {
		roles[k] = v
	}
	if len(subjects) == 0 {
		delete(roles, roleArn)
	} else {
		roles[roleArn] = subjects
	}
	s.opts.Roles = roles
}

func (s *STS) trusts(roleArn, subject string) bool {
	s.mu.Lock()
	patterns := s.opts.Roles[roleArn]
	s.mu.Unlock()
	for _, pattern := range patterns {
		if ok, _ := path.Match(pattern, subject); ok {
			return true
		}
	}
	return false
}

type getCallerIdentityResponse struct {
	XMLName xml.Name `xml:"GetCallerIdentityResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Result  struct {
		Arn     string
		UserID  string `xml:"UserId"`
		Account string
	} `xml:"GetCallerIdentityResult"`
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

func (s *STS) getCallerIdentity(r *http.Request, body []byte) (any, error) {
	caller, err := s.authenticateSigned(r, body)
	if err != nil {
		return nil, err
	}
	var resp getCallerIdentityResponse
	resp.Xmlns = stsNamespace
	resp.Result.Arn = caller.AssumedRoleARN
	resp.Result.UserID = caller.UserID
	resp.Result.Account = caller.Account
	resp.RequestID = requestID()
	return resp, nil
}

// authenticateSigned verifies r's SigV4 or SigV4A signature as STS does for its signed actions
// (credential scope service sts and the endpoint's region, X-Amz-Date within five minutes, a known
// and unexpired access key, its session token) and returns the calling session. Failures are the
// 403 answers STS gives: MissingAuthenticationToken, IncompleteSignature, InvalidClientTokenId,
// ExpiredToken or SignatureDoesNotMatch.
func (s *STS) authenticateSigned(r *http.Request, body []byte) (Creds, error) {
	if r.Header.Get("Authorization") == "" {
		return Creds{}, senderError(http.StatusForbidden, "MissingAuthenticationToken", "Request is missing Authentication Token")
	}
	now := s.now()
	signedAt, err := time.Parse(amzDateLayout, r.Header.Get("X-Amz-Date"))
	if err != nil {
		return Creds{}, senderError(http.StatusForbidden, "IncompleteSignature", "X-Amz-Date header is missing or malformed")
	}
	if d := now.Sub(signedAt); d > maxClockSkew || d < -maxClockSkew {
		return Creds{}, senderError(http.StatusForbidden, "SignatureDoesNotMatch", "Signature expired: %s is now earlier than %s",
			signedAt.Format(amzDateLayout), now.Add(-maxClockSkew).UTC().Format(amzDateLayout))
	}

	// Remember why a key lookup failed: awssig only learns "no secret", STS answers differently.
	var unknown, expired bool
	var caller Creds
	secrets := func(akid string) (string, string, bool) {
		s.mu.Lock()
		c, ok := s.sessions[akid]
		s.mu.Unlock()
		switch {
		case !ok:
			unknown = true
			return "", "", false
		case !now.Before(c.Expiration):
			expired = true
			return "", "", false
		}
		caller = c
		return c.SecretAccessKey, c.SessionToken, true
	}
	want := awssig.Expect{Service: "sts", Region: endpointRegion(r.Host)}
	if _, err := awssig.Verify(r, body, want, secrets, now, maxClockSkew); err != nil {
		var scope *awssig.ScopeError
		switch {
		case errors.As(err, &scope):
			return Creds{}, senderError(http.StatusForbidden, "SignatureDoesNotMatch", "%s", scope.Message)
		case unknown:
			return Creds{}, senderError(http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
		case expired:
			return Creds{}, senderError(http.StatusForbidden, "ExpiredToken", "The security token included in the request is expired")
		case r.Header.Get("X-Amz-Security-Token") != caller.SessionToken:
			return Creds{}, senderError(http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
		}
		return Creds{}, senderError(http.StatusForbidden, "SignatureDoesNotMatch",
			"The request signature we calculated does not match the signature you provided: %v", err)
	}
	return caller, nil
}

// endpointRegion is the region of the STS endpoint a request was sent to, by
// its Host: sts.<region>.amazonaws.com[.cn] is that region's, and the global
// sts.amazonaws.com is us-east-1's, as is the emulator's own address (an SDK
// pointed at it with BaseEndpoint).
func endpointRegion(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if m := stsHostRE.FindStringSubmatch(host); m != nil && m[1] != "" {
		return m[1]
	}
	return "us-east-1"
}

// roleID is a stable AROA… unique id for a role, as IAM assigns one per role.
func roleID(roleArn string) string {
	sum := sha256.Sum256([]byte(roleArn))
	return "AROA" + base32.StdEncoding.EncodeToString(sum[:])[:17]
}

func requestID() string { return randomHex(16) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return b
}

func randomBase32(n int) string {
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(randomBytes(n))[:n]
}

func randomBase64(n int) string { return base64.StdEncoding.EncodeToString(randomBytes(n)) }

func randomBase64URL(n int) string { return base64.RawURLEncoding.EncodeToString(randomBytes(n)) }

func randomHex(n int) string { return fmt.Sprintf("%x", randomBytes(n)) }
