package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// envPrefix names the environment variable of each flag: --token-ttl is
// ARTIFACTORY_PROVIDER_TOKEN_TTL. Kubelet's CredentialProviderConfig gives
// a plugin args and env; either works, a flag wins.
const envPrefix = "ARTIFACTORY_PROVIDER_"

// Identities the plugin exchanges as.
const (
	// identityNode is the node's own AWS identity (the SDK's default chain:
	// the instance role through IMDS, unless --auth-type says otherwise) or,
	// with the OIDC exchange, the ID token of --oidc-token-file.
	identityNode = "node"
	// identityServiceAccount is the pod's ServiceAccount, from the token
	// and annotations kubelet sends in its service-account-token mode
	// (tokenAttributes in the CredentialProviderConfig).
	identityServiceAccount = "serviceAccount"
)

// DefaultCacheDir holds the on-disk token cache.
const DefaultCacheDir = "/var/lib/kubelet/artifactory-credential-provider"

// options is the plugin's configuration.
type options struct {
	URL             string
	Registries      []string
	Exchange        config.Exchange
	Identity        string
	AuthType        credentials.AuthType
	Region          string
	STSEndpoint     string
	SigningEndpoint string
	AssumeRole      string
	ExternalID      string
	TokenTTL        time.Duration
	Refresh         float64
	Timeout         time.Duration
	CABundle        string
	CacheDir        string
	OptIn           string

	OIDCProvider, OIDCMapping, OIDCProject, OIDCAudience, OIDCTokenFile string
}

// flagSet binds o's flags; parseOptions reads them.
func (o *options) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("artifactory-credential-provider", flag.ContinueOnError)
	fs.StringVar(&o.URL, "url", "", "Artifactory base URL, https (required)")
	fs.Func("registry", "registry host the token is for: host, host:port or *.suffix; repeat or separate with commas (default: the host of --url)",
		func(v string) error {
			for _, h := range strings.Split(v, ",") {
				if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
					o.Registries = append(o.Registries, h)
				}
			}
			return nil
		})
	o.Exchange = config.ExchangeAWS
	fs.Func("exchange", "aws (the AWS-signed exchange, default) or oidc (Artifactory's OIDC token exchange)", func(v string) error {
		o.Exchange = config.Exchange(v)
		return nil
	})
	fs.StringVar(&o.Identity, "identity", identityNode, "node (the node's identity) or serviceAccount (the pod's, from kubelet's service-account-token mode)")
	o.AuthType = credentials.AuthDefault
	fs.Func("auth-type", "where the node's AWS credentials come from: default (the AWS SDK's default chain: the instance role via IMDS; default), auto, webIdentity or podIdentity",
		func(v string) error {
			o.AuthType = credentials.AuthType(v)
			return nil
		})
	fs.StringVar(&o.Region, "region", "", "sign for this region's STS endpoint and add ?region= (default: SigV4A for all regions against the global endpoint)")
	fs.StringVar(&o.STSEndpoint, "sts-endpoint", "", "STS endpoint the AWS SDK calls for credentials (VPC endpoints)")
	fs.StringVar(&o.SigningEndpoint, "signing-endpoint", "", "STS URL the exchange is signed for (only when Artifactory replays to a private endpoint)")
	fs.StringVar(&o.AssumeRole, "assume-role", "", "IAM role ARN assumed (sts:AssumeRole) on top of the identity before signing")
	fs.StringVar(&o.ExternalID, "assume-role-external-id", "", "external ID of --assume-role")
	fs.DurationVar(&o.TokenTTL, "token-ttl", config.DefaultTokenTTL, "lifetime asked for each Artifactory token")
	fs.Float64Var(&o.Refresh, "refresh-threshold", config.DefaultRefreshThreshold, "fraction of a token's lifetime left at which a new one is minted")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Second, "bound of one invocation (kubelet stops a plugin after a minute)")
	fs.StringVar(&o.CABundle, "ca-bundle", "", "PEM file trusted for Artifactory's TLS (default: the system roots)")
	fs.StringVar(&o.CacheDir, "cache-dir", DefaultCacheDir, "directory of the on-disk token cache; empty: no disk cache")
	fs.StringVar(&o.OptIn, "opt-in-annotation", "", "serviceAccount identity: a ServiceAccount annotation that must be \"true\" beside its role (e.g. JFrogExchange; kubelet must send it)")
	fs.StringVar(&o.OIDCProvider, "oidc-provider-name", "", "oidc: the OIDC integration configured in Artifactory (required)")
	fs.StringVar(&o.OIDCMapping, "oidc-identity-mapping", "", "oidc: the one identity mapping to apply")
	fs.StringVar(&o.OIDCProject, "oidc-project-key", "", "oidc: the JFrog project the token is scoped to")
	fs.StringVar(&o.OIDCAudience, "oidc-audience", "", "oidc: the audience of the access token")
	fs.StringVar(&o.OIDCTokenFile, "oidc-token-file", "", "oidc with identity node: file holding the node's ID token, re-read on every exchange")
	return fs
}

// envName is the environment variable of flag name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseOptions reads args, then the environment for each flag args did not
// set, and validates the result. Errors name the flag and its variable.
func parseOptions(args []string, getenv func(string) string) (options, error) {
	var o options
	fs := o.flagSet()
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (the request comes on stdin)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" && !set[f.Name] {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", envName(f.Name), err))
			}
		}
	})
	if len(errs) > 0 {
		return o, errors.Join(errs...)
	}
	return o, o.validate()
}

// validate checks o, naming the flag (and its variable) at fault.
func (o *options) validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s (%s): %s", name, envName(name), fmt.Sprintf(format, args...)))
	}
	u, err := url.Parse(o.URL)
	switch {
	case o.URL == "":
		bad("url", "the Artifactory base URL is required")
	case err != nil || u.Host == "" || u.Scheme != "https" || u.User != nil:
		bad("url", "%q is not an absolute https URL without credentials", o.URL)
	case len(o.Registries) == 0:
		o.Registries = []string{strings.ToLower(u.Host)}
	}
	for _, h := range o.Registries {
		if err := config.ValidHost(h); err != nil {
			bad("registry", "%v", err)
		}
	}
	if o.Identity != identityNode && o.Identity != identityServiceAccount {
		bad("identity", "%q is neither node nor serviceAccount", o.Identity)
	}
	switch o.Exchange {
	case config.ExchangeAWS:
		switch o.AuthType {
		case credentials.AuthDefault, credentials.AuthAuto, credentials.AuthWebIdentity, credentials.AuthPodIdentity:
		default:
			bad("auth-type", "%q is not one of default, auto, webIdentity, podIdentity", o.AuthType)
		}
		if o.Region != "" && !credentials.ValidRegion(o.Region) {
			bad("region", "%q is not an AWS region name (like eu-west-1)", o.Region)
		}
		if o.AssumeRole != "" && !credentials.RoleARNPattern.MatchString(o.AssumeRole) {
			bad("assume-role", "%q is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)", o.AssumeRole)
		}
		if o.ExternalID != "" && o.AssumeRole == "" {
			bad("assume-role-external-id", "needs --assume-role")
		}
		for name, v := range map[string]string{"oidc-provider-name": o.OIDCProvider, "oidc-token-file": o.OIDCTokenFile} {
			if v != "" {
				bad(name, "only with --exchange oidc")
			}
		}
	case config.ExchangeOIDC:
		if o.OIDCProvider == "" {
			bad("oidc-provider-name", "required with --exchange oidc")
		}
		switch {
		case o.Identity == identityNode && o.OIDCTokenFile == "":
			bad("oidc-token-file", "required with --exchange oidc and --identity node (with --identity serviceAccount kubelet sends the pod's token)")
		case o.Identity == identityServiceAccount && o.OIDCTokenFile != "":
			bad("oidc-token-file", "only with --identity node: with serviceAccount the pod's token is exchanged")
		}
		if o.AssumeRole != "" {
			bad("assume-role", "only with --exchange aws")
		}
	default:
		bad("exchange", "%q is neither aws nor oidc", o.Exchange)
	}
	if o.OptIn != "" && (o.Identity != identityServiceAccount || o.Exchange != config.ExchangeAWS) {
		bad("opt-in-annotation", "only with --identity serviceAccount and --exchange aws")
	}
	if o.TokenTTL < config.MinTokenTTL || o.TokenTTL%time.Second != 0 {
		bad("token-ttl", "%s: whole seconds, at least %s", o.TokenTTL, config.MinTokenTTL)
	}
	if o.Refresh <= 0 || o.Refresh >= 1 {
		bad("refresh-threshold", "%v is not between 0 and 1", o.Refresh)
	}
	if o.Timeout < time.Second || o.Timeout > 55*time.Second {
		bad("timeout", "%s is not between 1s and 55s (kubelet stops a plugin after a minute)", o.Timeout)
	}
	return errors.Join(errs...)
}
