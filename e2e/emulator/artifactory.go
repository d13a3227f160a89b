package emulator

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	// TokenExchangePath is the only path Artifactory serves the AWS token exchange on.
	TokenExchangePath = "/access/api/v1/aws/token"
	// RegistryService is the Docker token service name the emulator's realm issues tokens for.
	RegistryService = "artifactory-emulator"
	// RegistryIssuer is the iss claim of the realm's registry tokens.
	RegistryIssuer = "artifactory-emulator-token-issuer"

	registryTokenTTL = 5 * time.Minute
)

var (
	regionRE       = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)
	assumedRoleARN = regexp.MustCompile(`^arn:(aws[\w-]*):sts::(\d{12}):assumed-role/([^/]+)/[^/]+$`)
)

// ArtifactoryOptions configures the Artifactory emulator.
type ArtifactoryOptions struct {
	// STS is the emulator the AWS token exchange replays signed GetCallerIdentity requests to.
	STS *STS
	// Mappings maps IAM role ARNs (arn:aws:iam::<acct>:role/<name>) to Artifactory usernames, as
	// PUT /access/api/v1/aws/iam_role does.
	Mappings map[string]string
	// MaxExpiry caps a requested expires_in (Artifactory's token.max-expiry for non-admin tokens): a
	// larger request is granted MaxExpiry, never refused. Zero means no cap.
	MaxExpiry time.Duration
	// Now is Artifactory's clock for access tokens. Default: time.Now. Registry tokens always use the
	// real clock because distribution checks them against it.
	Now func() time.Time
	// AdminUser and AdminPassword are a basic credential the Docker token realm grants push for, to
	// seed images in test setup. Empty means no admin.
	AdminUser, AdminPassword string
	// IssuerClient fetches the OIDC discovery documents and JWKS of OIDC providers set without
	// their own Client (the envtest API server's issuer needs its CA and credentials). Default: a
	// client with a 10s timeout.
	IssuerClient *http.Client
}

type accessToken struct {
	username string
	expires  time.Time
}

// Artifactory emulates the Artifactory endpoints the webhook's flow touches: the AWS token exchange,
// the OIDC token exchange (artifactory_oidc.go) and the Docker token realm. It serves HTTPS with a
// self-signed certificate valid for 127.0.0.1 and localhost.
type Artifactory struct {
	opts   ArtifactoryOptions
	srv    *httptest.Server
	replay *http.Client
	key    *ecdsa.PrivateKey
	keyID  string

	mu        sync.Mutex
	mappings  map[string]string
	tokens    map[string]accessToken // by access token value
	repoPerms map[string][]string    // SetRepositoryPermissions, by username; absent: every repository
	attempts  int
	exchanges int
	byUser    map[string]int // exchanges by mapped user
	down      bool
	status    int
	body      string
	delay     time.Duration
	maxExpiry time.Duration // SetMaxExpiry; overrides opts.MaxExpiry when set
	oidc      oidcState     // the OIDC token exchange's providers, mappings and records
}

// NewArtifactory starts an Artifactory emulator over TLS on 127.0.0.1.
func NewArtifactory(o ArtifactoryOptions) (*Artifactory, error) {
	if o.STS == nil {
		return nil, errors.New("artifactory emulator: STS is required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("artifactory emulator: generating registry token key: %w", err)
	}
	a := &Artifactory{
		opts:      o,
		replay:    &http.Client{Timeout: 10 * time.Second},
		key:       key,
		keyID:     "artifactory-emulator-" + randomHex(4),
		mappings:  map[string]string{},
		byUser:    map[string]int{},
		tokens:    map[string]accessToken{},
		repoPerms: map[string][]string{},
	}
	for role, user := range o.Mappings {
		a.mappings[role] = user
	}
	cert, err := selfSignedCert()
	if err != nil {
		return nil, fmt.Errorf("artifactory emulator: %w", err)
	}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(a.serveHTTP))
	a.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	a.srv.StartTLS()
	return a, nil
}

// URL is the instance's base URL (https://127.0.0.1:<port>).
func (a *Artifactory) URL() string { return a.srv.URL }

// Close stops the server.
func (a *Artifactory) Close() { a.srv.Close() }

// CACertPEM is the PEM of the server's self-signed (CA) certificate, for a caBundle.
func (a *Artifactory) CACertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.srv.Certificate().Raw})
}

// Client is an HTTP client that trusts the server's certificate.
func (a *Artifactory) Client() *http.Client { return a.srv.Client() }

// RegistryOptions are the token-auth settings a registry needs to trust this instance's realm. The
// realm is advertised as https://localhost:<port>: registry clients refuse loopback IP realms.
func (a *Artifactory) RegistryOptions() RegistryOptions {
	_, port, _ := net.SplitHostPort(a.srv.Listener.Addr().String())
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &a.key.PublicKey, KeyID: a.keyID, Algorithm: string(jose.ES256), Use: "sig",
	}}})
	return RegistryOptions{
		Realm:      "https://localhost:" + port + "/v2/token",
		Service:    RegistryService,
		Issuer:     RegistryIssuer,
		JWKS:       jwks,
		RealmCAPEM: a.CACertPEM(),
	}
}

// Attempts counts requests that reached a token exchange path (AWS or OIDC) while up, whatever their
// outcome; OIDCAttempts counts the OIDC ones alone.
func (a *Artifactory) Attempts() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.attempts
}

// Exchanges counts successful token exchanges, AWS and OIDC; OIDCExchanges counts the OIDC ones alone.
func (a *Artifactory) Exchanges() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.exchanges
}

// ExchangesFor is the number of tokens issued for username: a count that
// exchanges of other users (another test's webhook refreshing) leave alone.
func (a *Artifactory) ExchangesFor(username string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byUser[username]
}

// SetDown makes every endpoint answer 503 while on (a load balancer in front of a dead instance).
func (a *Artifactory) SetDown(down bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down = down
}

// SetStatus forces both token exchanges (AWS and OIDC) to answer code with body; code 0 restores
// normal answers.
func (a *Artifactory) SetStatus(code int, body string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status, a.body = code, body
}

// SetDelay delays every answer of both token exchanges by d (cut short if the client gives up).
func (a *Artifactory) SetDelay(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.delay = d
}

// SetMaxExpiry caps expires_in at d from now on (token.max-expiry changed at
// runtime); 0 restores the cap given in ArtifactoryOptions.
func (a *Artifactory) SetMaxExpiry(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.maxExpiry = d
}

// IssuedTokens returns every access token the exchange has issued, so that
// tests can prove none of them leaks into logs, metrics or events.
func (a *Artifactory) IssuedTokens() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.tokens))
	for t := range a.tokens {
		out = append(out, t)
	}
	return out
}

// SetMapping maps an IAM role ARN to a username.
func (a *Artifactory) SetMapping(roleArn, username string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mappings[roleArn] = username
}

// RemoveMapping removes a role's mapping; tokens already issued stay valid, as in Artifactory.
func (a *Artifactory) RemoveMapping(roleArn string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.mappings, roleArn)
}

// SetRepositoryPermissions restricts what the Docker token realm grants username to the repositories
// repos names, as an Artifactory permission target does: each is a repository name matched exactly
// ("team/app"), or a name ending in "/*" matching every repository under that prefix at any depth
// ("team/*" covers "team/app" and "team/x/y", not "team" or "teams/app"). A scope for any other
// repository is not granted: the realm still answers a token, without that scope's actions, and the
// registry then refuses the pull. No repos leaves username no repository at all. The restriction
// applies to every action, so set for the admin it limits pushes too; tokens already issued by the
// realm keep their grants until they expire. Without a call (or after ClearRepositoryPermissions)
// a user may pull, and the admin push to, any repository. It panics on a pattern with any other '*'
// or an empty one: that is a test-setup bug.
func (a *Artifactory) SetRepositoryPermissions(username string, repos ...string) {
	for _, r := range repos {
		base, prefix := strings.CutSuffix(r, "/*")
		if base == "" || strings.Contains(base, "*") || (!prefix && strings.HasSuffix(base, "/")) {
			panic(fmt.Sprintf("artifactory emulator: repository pattern %q is neither a repository name nor <prefix>/*", r))
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.repoPerms[username] = append([]string{}, repos...)
}

// ClearRepositoryPermissions lifts SetRepositoryPermissions' restriction from username: it may pull
// (and the admin push to) any repository again.
func (a *Artifactory) ClearRepositoryPermissions(username string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.repoPerms, username)
}

// repositoryPermits is the realm's repository check for username: nil when it may use every
// repository, else whether a repository name is among its permissions.
func (a *Artifactory) repositoryPermits(username string) func(repo string) bool {
	a.mu.Lock()
	patterns, restricted := a.repoPerms[username]
	a.mu.Unlock()
	if !restricted {
		return nil
	}
	return func(repo string) bool {
		for _, p := range patterns {
			if prefix, ok := strings.CutSuffix(p, "*"); ok {
				if strings.HasPrefix(repo, prefix) && len(repo) > len(prefix) {
					return true
				}
			} else if repo == p {
				return true
			}
		}
		return false
	}
}

func (a *Artifactory) serveHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	down := a.down
	a.mu.Unlock()
	if down {
		writeArtifactoryError(w, http.StatusServiceUnavailable, "Artifactory is down (emulator down switch)")
		return
	}
	switch r.URL.Path {
	case TokenExchangePath:
		a.exchange(w, r)
	case OIDCTokenExchangePath:
		a.oidcExchange(w, r)
	case "/v2/token":
		a.registryToken(w, r)
	case RepositoriesPath:
		a.repositories(w, r)
	default:
		writeArtifactoryError(w, http.StatusNotFound, "Not Found")
	}
}

// RepositoriesPath is Artifactory's GET Repositories API: the repositories the caller may read. The
// emulator serves it to callers that present an access token as a bearer token (Authorization:
// Bearer <access_token>), as tools given a generic token Secret do; anonymous access is off.
const RepositoriesPath = "/artifactory/api/repositories"

// repositories answers GET Repositories for a bearer access token that the emulator issued and that
// has not expired: the repository patterns its user may read, [] when it may read any. Anything
// else is 401, as Artifactory answers without anonymous access.
func (a *Artifactory) repositories(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeArtifactoryError(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	a.mu.Lock()
	t, found := a.tokens[bearer]
	valid := ok && bearer != "" && found && a.opts.Now().Before(t.expires)
	patterns := a.repoPerms[t.username]
	a.mu.Unlock()
	if !valid {
		writeArtifactoryError(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	type repo struct {
		Key  string `json:"key"`
		Type string `json:"type"`
	}
	out := make([]repo, 0, len(patterns))
	for _, p := range patterns {
		out = append(out, repo{Key: p, Type: "LOCAL"})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func writeArtifactoryError(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]any{{"status": status, "message": message}},
	})
}

// beginExchange does what both token exchanges do first: count the attempt, read the body, wait
// SetDelay and answer SetStatus. It returns the body and the expiry cap in force, or false when it
// has answered.
func (a *Artifactory) beginExchange(w http.ResponseWriter, r *http.Request, oidc bool) ([]byte, time.Duration, bool) {
	a.mu.Lock()
	a.attempts++
	if oidc {
		a.oidc.attempts++
	}
	status, forced, delay := a.status, a.body, a.delay
	maxExpiry := a.opts.MaxExpiry
	if a.maxExpiry > 0 {
		maxExpiry = a.maxExpiry
	}
	a.mu.Unlock()
	// Read the body first: only then does net/http watch the connection and cancel the context when
	// the client gives up during the delay.
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		writeArtifactoryError(w, http.StatusBadRequest, "reading request body: "+err.Error())
		return nil, 0, false
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			// Drop the connection: returning normally would send an empty
			// 200 should the context end for a reason other than the client
			// leaving.
			panic(http.ErrAbortHandler)
		}
	}
	if status != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, forced)
		return nil, 0, false
	}
	return body, maxExpiry, true
}

// exchange implements POST /access/api/v1/aws/token: verify the caller's AWS identity by replaying
// its signed GetCallerIdentity to STS, map the role to a user, and mint an access token.
func (a *Artifactory) exchange(w http.ResponseWriter, r *http.Request) {
	body, maxExpiry, ok := a.beginExchange(w, r, false)
	if !ok {
		return
	}
	if r.Method != http.MethodPost {
		writeArtifactoryError(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeArtifactoryError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	expiresIn, err := parseExpiresIn(body)
	if err != nil {
		writeArtifactoryError(w, http.StatusBadRequest, err.Error())
		return
	}
	stsHost := "sts.amazonaws.com"
	if region := r.URL.Query().Get("region"); region != "" {
		if !regionRE.MatchString(region) {
			writeArtifactoryError(w, http.StatusBadRequest, fmt.Sprintf("invalid region %q", region))
			return
		}
		stsHost = "sts." + region + ".amazonaws.com"
		if strings.HasPrefix(region, "cn-") {
			stsHost += ".cn"
		}
	}
	callerARN, err := a.verifyIdentity(r, stsHost)
	if err != nil {
		writeArtifactoryError(w, http.StatusUnauthorized, "Failed to verify AWS identity: "+err.Error())
		return
	}
	m := assumedRoleARN.FindStringSubmatch(callerARN)
	if m == nil {
		writeArtifactoryError(w, http.StatusUnauthorized, fmt.Sprintf("AWS identity %s is not an assumed IAM role", callerARN))
		return
	}
	roleArn := fmt.Sprintf("arn:%s:iam::%s:role/%s", m[1], m[2], m[3])

	if maxExpiry > 0 && expiresIn > int64(maxExpiry/time.Second) {
		expiresIn = int64(maxExpiry / time.Second)
	}
	token := randomBase64URL(48)
	a.mu.Lock()
	username, ok := a.mappings[roleArn]
	if ok {
		a.tokens[token] = accessToken{username: username, expires: a.opts.Now().Add(time.Duration(expiresIn) * time.Second)}
		a.exchanges++
		a.byUser[username]++
	}
	a.mu.Unlock()
	if !ok {
		writeArtifactoryError(w, http.StatusUnauthorized, fmt.Sprintf("no user is mapped to IAM role %s", roleArn))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token_id":     randomHex(16),
		"access_token": token,
		"scope":        "applied-permissions/user",
		"token_type":   "Bearer",
		"expires_in":   expiresIn,
		"username":     username,
	})
}

// parseExpiresIn reads {"expires_in": <positive integer>}.
func parseExpiresIn(body []byte) (int64, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var req map[string]any
	if err := dec.Decode(&req); err != nil {
		return 0, fmt.Errorf("request body is not a JSON object: %v", err)
	}
	n, ok := req["expires_in"].(json.Number)
	if !ok {
		return 0, errors.New("expires_in must be a number")
	}
	v, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("expires_in must be a positive whole number of seconds, got %s", n)
	}
	return v, nil
}

// verifyIdentity rebuilds the caller's signed GetCallerIdentity for stsHost from the forwarded
// headers and replays it to the STS emulator, returning the caller's ARN.
func (a *Artifactory) verifyIdentity(r *http.Request, stsHost string) (string, error) {
	if r.Header.Get("Authorization") == "" || r.Header.Get("X-Amz-Date") == "" {
		return "", errors.New("missing AWS signature headers (Authorization, X-Amz-Date)")
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet,
		a.opts.STS.URL()+"/?Action=GetCallerIdentity&Version=2011-06-15", nil)
	if err != nil {
		return "", fmt.Errorf("building GetCallerIdentity for %s: %w", stsHost, err)
	}
	req.Host = stsHost
	for _, h := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Region-Set"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	resp, err := a.replay.Do(req)
	if err != nil {
		return "", fmt.Errorf("calling STS %s: %w", stsHost, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("reading STS %s answer: %w", stsHost, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Code    string `xml:"Error>Code"`
			Message string `xml:"Error>Message"`
		}
		if xml.NewDecoder(bytes.NewReader(raw)).Decode(&e) != nil || e.Code == "" {
			return "", fmt.Errorf("STS %s answered %s", stsHost, resp.Status)
		}
		return "", fmt.Errorf("%s: %s", e.Code, e.Message)
	}
	var ok getCallerIdentityResponse
	if err := xml.Unmarshal(raw, &ok); err != nil || ok.Result.Arn == "" {
		return "", fmt.Errorf("STS %s answered an unreadable GetCallerIdentity response", stsHost)
	}
	return ok.Result.Arn, nil
}

// registryToken implements the Docker token realm: a basic credential (username:access_token, or
// the admin) buys a registry JWT for the requested repository actions it is allowed.
func (a *Artifactory) registryToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeArtifactoryError(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	if svc := r.URL.Query().Get("service"); svc != RegistryService {
		writeArtifactoryError(w, http.StatusBadRequest, fmt.Sprintf("unknown service %q", svc))
		return
	}
	user, admin, ok := a.authenticate(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="Artifactory Realm"`)
		writeArtifactoryError(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	allowed := map[string]bool{"pull": true}
	if admin {
		allowed["push"], allowed["delete"] = true, true
	}
	now := time.Now()
	claims := struct {
		jwt.Claims
		Access []resourceActions `json:"access"`
	}{
		Claims: jwt.Claims{
			Issuer:    RegistryIssuer,
			Subject:   user,
			Audience:  jwt.Audience{RegistryService},
			Expiry:    jwt.NewNumericDate(now.Add(registryTokenTTL)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        randomHex(16),
		},
		Access: grantedAccess(r.URL.Query()["scope"], allowed, a.repositoryPermits(user)),
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: a.key, KeyID: a.keyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		writeArtifactoryError(w, http.StatusInternalServerError, "creating token signer: "+err.Error())
		return
	}
	signed, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		writeArtifactoryError(w, http.StatusInternalServerError, "signing token: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":        signed,
		"access_token": signed,
		"expires_in":   int(registryTokenTTL / time.Second),
		"issued_at":    now.UTC().Format(time.RFC3339),
	})
}

// authenticate checks a basic credential: the admin, or a user with one of its unexpired tokens.
func (a *Artifactory) authenticate(r *http.Request) (user string, admin, ok bool) {
	user, pass, ok := r.BasicAuth()
	if !ok || user == "" || pass == "" {
		return "", false, false
	}
	if a.opts.AdminUser != "" && user == a.opts.AdminUser &&
		subtle.ConstantTimeCompare([]byte(pass), []byte(a.opts.AdminPassword)) == 1 {
		return user, true, true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	t, found := a.tokens[pass]
	if !found || t.username != user || !a.opts.Now().Before(t.expires) {
		return "", false, false
	}
	return user, false, true
}

// resourceActions is distribution's token.ResourceActions claim shape.
type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// grantedAccess intersects requested scopes ("repository:<name>:pull,push", several per parameter
// separated by spaces) with the allowed actions, and grants no action on a repository permits
// (unless nil) refuses; other resource types are never granted.
func grantedAccess(scopes []string, allowed map[string]bool, permits func(repo string) bool) []resourceActions {
	granted := []resourceActions{}
	for _, param := range scopes {
		for _, scope := range strings.Fields(param) {
			typ, rest, ok := strings.Cut(scope, ":")
			i := strings.LastIndex(rest, ":")
			if !ok || typ != "repository" || i <= 0 {
				continue
			}
			ra := resourceActions{Type: typ, Name: rest[:i], Actions: []string{}}
			permitted := permits == nil || permits(ra.Name)
			for _, action := range strings.Split(rest[i+1:], ",") {
				if permitted && allowed[action] {
					ra.Actions = append(ra.Actions, action)
				}
			}
			granted = append(granted, ra)
		}
	}
	return granted
}
