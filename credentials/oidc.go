package credentials

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
)

// errSubjectToken marks an OIDC exchange that could not get its subject
// token (FailureClass "credentials", like AWS credentials that could not be
// retrieved).
var errSubjectToken = errors.New("the OIDC subject token could not be had")

// Exchange kinds, as the exchange label of the exchange metric names them.
const (
	ExchangeAWS  = "aws"
	ExchangeOIDC = "oidc"
)

// OIDCTokenPath is Artifactory's OIDC token exchange endpoint (JFrog Cloud
// 7.73.1+, self-hosted 7.77.3+). Exact, like TokenPath.
const OIDCTokenPath = "/access/api/v1/oidc/token"

// RFC 8693 values of the OIDC exchange.
const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeIDToken   = "urn:ietf:params:oauth:token-type:id_token"
)

// SubjectTokens returns the OIDC ID token exchanged for id: a
// ServiceAccount token (the webhook's own, or id's ServiceAccount's), a
// projected token file, or a metadata server's identity token.
type SubjectTokens func(ctx context.Context, id Identity) (string, error)

// OIDCOptions configures an OIDCExchanger.
type OIDCOptions struct {
	// Instance is the configured instance name (metrics label, error text).
	Instance string
	// URL is the Artifactory base URL, possibly with a path prefix; https.
	URL string
	// ProviderName is the OIDC integration configured in Artifactory.
	ProviderName string
	// IdentityMappingName, ProjectKey and Audience are sent when set.
	IdentityMappingName, ProjectKey, Audience string
	// TTL bounds the token's lifetime (Artifactory's identity mapping
	// decides expires_in; a longer one is cut to TTL).
	TTL time.Duration
	// Subject gives the ID token of each exchange.
	Subject SubjectTokens
	// HTTPClient reaches Artifactory; NewHTTPClient("", 30s) when nil. A
	// copy that refuses redirects is used.
	HTTPClient *http.Client
	Now        func() time.Time
	Metrics    *metrics.Metrics
}

// OIDCExchanger trades OIDC ID tokens for Artifactory tokens of one
// instance through Artifactory's OIDC token exchange. It is safe for
// concurrent use.
type OIDCExchanger struct {
	o        OIDCOptions
	tokenURL string
}

// NewOIDCExchanger validates o and builds an OIDCExchanger.
func NewOIDCExchanger(o OIDCOptions) (*OIDCExchanger, error) {
	switch {
	case o.ProviderName == "":
		return nil, fmt.Errorf("instance %q: the OIDC provider name is required", o.Instance)
	case o.Subject == nil:
		return nil, fmt.Errorf("instance %q: a subject token source is required", o.Instance)
	case o.TTL < time.Second:
		return nil, fmt.Errorf("instance %q: token TTL %s is shorter than one second", o.Instance, o.TTL)
	}
	base, err := url.Parse(strings.TrimRight(o.URL, "/"))
	if err != nil || base.Host == "" || base.Scheme != "https" {
		return nil, fmt.Errorf("instance %q: Artifactory URL %q is not an absolute https URL", o.Instance, o.URL)
	}
	base.Path += OIDCTokenPath
	base.RawPath = ""
	hc, err := noRedirects(o.HTTPClient)
	if err != nil {
		return nil, err
	}
	o.HTTPClient = hc
	if o.Now == nil {
		o.Now = time.Now
	}
	return &OIDCExchanger{o: o, tokenURL: base.String()}, nil
}

// ExchangeAs exchanges id's subject token (OIDCOptions.Subject) for a
// token of the user Artifactory's identity mappings give it.
func (e *OIDCExchanger) ExchangeAs(ctx context.Context, id Identity) (Credential, error) {
	cred, err := e.exchange(ctx, id)
	if err != nil {
		e.o.Metrics.Exchange(e.o.Instance, ExchangeOIDC, FailureClass(err))
		return Credential{}, err
	}
	e.o.Metrics.Exchange(e.o.Instance, ExchangeOIDC, "success")
	return cred, nil
}

func (e *OIDCExchanger) exchange(ctx context.Context, id Identity) (Credential, error) {
	host := hostOf(e.tokenURL)
	fail := func(status int, body []byte, reason string, err error) *ExchangeError {
		return &ExchangeError{Instance: e.o.Instance, Host: host, Status: status,
			Body: sanitizeBody(body), Reason: reason, Err: err,
			Exchange: ExchangeOIDC, TTL: e.o.TTL, Timeout: e.o.HTTPClient.Timeout}
	}
	subject, err := e.o.Subject(ctx, id)
	if err != nil {
		return Credential{}, fail(0, nil, "", fmt.Errorf("%w: %w", errSubjectToken, err))
	}
	form := url.Values{
		"grant_type":         {grantTokenExchange},
		"subject_token_type": {tokenTypeIDToken},
		"subject_token":      {subject},
		"provider_name":      {e.o.ProviderName},
	}
	for k, v := range map[string]string{"identity_mapping_name": e.o.IdentityMappingName, "project_key": e.o.ProjectKey, "audience": e.o.Audience} {
		if v != "" {
			form.Set(k, v)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return Credential{}, fail(0, nil, "build request", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	return post(e.o.HTTPClient, req, e.o.Now, e.o.TTL, OIDCTokenPath, fail)
}

// FileSubject reads the ID token from path on every exchange: projected
// tokens rotate (Azure workload identity's AZURE_FEDERATED_TOKEN_FILE, a
// projected ServiceAccount token of another audience).
func FileSubject(path string) SubjectTokens {
	return func(context.Context, Identity) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("token file %s is empty", path)
		}
		return tok, nil
	}
}

// metadataClient reaches the metadata server never through a proxy: it is
// link-local, and a proxy would see (and could answer) the identity token
// request.
func metadataClient() *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	return &http.Client{Timeout: 5 * time.Second, Transport: transport}
}

// DefaultGCPMetadataHost is the GCE/GKE metadata server; GCE_METADATA_HOST
// overrides it, as in Google's client libraries.
const DefaultGCPMetadataHost = "169.254.169.254"

// GCPMetadataSubject asks the GCE/GKE metadata server at host (host[:port],
// plain HTTP as the server is) for an identity token of audience, with the
// claims of format=full, on every exchange.
func GCPMetadataSubject(host, audience string, hc *http.Client) SubjectTokens {
	if hc == nil {
		hc = metadataClient()
	}
	u := url.URL{Scheme: "http", Host: host, Path: "/computeMetadata/v1/instance/service-accounts/default/identity",
		RawQuery: url.Values{"audience": {audience}, "format": {"full"}}.Encode()}
	return func(ctx context.Context, _ Identity) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return "", err
		}
		req.Header.Set("Metadata-Flavor", "Google")
		resp, err := hc.Do(req)
		if err != nil {
			return "", fmt.Errorf("metadata server %s: %w", host, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return "", fmt.Errorf("metadata server %s: %w", host, err)
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("metadata server %s: HTTP %d: %s", host, resp.StatusCode, sanitizeBody(body))
		}
		tok := strings.TrimSpace(string(body))
		if tok == "" {
			return "", errors.New("metadata server answered no identity token")
		}
		return tok, nil
	}
}
