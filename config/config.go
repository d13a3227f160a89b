// Package config loads and validates the webhook's YAML configuration file.
// Every error names the field at fault, so a bad file fails at start with a
// message the operator can act on. Its Matcher says which instance serves an
// image, for the webhook and the kubelet credential provider alike.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// Defaults.
const (
	DefaultSecretName     = "artifactory-pull"
	DefaultNamespaceLabel = "artifactory-pull-webhook/inject=enabled"
	// DefaultInstallation names the installation whose Secrets carry no
	// installation annotation (those written before it existed).
	DefaultInstallation     = "artifactory-pull-webhook"
	DefaultPodOptOutLabel   = "artifactory-pull-webhook/inject=disabled"
	DefaultTokenTTL         = 3 * time.Hour
	DefaultRefreshThreshold = 0.25
	DefaultRequestTimeout   = 5 * time.Second
	DefaultExchangeTimeout  = 4 * time.Second
	DefaultBackoffCap       = 5 * time.Minute
	// DefaultWritesPerSecond paces the refresher's Secret writes (see
	// Refresh.WritesPerSecond).
	DefaultWritesPerSecond = 50.0
	// MaxWritesPerSecond bounds refresh.writesPerSecond: above it the pace
	// means nothing (and the limiter's float32 rate would be infinite).
	MaxWritesPerSecond = 10000.0
	MinTokenTTL        = 10 * time.Second
	// MaxServiceAccountSecretPrefix is the longest secretName of an
	// instance with identity serviceAccount: a ServiceAccount's Secret name
	// longer than 253 is cut to 236 characters and a 17-character hash, and
	// the cut must keep "<secretName>-".
	MaxServiceAccountSecretPrefix = 200
)

// AuthType selects where the webhook's AWS credentials come from.
type AuthType string

const (
	// AuthAuto uses EKS Pod Identity when its variables are set, else IRSA,
	// and fails at start when neither is: it never falls back to the node.
	AuthAuto AuthType = "auto"
	// AuthWebIdentity forces IRSA (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE).
	AuthWebIdentity AuthType = "webIdentity"
	// AuthPodIdentity forces EKS Pod Identity
	// (AWS_CONTAINER_CREDENTIALS_FULL_URI, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE).
	AuthPodIdentity AuthType = "podIdentity"
	// AuthDefault uses the AWS SDK's default credential chain (environment
	// keys, shared profile, SSO, container endpoint, instance metadata).
	// Warning: in a pod without IRSA or Pod Identity this is the node's
	// instance role, reached through IMDS, and every opted-in namespace gets
	// the Artifactory user mapped to that role. Use it for local runs, or
	// only when the node role is meant to pull.
	AuthDefault AuthType = "default"
)

// Config is the whole configuration file.
type Config struct {
	// Instances are the Artifactory instances whose images get a pull secret.
	Instances []Instance `json:"instances"`
	AWS       AWS        `json:"aws"`
	// NamespaceLabel is the key=value a namespace must carry to opt in. The
	// value must not be empty: an empty value reads like a missing label.
	NamespaceLabel string `json:"namespaceLabel"`
	// Installation names this installation of the webhook. Its pull Secrets
	// carry it, and it acts only on those: two installations in one cluster
	// never rewrite or delete each other's Secrets. Default
	// DefaultInstallation; a second installation sets its own.
	Installation string `json:"installation"`
	// RetiredSecretNames are pull Secret names no instance uses any more
	// (an instance removed, or its secretName changed). The refresher
	// deletes this installation's managed Secrets of these names in every
	// namespace; the chart grants access to them by name. List a name for
	// one release after retiring it, then drop it.
	RetiredSecretNames []string `json:"retiredSecretNames,omitempty"`
	// PodOptOutLabel is the key=value that makes the webhook skip a pod.
	PodOptOutLabel string `json:"podOptOutLabel"`
	// RefreshThreshold is the fraction of a token's lifetime left at which
	// it is replaced (0 < x < 1).
	RefreshThreshold float64 `json:"refreshThreshold"`
	// RequestTimeout bounds the handling of one admission review.
	RequestTimeout Duration `json:"requestTimeout"`
	// CleanupOnOptOut deletes a namespace's managed pull Secrets when it
	// loses the opt-in label (default true). Unmanaged Secrets are never
	// deleted.
	CleanupOnOptOut *bool `json:"cleanupOnOptOut,omitempty"`
	// BackoffCap is the longest wait between token mints of an instance
	// that keeps failing (exponential backoff with jitter up to it).
	BackoffCap Duration `json:"backoffCap"`
	// ServiceAccounts configures how instances with identity
	// serviceAccount read a pod's ServiceAccount.
	ServiceAccounts ServiceAccounts `json:"serviceAccounts"`
	// ProvisionOnOptIn has the refresher write the pull Secret of every
	// instance with identity webhook in a namespace as soon as it opts in
	// (and in every opted-in namespace at start), so that its first pod is
	// admitted without an exchange or a write and the Secret is there
	// before any pod (default true). Off: a namespace's Secrets are written
	// by the admission of its first pod that needs them.
	ProvisionOnOptIn *bool `json:"provisionOnOptIn,omitempty"`
	// PatchServiceAccounts adds the pull Secrets of identity webhook
	// instances to the imagePullSecrets of an opted-in namespace's default
	// ServiceAccount (default) or of all its ServiceAccounts (all), and
	// removes them at opt-out: the API server's ServiceAccount admission
	// plugin then gives them to pods that name no pull secret even while
	// the webhook is unreachable. none (the default) patches nothing.
	PatchServiceAccounts PatchServiceAccounts `json:"patchServiceAccounts,omitempty"`
	// ExcludeNamespaces are namespaces the webhook never acts in, labelled
	// or not: the refresher writes no Secret there and patches no
	// ServiceAccount. The chart sets them from webhook.excludeNamespaces
	// and its own namespace, the namespaces its webhook configuration
	// never sends.
	ExcludeNamespaces []string `json:"excludeNamespaces,omitempty"`
	// Refresh paces the refresher's rewrites at each token rotation.
	Refresh Refresh `json:"refresh"`
}

// Refresh paces the refresher.
type Refresh struct {
	// WritesPerSecond caps the refresher's writes of managed Secrets
	// (create, update, delete) at this rate (default
	// DefaultWritesPerSecond): at a rotation every managed Secret is
	// rewritten, and the old token stays valid until it expires, so the
	// writes are spread out instead of hitting the API server at once.
	// Admission writes are never paced. The rate must rewrite every
	// managed Secret within a quarter of the smallest refresh window
	// (RotationBudget): checked against the count at start.
	WritesPerSecond float64 `json:"writesPerSecond"`
}

// LoginHost is the first of hosts that is no *.suffix wildcard: the host
// to log in to; "" when all are wildcards.
func LoginHost(hosts []string) string {
	for _, h := range hosts {
		if !strings.HasPrefix(h, "*.") {
			return h
		}
	}
	return ""
}

// OptsIn reports whether a namespace of that name and those labels opts
// in: it carries the opt-in label and is not excluded.
func (c *Config) OptsIn(name string, labels map[string]string) bool {
	key, value, err := SplitLabel(c.NamespaceLabel)
	return err == nil && labels[key] == value && !slices.Contains(c.ExcludeNamespaces, name)
}

// PatchServiceAccounts says which ServiceAccounts get the pull Secrets.
type PatchServiceAccounts string

const (
	PatchNone    PatchServiceAccounts = "none"
	PatchDefault PatchServiceAccounts = "default"
	PatchAll     PatchServiceAccounts = "all"
)

// Provision reports whether namespaces get their Secrets at opt-in.
func (c *Config) Provision() bool { return c.ProvisionOnOptIn == nil || *c.ProvisionOnOptIn }

// Identity says whose AWS credentials sign an instance's exchange.
type Identity string

const (
	// IdentityWebhook signs with the webhook's own AWS identity: every
	// opted-in namespace gets the Artifactory user of that one role.
	IdentityWebhook Identity = "webhook"
	// IdentityServiceAccount signs with the IAM role of the pod's
	// ServiceAccount (IRSA: its eks.amazonaws.com/role-arn annotation),
	// assumed with a token of that ServiceAccount: each workload pulls as
	// its own role's Artifactory user, from a Secret of its own.
	IdentityServiceAccount Identity = "serviceAccount"
)

// Fallback says what a pod gets when its ServiceAccount names no role.
type Fallback string

const (
	// FallbackNone adds no pull secret and warns, naming the ServiceAccount
	// and the missing annotation.
	FallbackNone Fallback = "none"
	// FallbackWebhook uses the webhook's own identity and its Secret.
	FallbackWebhook Fallback = "webhook"
)

// ServiceAccounts configures the reading of pods' ServiceAccounts.
type ServiceAccounts struct {
	// OptInAnnotation, when set, is an annotation a ServiceAccount must
	// carry with the value "true" beside its role annotation for its role
	// to be used, e.g. JFrogExchange (jfrog-credentials-provider's
	// convention). Empty: the role annotation is enough.
	OptInAnnotation string `json:"optInAnnotation,omitempty"`
}

// Annotation names read from ServiceAccounts.
const (
	// RoleARNAnnotation names a ServiceAccount's IAM role (IRSA).
	RoleARNAnnotation = "eks.amazonaws.com/role-arn"
	// RegionalSTSAnnotation is IRSA's eks.amazonaws.com/sts-regional-endpoints;
	// aws-sdk-go-v2 always calls the regional endpoint, so it changes nothing
	// here and is accepted for compatibility.
	RegionalSTSAnnotation = "eks.amazonaws.com/sts-regional-endpoints"
)

// Cleanup reports whether managed Secrets of opted-out namespaces are
// deleted.
func (c *Config) Cleanup() bool { return c.CleanupOnOptOut == nil || *c.CleanupOnOptOut }

// Instance is one Artifactory instance.
type Instance struct {
	// Name identifies the instance in metrics, logs and Secret annotations.
	Name string `json:"name"`
	// URL is the base URL of the platform, e.g. https://example.jfrog.io;
	// https only: the exchange carries AWS session credentials and returns a
	// token. A private CA goes in CABundle.
	URL string `json:"url"`
	// RegistryHosts are the Docker registry hosts served by the instance:
	// host, host:port or *.suffix.
	RegistryHosts []string `json:"registryHosts"`
	// TokenTTL is the lifetime asked for each token (expires_in).
	TokenTTL Duration `json:"tokenTTL"`
	// CABundle is a PEM file trusted for the instance's TLS (optional; the
	// system pool otherwise).
	CABundle string `json:"caBundle,omitempty"`
	// SecretName is the name of the pull Secret written per namespace.
	SecretName string `json:"secretName"`
	// TokenSecretName, when set, is the name of a generic token Secret
	// (type Opaque; keys username, token, url, registry, registries) the
	// refresher writes in every opted-in namespace beside the pull Secret,
	// for tools that call Artifactory themselves (Helm and Flux OCI pulls,
	// pip, npm, Maven). It carries the same token, is refreshed and cleaned
	// up like the pull Secret, and is never patched onto pods. Identity
	// webhook only.
	TokenSecretName string `json:"tokenSecretName,omitempty"`
	// ExchangeTimeout bounds one HTTP exchange with the instance.
	ExchangeTimeout Duration `json:"exchangeTimeout"`
	// Identity is webhook (default) or serviceAccount (see Identity).
	Identity Identity `json:"identity,omitempty"`
	// Fallback is what identity serviceAccount does for a pod whose
	// ServiceAccount names no role (or does not exist): none (default) or
	// webhook. Only with identity serviceAccount.
	Fallback Fallback `json:"fallback,omitempty"`
	// AWS holds the instance's own AWS settings.
	AWS InstanceAWS `json:"aws,omitempty"`
	// Exchange is aws (default: the AWS-signed exchange) or oidc
	// (Artifactory's OIDC token exchange, configured in OIDC).
	Exchange Exchange `json:"exchange,omitempty"`
	// OIDC configures exchange oidc.
	OIDC *OIDC `json:"oidc,omitempty"`
}

// Exchange selects how an instance's tokens are minted.
type Exchange string

const (
	// ExchangeAWS signs sts:GetCallerIdentity for /access/api/v1/aws/token.
	ExchangeAWS Exchange = "aws"
	// ExchangeOIDC trades an OIDC ID token for an access token at
	// /access/api/v1/oidc/token (RFC 8693).
	ExchangeOIDC Exchange = "oidc"
)

// OIDC configures an instance's OIDC token exchange.
type OIDC struct {
	// ProviderName is the OIDC integration configured in Artifactory
	// (required).
	ProviderName string `json:"providerName"`
	// IdentityMappingName, when set, names the one identity mapping
	// Artifactory applies (else it tries them all by priority).
	IdentityMappingName string `json:"identityMappingName,omitempty"`
	// ProjectKey scopes the token to a JFrog project (optional).
	ProjectKey string `json:"projectKey,omitempty"`
	// Audience is the audience of the access token Artifactory issues
	// (optional).
	Audience string `json:"audience,omitempty"`
	// SubjectToken says where the ID token comes from.
	SubjectToken SubjectToken `json:"subjectToken"`
}

// SubjectTokenSource names where an OIDC ID token comes from.
type SubjectTokenSource string

const (
	// SubjectServiceAccount: a TokenRequest for a ServiceAccount — the
	// webhook's own with identity webhook, the pod's with identity
	// serviceAccount.
	SubjectServiceAccount SubjectTokenSource = "serviceAccount"
	// SubjectFile: a projected token file, re-read on every exchange.
	SubjectFile SubjectTokenSource = "file"
	// SubjectGCPMetadata: the GCE/GKE metadata server's identity token.
	SubjectGCPMetadata SubjectTokenSource = "gcpMetadata"
)

// SubjectToken is the source of the ID token of an OIDC exchange.
type SubjectToken struct {
	// Source is serviceAccount (default), file or gcpMetadata.
	Source SubjectTokenSource `json:"source,omitempty"`
	// Audience of the ID token (serviceAccount, gcpMetadata): what the
	// Artifactory OIDC integration expects; default the instance's url.
	Audience string `json:"audience,omitempty"`
	// Path of the token file (file; e.g. Azure workload identity's
	// AZURE_FEDERATED_TOKEN_FILE).
	Path string `json:"path,omitempty"`
}

// ExchangesOIDC reports whether in's tokens come from the OIDC exchange.
func (in Instance) ExchangesOIDC() bool { return in.Exchange == ExchangeOIDC }

// SubjectAudience is the audience of the ID tokens of in's OIDC exchange.
func (in Instance) SubjectAudience() string {
	if in.OIDC != nil && in.OIDC.SubjectToken.Audience != "" {
		return in.OIDC.SubjectToken.Audience
	}
	return in.URL
}

// InstanceAWS holds an instance's own AWS settings.
type InstanceAWS struct {
	// AssumeRole, when set, is a role assumed (sts:AssumeRole) with the
	// resolved identity's credentials — the webhook's or the
	// ServiceAccount's — before signing: role chaining, so that one
	// Artifactory role mapping serves clusters in other accounts.
	AssumeRole *AssumeRole `json:"assumeRole,omitempty"`
}

// AssumeRole is a role to chain to.
type AssumeRole struct {
	RoleARN string `json:"roleARN"`
	// ExternalID is passed to sts:AssumeRole when the role's trust policy
	// asks for one (optional).
	ExternalID string `json:"externalID,omitempty"`
	// SessionName is the role session name (default: that of the
	// identity it chains from, or artifactory-pull-webhook).
	SessionName string `json:"sessionName,omitempty"`
}

// PerServiceAccount reports whether in's tokens are minted per ServiceAccount.
func (in Instance) PerServiceAccount() bool { return in.Identity == IdentityServiceAccount }

// PerServiceAccount reports whether some instance of c mints per
// ServiceAccount.
func (c *Config) PerServiceAccount() bool {
	return slices.ContainsFunc(c.Instances, Instance.PerServiceAccount)
}

// AWS configures the webhook's AWS identity and how it is presented.
type AWS struct {
	// AuthType is auto, webIdentity, podIdentity or default (see AuthDefault
	// for its warning).
	AuthType AuthType `json:"authType"`
	// Region, when set, signs against the regional STS endpoint of that
	// region (and its partition) and adds ?region= to the exchange URL.
	// Empty signs SigV4A with region set "*" against the global endpoint.
	// The AWS SDK clients (IRSA's AssumeRoleWithWebIdentity, the default
	// chain) use the pod's AWS_REGION / AWS_DEFAULT_REGION, and this region
	// only when both are unset.
	Region string `json:"region,omitempty"`
	// STSEndpoint overrides the STS endpoint the AWS SDK calls to get
	// credentials (AssumeRoleWithWebIdentity): VPC endpoints, tests.
	STSEndpoint string `json:"stsEndpoint,omitempty"`
	// SigningEndpoint overrides the STS URL the GetCallerIdentity request
	// is signed for — the endpoint Artifactory replays it to. Leave empty
	// unless Artifactory is set up for a private STS endpoint.
	SigningEndpoint string `json:"signingEndpoint,omitempty"`
}

// Duration is a time.Duration written as "90s", "3h" in YAML.
type Duration struct{ time.Duration }

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := time.ParseDuration(s)
	if err != nil {
		// An UnmarshalTypeError gets the field path added by the decoder.
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("%q (use e.g. 90s, 5m, 3h)", s), Type: reflect.TypeFor[time.Duration]()}
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

// Load reads, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(b)
}

// Parse defaults and validates a configuration document. Unknown fields are
// errors: a misspelt key must not silently fall back to a default.
func Parse(b []byte) (*Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("parsing config: %w", err)
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) applyDefaults() {
	if c.NamespaceLabel == "" {
		c.NamespaceLabel = DefaultNamespaceLabel
	}
	if c.Installation == "" {
		c.Installation = DefaultInstallation
	}
	if c.PodOptOutLabel == "" {
		c.PodOptOutLabel = DefaultPodOptOutLabel
	}
	if c.RefreshThreshold == 0 {
		c.RefreshThreshold = DefaultRefreshThreshold
	}
	if c.RequestTimeout.Duration == 0 {
		c.RequestTimeout.Duration = DefaultRequestTimeout
	}
	if c.AWS.AuthType == "" {
		c.AWS.AuthType = AuthAuto
	}
	if c.BackoffCap.Duration == 0 {
		c.BackoffCap.Duration = DefaultBackoffCap
	}
	if c.Refresh.WritesPerSecond == 0 {
		c.Refresh.WritesPerSecond = DefaultWritesPerSecond
	}
	for i := range c.Instances {
		in := &c.Instances[i]
		if in.SecretName == "" {
			in.SecretName = DefaultSecretName
		}
		if in.Identity == "" {
			in.Identity = IdentityWebhook
		}
		if in.Fallback == "" && in.Identity == IdentityServiceAccount {
			in.Fallback = FallbackNone
		}
		if in.Exchange == "" {
			in.Exchange = ExchangeAWS
		}
		if in.OIDC != nil && in.OIDC.SubjectToken.Source == "" {
			in.OIDC.SubjectToken.Source = SubjectServiceAccount
		}
		if in.TokenTTL.Duration == 0 {
			in.TokenTTL.Duration = DefaultTokenTTL
		}
		if in.ExchangeTimeout.Duration == 0 {
			in.ExchangeTimeout.Duration = min(DefaultExchangeTimeout, c.RequestTimeout.Duration)
		}
		for j, h := range in.RegistryHosts {
			in.RegistryHosts[j] = strings.ToLower(strings.TrimSpace(h))
		}
	}
}

// Validate reports every problem found, each naming its field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if len(c.Instances) == 0 {
		bad("instances", "at least one Artifactory instance is required")
	}
	if k, v, err := SplitLabel(c.NamespaceLabel); err != nil {
		bad("namespaceLabel", "%v", err)
	} else if v == "" {
		// The webhook and refresher compare a namespace's value for the key,
		// where a missing label reads as "": every namespace would opt in.
		bad("namespaceLabel", "%q has an empty value, which namespaces without the label would match too; "+
			"give it a value, e.g. %s=enabled", c.NamespaceLabel, k)
	}
	if _, _, err := SplitLabel(c.PodOptOutLabel); err != nil {
		bad("podOptOutLabel", "%v", err)
	}
	if msgs := validation.IsDNS1123Label(c.Installation); len(msgs) > 0 {
		bad("installation", "%q is not a DNS label: %s", c.Installation, strings.Join(msgs, "; "))
	}
	if c.RefreshThreshold <= 0 || c.RefreshThreshold >= 1 {
		bad("refreshThreshold", "must be between 0 and 1 (exclusive), got %v", c.RefreshThreshold)
	}
	if c.RequestTimeout.Duration < 100*time.Millisecond || c.RequestTimeout.Duration > 25*time.Second {
		bad("requestTimeout", "must be between 100ms and 25s (below the API server's webhook timeout), got %s", c.RequestTimeout)
	}
	if c.BackoffCap.Duration < time.Second || c.BackoffCap.Duration > time.Hour {
		bad("backoffCap", "must be between 1s and 1h, got %s", c.BackoffCap)
	}
	if w := c.Refresh.WritesPerSecond; w <= 0 || w > MaxWritesPerSecond || math.IsNaN(w) {
		bad("refresh.writesPerSecond", "must be a positive number up to %v, got %v", MaxWritesPerSecond, w)
	}
	switch c.AWS.AuthType {
	case AuthAuto, AuthWebIdentity, AuthPodIdentity, AuthDefault:
	default:
		bad("aws.authType", "must be auto, webIdentity, podIdentity or default, got %q", c.AWS.AuthType)
	}
	for field, v := range map[string]string{"aws.stsEndpoint": c.AWS.STSEndpoint, "aws.signingEndpoint": c.AWS.SigningEndpoint} {
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad(field, "must be an http(s) URL, got %q", v)
		}
	}
	if r := c.AWS.Region; r != "" && len(validation.IsDNS1123Label(r)) > 0 {
		bad("aws.region", "%q is not a region name", r)
	}
	names := map[string]bool{}
	secrets := map[string]string{}
	hosts := map[string]string{}
	for i, in := range c.Instances {
		f := fmt.Sprintf("instances[%d]", i)
		if in.Name == "" {
			bad(f+".name", "is required")
		} else if len(validation.IsDNS1123Label(in.Name)) > 0 {
			bad(f+".name", "%q must be a DNS label (lowercase letters, digits, '-')", in.Name)
		} else if names[in.Name] {
			bad(f+".name", "%q is used by another instance", in.Name)
		}
		names[in.Name] = true
		if u, err := url.Parse(in.URL); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			bad(f+".url", "must be an https URL such as https://example.jfrog.io, got %q", in.URL)
		} else if u.Scheme != "https" {
			bad(f+".url", "must use https, got %q: the token exchange carries AWS session credentials and returns "+
				"an access token; for a private CA set %s.caBundle", in.URL, f)
		} else if u.RawQuery != "" || u.Fragment != "" {
			bad(f+".url", "must not carry a query or fragment, got %q", in.URL)
		}
		if len(in.RegistryHosts) == 0 {
			bad(f+".registryHosts", "at least one registry host is required")
		}
		for j, h := range in.RegistryHosts {
			hf := fmt.Sprintf("%s.registryHosts[%d]", f, j)
			if err := ValidHost(h); err != nil {
				bad(hf, "%v", err)
			} else if other, dup := hosts[h]; dup {
				bad(hf, "%q is already a host of instance %q", h, other)
			}
			hosts[h] = in.Name
		}
		if in.TokenTTL.Duration < MinTokenTTL {
			bad(f+".tokenTTL", "must be at least %s, got %s", MinTokenTTL, in.TokenTTL)
		} else if refresh := c.RefreshWindow(in); refresh < c.RequestTimeout.Duration {
			bad(f+".tokenTTL", "%s leaves %s to refresh a token (refreshThreshold %v), less than requestTimeout %s; raise tokenTTL",
				in.TokenTTL, refresh, c.RefreshThreshold, c.RequestTimeout)
		} else if refresh <= c.BackoffCap.Duration {
			bad(f+".tokenTTL", "%s leaves %s to refresh a token (refreshThreshold %v), not more than backoffCap %s: "+
				"a failed refresh might not be retried before the token expires; raise tokenTTL or lower backoffCap",
				in.TokenTTL, refresh, c.RefreshThreshold, c.BackoffCap)
		}
		if w := c.Refresh.WritesPerSecond; w > 0 && w <= MaxWritesPerSecond && in.TokenTTL.Duration >= MinTokenTTL {
			// The least a rate must do: write one Secret within the budget.
			if budget := c.RefreshWindow(in) / RotationShare; secondsPer(1, w) > budget {
				bad("refresh.writesPerSecond", "%v writes one Secret every %s, more than a quarter (%s) of the %s between refresh "+
					"point and expiry of %s; set refresh.writesPerSecond to at least %s", w, Seconds(secondsPer(1, w)), Seconds(budget),
					ShortDuration(c.RefreshWindow(in)), f, formatRate(NeededRate(1, budget)))
			}
		}
		if in.ExchangeTimeout.Duration <= 0 || in.ExchangeTimeout.Duration > c.RequestTimeout.Duration {
			bad(f+".exchangeTimeout", "must be positive and at most requestTimeout (%s), got %s", c.RequestTimeout, in.ExchangeTimeout)
		}
		if len(validation.IsDNS1123Subdomain(in.SecretName)) > 0 {
			bad(f+".secretName", "%q is not a valid Secret name", in.SecretName)
		} else if other, dup := secrets[in.SecretName]; dup {
			bad(f+".secretName", "%q is already used by instance %q; give each instance its own secretName", in.SecretName, other)
		}
		secrets[in.SecretName] = in.Name
		if in.TokenSecretName != "" {
			switch other, dup := secrets[in.TokenSecretName]; {
			case len(validation.IsDNS1123Subdomain(in.TokenSecretName)) > 0:
				bad(f+".tokenSecretName", "%q is not a valid Secret name", in.TokenSecretName)
			case dup:
				bad(f+".tokenSecretName", "%q is already used by instance %q; give each Secret its own name", in.TokenSecretName, other)
			case in.Identity == IdentityServiceAccount:
				bad(f+".tokenSecretName", "applies only to identity %s: a ServiceAccount's token is for its own pods", IdentityWebhook)
			case LoginHost(in.RegistryHosts) == "":
				bad(f+".tokenSecretName", "needs a registry host that is no wildcard (the token Secret's registry key)")
			}
			secrets[in.TokenSecretName] = in.Name
		}
		switch in.Identity {
		case IdentityWebhook:
			if in.Fallback != "" {
				bad(f+".fallback", "applies only to identity %s; remove it or set identity: %s", IdentityServiceAccount, IdentityServiceAccount)
			}
		case IdentityServiceAccount:
			if in.Fallback != FallbackNone && in.Fallback != FallbackWebhook {
				bad(f+".fallback", "must be none or webhook, got %q", in.Fallback)
			}
		default:
			bad(f+".identity", "must be webhook or serviceAccount, got %q", in.Identity)
		}
		switch in.Exchange {
		case ExchangeAWS:
			if in.OIDC != nil {
				bad(f+".oidc", "applies only to exchange: oidc")
			}
		case ExchangeOIDC:
			validateOIDC(f, in, bad)
		default:
			bad(f+".exchange", "must be aws or oidc, got %q", in.Exchange)
		}
		if ar := in.AWS.AssumeRole; ar != nil {
			if in.Exchange == ExchangeOIDC {
				bad(f+".aws.assumeRole", "applies only to exchange: aws")
			}
			if !credentials.RoleARNPattern.MatchString(ar.RoleARN) {
				bad(f+".aws.assumeRole.roleARN", "%q is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)", ar.RoleARN)
			}
			if n := len(ar.ExternalID); n > 0 && (n < 2 || n > 1224 || !externalID.MatchString(ar.ExternalID)) {
				bad(f+".aws.assumeRole.externalID", "must be 2 to 1224 of letters, digits and +=,.@:/-")
			}
			if n := len(ar.SessionName); n > 0 && (n < 2 || n > 64 || !sessionName.MatchString(ar.SessionName)) {
				bad(f+".aws.assumeRole.sessionName", "%q must be 2 to 64 of letters, digits and +=,.@-", ar.SessionName)
			}
		}
		if in.CABundle != "" {
			if _, err := os.Stat(in.CABundle); err != nil {
				bad(f+".caBundle", "%v", err)
			}
		}
	}
	// A ServiceAccount's Secret is named <secretName>-<serviceAccount>: no
	// other configured name may start with that prefix, or one
	// ServiceAccount's Secret would be another instance's.
	for i, in := range c.Instances {
		if !in.PerServiceAccount() {
			continue
		}
		prefix := in.SecretName + "-"
		if len(in.SecretName) > MaxServiceAccountSecretPrefix {
			bad(fmt.Sprintf("instances[%d].secretName", i), "%q is %d characters: with identity serviceAccount at most %d, so that "+
				"every ServiceAccount's Secret name, cut to 253 with a hash, still starts with %q (the chart's policy admits that prefix only)",
				in.SecretName, len(in.SecretName), MaxServiceAccountSecretPrefix, "<secretName>-")
		}
		for _, other := range append(slices.Sorted(maps.Keys(secrets)), c.RetiredSecretNames...) {
			if strings.HasPrefix(other, prefix) {
				bad(fmt.Sprintf("instances[%d].secretName", i), "%q: identity serviceAccount names Secrets %s<serviceAccount>, "+
					"which %q could be; give one of them another name", in.SecretName, prefix, other)
			}
		}
	}
	switch c.PatchServiceAccounts {
	case "", PatchNone:
	case PatchDefault, PatchAll:
		// Its books on a ServiceAccount are the annotation
		// artifactory-pull-webhook/image-pull-secrets-<installation>.
		if c.Installation != DefaultInstallation && len(c.Installation) > 44 {
			bad("installation", "%q is %d characters: with patchServiceAccounts at most 44, so that its annotation "+
				"artifactory-pull-webhook/image-pull-secrets-<installation> is a valid name", c.Installation, len(c.Installation))
		}
	default:
		bad("patchServiceAccounts", "must be none, default or all, got %q", c.PatchServiceAccounts)
	}
	if k := c.ServiceAccounts.OptInAnnotation; k != "" {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			bad("serviceAccounts.optInAnnotation", "%q is not an annotation name: %s", k, strings.Join(msgs, "; "))
		}
	}
	for i, name := range c.RetiredSecretNames {
		f := fmt.Sprintf("retiredSecretNames[%d]", i)
		if len(validation.IsDNS1123Subdomain(name)) > 0 {
			bad(f, "%q is not a valid Secret name", name)
		} else if other, used := secrets[name]; used {
			bad(f, "%q is a Secret name of instance %q: a retired name must not be in use", name, other)
		} else if slices.Contains(c.RetiredSecretNames[:i], name) {
			bad(f, "%q is listed twice", name)
		}
	}
	return errors.Join(errs...)
}

// validateOIDC checks the oidc block of in, an instance of exchange oidc.
func validateOIDC(f string, in Instance, bad func(field, format string, args ...any)) {
	o := in.OIDC
	if o == nil || o.ProviderName == "" {
		bad(f+".oidc.providerName", "is required with exchange: oidc (the OIDC integration's name in Artifactory)")
		return
	}
	st := o.SubjectToken
	switch st.Source {
	case SubjectServiceAccount:
		if st.Path != "" {
			bad(f+".oidc.subjectToken.path", "applies only to source: file")
		}
	case SubjectFile, SubjectGCPMetadata:
		if in.PerServiceAccount() {
			bad(f+".oidc.subjectToken.source", "%s gives one token for the whole webhook: identity serviceAccount needs source serviceAccount", st.Source)
		}
		if st.Source == SubjectFile && st.Path == "" {
			bad(f+".oidc.subjectToken.path", "is required with source: file")
		}
		if st.Source == SubjectFile && st.Audience != "" {
			bad(f+".oidc.subjectToken.audience", "is the file's own (set where it is projected), not configurable with source: file")
		}
		if st.Source == SubjectGCPMetadata && st.Path != "" {
			bad(f+".oidc.subjectToken.path", "applies only to source: file")
		}
	default:
		bad(f+".oidc.subjectToken.source", "must be serviceAccount, file or gcpMetadata, got %q", st.Source)
	}
}

// What STS accepts as an external ID and a role session name.
var (
	externalID  = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
	sessionName = regexp.MustCompile(`^[\w+=,.@-]+$`)
)

// RefreshWindow is the time between a token of inst becoming due for refresh
// and its expiry: tokenTTL × refreshThreshold.
func (c *Config) RefreshWindow(inst Instance) time.Duration {
	return time.Duration(float64(inst.TokenTTL.Duration) * c.RefreshThreshold)
}

// RotationShare: a rotation of every managed Secret must fit in
// 1/RotationShare of the refresh window, leaving the rest for retries
// (failed writes, a failed mint, a leader change) before the old token
// expires.
const RotationShare = 4

// RotationBudget is the longest a rotation may take: a quarter of the
// smallest refresh window among the instances, and that window.
func (c *Config) RotationBudget() (budget, window time.Duration) {
	for i, in := range c.Instances {
		if w := c.RefreshWindow(in); i == 0 || w < window {
			window = w
		}
	}
	return window / RotationShare, window
}

// RotationDuration is how long refresh.writesPerSecond takes to rewrite
// managed Secrets.
func (c *Config) RotationDuration(managed int) time.Duration {
	return secondsPer(managed, c.Refresh.WritesPerSecond)
}

// CheckRotation reports a refresh.writesPerSecond too low to rewrite the
// managed Secrets (their count) within RotationBudget, naming the rate
// that would be needed. The refresher writes them in the order their
// tokens become due, one rotation after the other: the whole count, not
// one instance's, must fit in the smallest window's budget.
func (c *Config) CheckRotation(managed int) error {
	budget, window := c.RotationBudget()
	took := c.RotationDuration(managed)
	if took <= budget {
		return nil
	}
	return fmt.Errorf("refresh.writesPerSecond %v rotates %d managed Secrets in %s, more than a quarter (%s) of the %s "+
		"between refresh point and expiry; set refresh.writesPerSecond to at least %s",
		c.Refresh.WritesPerSecond, managed, Seconds(took), Seconds(budget), ShortDuration(window),
		formatRate(NeededRate(managed, budget)))
}

// NeededRate is the lowest whole (or, below 1, tenth of a) writes per
// second that writes n Secrets within budget.
func NeededRate(n int, budget time.Duration) float64 {
	if budget <= 0 {
		return math.Inf(1)
	}
	r := float64(n) / budget.Seconds()
	if r < 1 {
		return math.Ceil(r*10) / 10
	}
	return math.Ceil(r)
}

// Seconds writes d in seconds, to the millisecond: "800s", "0.25s".
func Seconds(d time.Duration) string {
	return strconv.FormatFloat(math.Round(d.Seconds()*1000)/1000, 'f', -1, 64) + "s"
}

// ShortDuration is d.String() without zero trailing units: "45m", "3h".
func ShortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func formatRate(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }

// secondsPer is the time n writes take at rate per second, at most the
// longest time.Duration (a tiny rate must not overflow into a negative
// duration that passes every check).
func secondsPer(n int, rate float64) time.Duration {
	d := float64(n) / rate * float64(time.Second)
	if d >= math.MaxInt64 || math.IsNaN(d) {
		return math.MaxInt64
	}
	return time.Duration(d)
}

// CheckFailover reports instances whose tokens would expire before a
// replica takes over refreshing from a dead leader: the refresh window must
// exceed the leader election's lease duration plus requestTimeout. It is
// checked at start when leader election is on.
func (c *Config) CheckFailover(leaseDuration time.Duration) error {
	var errs []error
	for i, in := range c.Instances {
		if w := c.RefreshWindow(in); w <= leaseDuration+c.RequestTimeout.Duration {
			errs = append(errs, fmt.Errorf("instances[%d].tokenTTL: %s leaves %s to refresh a token (refreshThreshold %v), "+
				"not more than the leader election lease duration %s plus requestTimeout %s: a token could expire before "+
				"another replica takes over refreshing; raise tokenTTL or shorten the lease", i, in.TokenTTL, w,
				c.RefreshThreshold, leaseDuration, c.RequestTimeout))
		}
	}
	return errors.Join(errs...)
}

// ValidHost checks a registry host pattern: host, host:port or *.suffix.
func ValidHost(h string) error {
	name := strings.TrimPrefix(h, "*.")
	if strings.Contains(name, "*") {
		return fmt.Errorf("%q: a wildcard is only allowed as a leading \"*.\"", h)
	}
	if strings.ContainsAny(name, "/@ ") || name == "" {
		return fmt.Errorf("%q is not a registry host (write host or host:port, without scheme or path)", h)
	}
	host := name
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		host = name[:i]
		port := name[i+1:]
		if port == "" || strings.Trim(port, "0123456789") != "" {
			return fmt.Errorf("%q has an invalid port", h)
		}
	}
	// localhost and dotted IPv4 addresses are valid subdomains too.
	if len(validation.IsDNS1123Subdomain(host)) > 0 {
		return fmt.Errorf("%q is not a valid host name", h)
	}
	return nil
}

// SplitLabel splits "key=value" into its parts and validates them.
func SplitLabel(kv string) (key, value string, err error) {
	key, value, ok := strings.Cut(kv, "=")
	if !ok {
		return "", "", fmt.Errorf("%q must be key=value", kv)
	}
	if errs := validation.IsQualifiedName(key); len(errs) > 0 {
		return "", "", fmt.Errorf("label key %q: %s", key, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(value); len(errs) > 0 {
		return "", "", fmt.Errorf("label value %q: %s", value, strings.Join(errs, "; "))
	}
	return key, value, nil
}

// Instance returns the instance with the given name.
func (c *Config) Instance(name string) (Instance, bool) {
	for _, in := range c.Instances {
		if in.Name == name {
			return in, true
		}
	}
	return Instance{}, false
}
