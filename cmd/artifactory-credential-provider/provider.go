package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/distribution/reference"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	credentialproviderv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// apiVersion is the only CredentialProviderRequest version served: the
// CredentialProviderConfig must name it.
var apiVersion = credentialproviderv1.SchemeGroupVersion.String()

// cacheInstance names the plugin's one instance in token cache keys and
// exchange errors.
const cacheInstance = "artifactory"

// trustRecheck bounds how long a ServiceAccount's role token is used
// without the ServiceAccount assuming the role again (the webhook's proof
// lifetime).
const trustRecheck = time.Hour

// provider answers kubelet's requests with Artifactory tokens.
type provider struct {
	o       options
	matcher *config.Matcher
	cache   *credentials.FileCache // nil: no disk cache
	now     func() time.Time
	// awsNode resolves the node's AWS credentials (--identity node,
	// --exchange aws); replaced in tests.
	awsNode func(ctx context.Context) (aws.CredentialsProvider, error)
}

func newProvider(o options, now func() time.Time) *provider {
	p := &provider{o: o, now: now,
		matcher: config.NewMatcher([]config.Instance{{Name: cacheInstance, RegistryHosts: o.Registries}})}
	if o.CacheDir != "" {
		p.cache = &credentials.FileCache{Dir: o.CacheDir, RefreshThreshold: o.Refresh, Now: now}
	}
	p.awsNode = func(ctx context.Context) (aws.CredentialsProvider, error) {
		return credentials.AWSCredentials(ctx, p.awsOptions())
	}
	return p
}

func (p *provider) awsOptions() credentials.AWSOptions {
	return credentials.AWSOptions{AuthType: p.o.AuthType, Region: p.o.Region, STSEndpoint: p.o.STSEndpoint,
		InCluster: func() bool { return false }}
}

// decodeRequest reads kubelet's request: credentialprovider.kubelet.k8s.io/v1
// only.
func decodeRequest(b []byte) (*credentialproviderv1.CredentialProviderRequest, error) {
	// Fields a newer kubelet adds are ignored, as kubelet's own decoding
	// of this version does.
	var req credentialproviderv1.CredentialProviderRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, fmt.Errorf("decoding the CredentialProviderRequest on stdin: %w", err)
	}
	if req.APIVersion != apiVersion || req.Kind != "CredentialProviderRequest" {
		return nil, fmt.Errorf("request is %s %q, want %s CredentialProviderRequest (set apiVersion: %s in the CredentialProviderConfig)",
			req.Kind, req.APIVersion, apiVersion, apiVersion)
	}
	if req.Image == "" {
		return nil, errors.New("the request names no image")
	}
	return &req, nil
}

// provide answers req: the token of the identity the configuration and
// the request give, for the image's registry host.
func (p *provider) provide(ctx context.Context, req *credentialproviderv1.CredentialProviderRequest) (*credentialproviderv1.CredentialProviderResponse, error) {
	named, err := reference.ParseNormalizedNamed(req.Image)
	if err != nil {
		return nil, fmt.Errorf("image %q is not a valid reference: %w", truncate(req.Image), err)
	}
	host := reference.Domain(named)
	if i, _ := p.matcher.Index(req.Image); i < 0 {
		return nil, fmt.Errorf("image host %s is none of the plugin's registries %v: no Artifactory token is sent there "+
			"(set --registry, or narrow matchImages in the CredentialProviderConfig)", host, p.o.Registries)
	}
	key, mint, err := p.minter(req)
	if err != nil {
		return nil, fmt.Errorf("image host %s: %w", host, err)
	}
	var cred credentials.Credential
	if p.cache != nil {
		cred, err = p.cache.Get(ctx, key, mint)
	} else {
		cred, err = mint(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("image host %s: %w", host, err)
	}
	// kubelet keeps the answer until shortly before the point at which this
	// plugin would mint a new token, never past it.
	refreshAt := cred.Expiry.Add(-time.Duration(p.o.Refresh * float64(cred.Lifetime())))
	keep := refreshAt.Sub(p.now()).Truncate(time.Second)
	if keep < time.Second {
		keep = 0 // not cached: the next pull asks again
	}
	return &credentialproviderv1.CredentialProviderResponse{
		TypeMeta:      metav1.TypeMeta{APIVersion: apiVersion, Kind: "CredentialProviderResponse"},
		CacheKeyType:  credentialproviderv1.RegistryPluginCacheKeyType,
		CacheDuration: &metav1.Duration{Duration: keep},
		Auth:          map[string]credentialproviderv1.AuthConfig{host: {Username: cred.Username, Password: cred.Token.Reveal()}},
	}, nil
}

// minter resolves the identity of req — the node's, or the ServiceAccount's
// whose token kubelet sent — into its cache key and its exchange.
func (p *provider) minter(req *credentialproviderv1.CredentialProviderRequest) (credentials.Key, func(context.Context) (credentials.Credential, error), error) {
	if p.o.Identity == identityNode {
		key := credentials.Key{Instance: cacheInstance, Identity: identityNode, Fingerprint: p.fingerprint(credentials.SigningIdentity(p.awsOptions()))}
		if p.o.Exchange == config.ExchangeOIDC {
			key.Fingerprint = p.fingerprint("file:" + p.o.OIDCTokenFile)
			return key, p.oidc(credentials.Identity{}, credentials.FileSubject(p.o.OIDCTokenFile)), nil
		}
		return key, func(ctx context.Context) (credentials.Credential, error) {
			base, err := p.awsNode(ctx)
			if err != nil {
				return credentials.Credential{}, fmt.Errorf("the node's AWS identity (--auth-type %s): %w", p.o.AuthType, err)
			}
			return p.aws(ctx, base, "")
		}, nil
	}
	if req.ServiceAccountToken == "" {
		return credentials.Key{}, nil, errors.New("--identity serviceAccount, but kubelet sent no ServiceAccount token: " +
			"set tokenAttributes (serviceAccountTokenAudience, cacheType, requireServiceAccount: true) for this provider in the CredentialProviderConfig")
	}
	sa, err := serviceAccountOf(req.ServiceAccountToken)
	if err != nil {
		return credentials.Key{}, nil, err
	}
	// The key is the ServiceAccount's own, UID included, never its role's:
	// a role's token is not handed to another ServiceAccount that merely
	// names the role, since only its own exchange proves the role trusts it.
	identity := "sa:" + sa.namespace + "/" + sa.name + "@" + sa.uid
	token := req.ServiceAccountToken
	if p.o.Exchange == config.ExchangeOIDC {
		id := credentials.Identity{Namespace: sa.namespace, ServiceAccount: sa.name}
		return credentials.Key{Instance: cacheInstance, Identity: identity, Fingerprint: p.fingerprint("serviceAccount")},
			p.oidc(id, func(context.Context, credentials.Identity) (string, error) { return token, nil }), nil
	}
	id, err := credentials.ServiceAccountIdentity(sa.namespace, sa.name, req.ServiceAccountAnnotations, p.o.OptIn)
	if err != nil {
		if errors.Is(err, credentials.ErrNoRole) {
			err = fmt.Errorf("%w (kubelet sends only the annotations listed in tokenAttributes; list %s there)", err, credentials.RoleARNAnnotation)
		}
		return credentials.Key{}, nil, err
	}
	return credentials.Key{Instance: cacheInstance, Identity: identity + "\x00" + id.RoleARN, Fingerprint: p.fingerprint("serviceAccount")},
		func(ctx context.Context) (credentials.Credential, error) {
			roles, err := credentials.NewRoleCredentials(p.awsOptions(), func(context.Context, string, string) (string, error) { return token, nil })
			if err != nil {
				return credentials.Credential{}, err
			}
			cred, err := p.aws(ctx, roles.Provider(id), credentials.SessionName(id))
			// Kept at most trustRecheck: a trust policy that stops naming
			// the ServiceAccount takes effect within that time, as in the
			// webhook, however long the token lives.
			if err == nil && cred.Expiry.Sub(cred.IssuedAt) > trustRecheck {
				cred.Expiry = cred.IssuedAt.Add(trustRecheck)
			}
			return cred, err
		}, nil
}

// fingerprint is what a cached token depends on besides its key.
func (p *provider) fingerprint(signer string) string {
	o := p.o
	return credentials.Fingerprint(o.URL, o.TokenTTL, strings.Join([]string{string(o.Exchange), signer, o.Region,
		o.SigningEndpoint, o.AssumeRole, o.ExternalID, o.OIDCProvider, o.OIDCMapping, o.OIDCProject, o.OIDCAudience}, "\x00"))
}

// aws exchanges with base's credentials, chained to --assume-role when set.
func (p *provider) aws(ctx context.Context, base aws.CredentialsProvider, session string) (credentials.Credential, error) {
	hc, err := credentials.NewHTTPClient(p.o.CABundle, p.o.Timeout)
	if err != nil {
		return credentials.Credential{}, err
	}
	if p.o.AssumeRole != "" {
		base = credentials.ChainRole(p.awsOptions(), base, credentials.ChainedRole{RoleARN: p.o.AssumeRole, ExternalID: p.o.ExternalID}, session)
	}
	ex, err := credentials.NewExchanger(credentials.ExchangeOptions{Instance: cacheInstance, URL: p.o.URL, Region: p.o.Region,
		STSEndpoint: p.o.SigningEndpoint, TTL: p.o.TokenTTL, HTTPClient: hc, Credentials: base, Now: p.now})
	if err != nil {
		return credentials.Credential{}, err
	}
	return ex.Exchange(ctx)
}

// oidc exchanges the subject token of id.
func (p *provider) oidc(id credentials.Identity, subject credentials.SubjectTokens) func(context.Context) (credentials.Credential, error) {
	return func(ctx context.Context) (credentials.Credential, error) {
		hc, err := credentials.NewHTTPClient(p.o.CABundle, p.o.Timeout)
		if err != nil {
			return credentials.Credential{}, err
		}
		ex, err := credentials.NewOIDCExchanger(credentials.OIDCOptions{Instance: cacheInstance, URL: p.o.URL,
			ProviderName: p.o.OIDCProvider, IdentityMappingName: p.o.OIDCMapping, ProjectKey: p.o.OIDCProject,
			Audience: p.o.OIDCAudience, TTL: p.o.TokenTTL, Subject: subject, HTTPClient: hc, Now: p.now})
		if err != nil {
			return credentials.Credential{}, err
		}
		return ex.ExchangeAs(ctx, id)
	}
}

// serviceAccount is who a ServiceAccount token names.
type serviceAccount struct{ namespace, name, uid string }

// serviceAccountOf reads the ServiceAccount a token kubelet sent names. The
// token is not verified here — kubelet got it from the API server, and STS
// or Artifactory verify it in the exchange — so this only keys the cache
// and names the role session.
func serviceAccountOf(token string) (serviceAccount, error) {
	parts := strings.Split(token, ".")
	bad := errors.New("the ServiceAccount token kubelet sent is not a Kubernetes ServiceAccount JWT")
	if len(parts) != 3 {
		return serviceAccount{}, bad
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return serviceAccount{}, bad
	}
	var claims struct {
		Kubernetes struct {
			Namespace      string `json:"namespace"`
			ServiceAccount struct {
				Name string `json:"name"`
				UID  string `json:"uid"`
			} `json:"serviceaccount"`
		} `json:"kubernetes.io"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return serviceAccount{}, bad
	}
	k := claims.Kubernetes
	if k.Namespace == "" || k.ServiceAccount.Name == "" || k.ServiceAccount.UID == "" {
		return serviceAccount{}, bad
	}
	return serviceAccount{namespace: k.Namespace, name: k.ServiceAccount.Name, uid: k.ServiceAccount.UID}, nil
}

// truncate shortens s for an error message.
func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
