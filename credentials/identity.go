package credentials

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// AuthType selects where the process's AWS credentials come from.
type AuthType string

const (
	// AuthAuto uses EKS Pod Identity when its environment is present, else
	// IRSA web identity, and fails otherwise: it never falls back to the
	// SDK's default chain, whose last resort in a pod is the node's instance
	// role (IMDS), shared by every workload on the node.
	AuthAuto AuthType = "auto"
	// AuthWebIdentity forces IRSA: AssumeRoleWithWebIdentity with the
	// projected service account token.
	AuthWebIdentity AuthType = "webIdentity"
	// AuthPodIdentity forces EKS Pod Identity: the agent's credentials endpoint.
	AuthPodIdentity AuthType = "podIdentity"
	// AuthDefault uses aws-sdk-go-v2's default chain (environment keys,
	// shared config and SSO, container endpoint, then IMDS). In a pod without
	// IRSA or Pod Identity that is the node's instance role, and every
	// opted-in namespace gets the Artifactory user mapped to it: choose it
	// only on purpose (local runs, or a node role meant for pulling).
	AuthDefault AuthType = "default"
)

// Environment variables injected by EKS (IRSA and Pod Identity) and by the
// kubelet into every pod.
const (
	envRoleARN            = "AWS_ROLE_ARN"
	envWebIdentityFile    = "AWS_WEB_IDENTITY_TOKEN_FILE"
	envRoleSessionName    = "AWS_ROLE_SESSION_NAME"
	envContainerURI       = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
	envContainerTokenFile = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
	envAWSRegion          = "AWS_REGION"
	envDefaultRegion      = "AWS_DEFAULT_REGION"
	envKubernetesHost     = "KUBERNETES_SERVICE_HOST"
)

const (
	defaultSTSRegion       = "us-east-1"
	defaultRoleSessionName = "artifactory-pull-webhook"
)

// AWSOptions configures AWSCredentials.
type AWSOptions struct {
	AuthType AuthType
	// Region is the fallback region of the AWS clients (the STS client of
	// AssumeRoleWithWebIdentity, the default chain) when the environment
	// names none: AWS_REGION, then AWS_DEFAULT_REGION win, as in the SDK's
	// own resolution, because the pod's region is the one whose STS endpoint
	// (and VPC endpoint) it can reach. Last resort us-east-1.
	Region string
	// STSEndpoint overrides the STS endpoint used for
	// AssumeRoleWithWebIdentity, e.g. http://127.0.0.1:1234.
	STSEndpoint string
	// HTTPClient is used to reach STS or the Pod Identity agent; the SDK's
	// default client when nil.
	HTTPClient *http.Client
	// InCluster reports whether the process runs in a Kubernetes pod; it
	// only shapes the advice of the error auto gives without IRSA or Pod
	// Identity. Nil: KUBERNETES_SERVICE_HOST is set.
	InCluster func() bool
}

// AWSSource is where AWSCredentials takes the process's credentials from.
type AWSSource struct {
	// Kind is AuthPodIdentity, AuthWebIdentity or AuthDefault.
	Kind AuthType
	// Why says what chose it: the authType, and for auto the variables
	// found. It names variables and the role ARN, never a token.
	Why string
}

// String names the source as errors and the check command do.
func (s AWSSource) String() string {
	switch s.Kind {
	case AuthPodIdentity:
		return "EKS Pod Identity agent"
	case AuthWebIdentity:
		return "IRSA (sts:AssumeRoleWithWebIdentity)"
	}
	return "the AWS SDK default chain"
}

// ResolveAWSSource says which source o.AuthType resolves to here, and why;
// auto fails, naming both pairs of variables, when neither Pod Identity
// nor IRSA is configured.
func ResolveAWSSource(o AWSOptions) (AWSSource, error) {
	switch o.AuthType {
	case AuthPodIdentity, AuthWebIdentity, AuthDefault:
		return AWSSource{Kind: o.AuthType, Why: "authType " + string(o.AuthType)}, nil
	case AuthAuto, "":
		switch {
		case os.Getenv(envContainerURI) != "" && os.Getenv(envContainerTokenFile) != "":
			return AWSSource{Kind: AuthPodIdentity, Why: fmt.Sprintf("authType auto: %s and %s are set",
				envContainerURI, envContainerTokenFile)}, nil
		case os.Getenv(envRoleARN) != "" && os.Getenv(envWebIdentityFile) != "":
			return AWSSource{Kind: AuthWebIdentity, Why: fmt.Sprintf("authType auto: %s (%s) and %s are set",
				envRoleARN, os.Getenv(envRoleARN), envWebIdentityFile)}, nil
		}
		return AWSSource{}, autoWithoutIdentity(o)
	}
	return AWSSource{}, fmt.Errorf("unknown authType %q (want auto, webIdentity, podIdentity or default)", o.AuthType)
}

// AWSCredentials returns a cached provider of the process's AWS credentials,
// chosen by o.AuthType (ResolveAWSSource). An explicit AuthType fails at
// once, naming the variable, when its environment is incomplete; auto
// fails, naming both pairs of variables, when neither Pod Identity nor
// IRSA is configured. Its errors name the source.
func AWSCredentials(ctx context.Context, o AWSOptions) (aws.CredentialsProvider, error) {
	src, err := ResolveAWSSource(o)
	if err != nil {
		return nil, err
	}
	var p aws.CredentialsProvider
	switch src.Kind {
	case AuthPodIdentity:
		p, err = podIdentity(o)
	case AuthWebIdentity:
		p, err = webIdentity(o)
	default:
		p, err = defaultChain(ctx, o)
	}
	if err != nil {
		return nil, err
	}
	if c, ok := p.(*aws.CredentialsCache); ok {
		return sourced{c, src}, nil // the default chain comes cached already
	}
	return aws.NewCredentialsCache(sourced{p, src}), nil
}

// sourced names its source in the errors of a credentials provider, so
// that a failed exchange says which identity failed.
type sourced struct {
	aws.CredentialsProvider
	src AWSSource
}

func (s sourced) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := s.CredentialsProvider.Retrieve(ctx)
	if err != nil {
		return c, fmt.Errorf("%s: %w", s.src, err)
	}
	return c, nil
}

// autoWithoutIdentity is auto's error when neither IRSA nor Pod Identity is
// configured. It fails wherever it runs, so that one config file means one
// identity on a laptop and in a pod alike; the advice depends on where.
func autoWithoutIdentity(o AWSOptions) error {
	pair := func(a, b string) string {
		switch va, vb := os.Getenv(a) != "", os.Getenv(b) != ""; {
		case va && !vb:
			return fmt.Sprintf("%s and %s (only %s is set)", a, b, a)
		case vb && !va:
			return fmt.Sprintf("%s and %s (only %s is set)", a, b, b)
		default:
			return fmt.Sprintf("%s and %s", a, b)
		}
	}
	inCluster := o.InCluster
	if inCluster == nil {
		inCluster = func() bool { return os.Getenv(envKubernetesHost) != "" }
	}
	msg := fmt.Sprintf("authType %s: neither EKS Pod Identity (%s) nor IRSA (%s) is configured",
		AuthAuto, pair(envContainerURI, envContainerTokenFile), pair(envRoleARN, envWebIdentityFile))
	if inCluster() {
		return errors.New(msg + "; give this pod's ServiceAccount an IAM role (an EKS Pod Identity association, " +
			"or the eks.amazonaws.com/role-arn annotation for IRSA) and restart the pod. auto does not fall back to " +
			"the AWS SDK default chain, which here would reach the node's instance role through IMDS and hand the " +
			"Artifactory user mapped to it to every namespace; set authType " + string(AuthDefault) + " only if that is intended")
	}
	return errors.New(msg + "; outside a cluster set authType " + string(AuthDefault) +
		" to use the AWS SDK default chain (environment keys, shared profile, SSO, instance role)")
}

// envRegion is the region the environment names, in the SDK's order.
func envRegion() string {
	if r := os.Getenv(envAWSRegion); r != "" {
		return r
	}
	return os.Getenv(envDefaultRegion)
}

// requireEnv returns the values of names, or an error naming the first unset.
func requireEnv(authType AuthType, names ...string) ([]string, error) {
	values := make([]string, len(names))
	for i, n := range names {
		if values[i] = os.Getenv(n); values[i] == "" {
			return nil, fmt.Errorf("authType %s: %s is not set", authType, n)
		}
	}
	return values, nil
}

func webIdentity(o AWSOptions) (aws.CredentialsProvider, error) {
	env, err := requireEnv(AuthWebIdentity, envRoleARN, envWebIdentityFile)
	if err != nil {
		return nil, err
	}
	client := stsClient(o)
	session := os.Getenv(envRoleSessionName)
	if session == "" {
		session = defaultRoleSessionName
	}
	// IdentityTokenFile re-reads the file on each fetch: projected tokens rotate.
	return stscreds.NewWebIdentityRoleProvider(client, env[0], stscreds.IdentityTokenFile(env[1]),
		func(wo *stscreds.WebIdentityRoleOptions) { wo.RoleSessionName = session }), nil
}

// stsClient calls AssumeRoleWithWebIdentity at the STS endpoint of the
// pod's region (AWS_REGION, AWS_DEFAULT_REGION, then o.Region, then
// us-east-1), or at o.STSEndpoint when set.
func stsClient(o AWSOptions) *sts.Client {
	region := cmp.Or(envRegion(), o.Region, defaultSTSRegion)
	return sts.New(sts.Options{Region: region}, func(so *sts.Options) {
		if o.STSEndpoint != "" {
			so.BaseEndpoint = aws.String(o.STSEndpoint)
		}
		if o.HTTPClient != nil {
			so.HTTPClient = o.HTTPClient
		}
	})
}

func podIdentity(o AWSOptions) (aws.CredentialsProvider, error) {
	env, err := requireEnv(AuthPodIdentity, envContainerURI, envContainerTokenFile)
	if err != nil {
		return nil, err
	}
	endpoint, tokenFile := env[0], env[1]
	if err := checkContainerEndpoint(endpoint); err != nil {
		return nil, fmt.Errorf("authType %s: %s: %w", AuthPodIdentity, envContainerURI, err)
	}
	return endpointcreds.New(endpoint, func(eo *endpointcreds.Options) {
		if o.HTTPClient != nil {
			eo.HTTPClient = o.HTTPClient
		}
		// Read on every fetch: the projected token rotates.
		eo.AuthorizationTokenProvider = endpointcreds.TokenProviderFunc(func() (string, error) {
			b, err := os.ReadFile(tokenFile)
			if err != nil {
				return "", fmt.Errorf("read Pod Identity token: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		})
	}), nil
}

// checkContainerEndpoint allows https anywhere and plain http only to
// loopback or the EKS/ECS link-local agents, as aws-sdk-go-v2 does: the
// token must not travel in clear to an arbitrary host.
func checkContainerEndpoint(endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return fmt.Errorf("invalid URL: %w", err)
	}
	if u.Hostname() == "" {
		return errors.New("URL has no host")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if u.Hostname() == "localhost" {
			return nil
		}
		ip := net.ParseIP(u.Hostname())
		if ip != nil && (ip.IsLoopback() || ip.Equal(net.ParseIP("169.254.170.23")) ||
			ip.Equal(net.ParseIP("169.254.170.2")) || ip.Equal(net.ParseIP("fd00:ec2::23"))) {
			return nil
		}
		return fmt.Errorf("plain http is allowed only to loopback or the EKS Pod Identity agent, not %s", u.Hostname())
	default:
		return fmt.Errorf("scheme %q is not http or https", u.Scheme)
	}
}

func defaultChain(ctx context.Context, o AWSOptions) (aws.CredentialsProvider, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if o.Region != "" {
		// A fallback: the environment's (or profile's) region wins, as for IRSA.
		opts = append(opts, awsconfig.WithDefaultRegion(o.Region))
	}
	if o.HTTPClient != nil {
		opts = append(opts, awsconfig.WithHTTPClient(o.HTTPClient))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS default config: %w", err)
	}
	if cfg.Credentials == nil {
		return nil, errors.New("AWS default config yielded no credentials provider")
	}
	return cfg.Credentials, nil
}

// CallerIdentity asks STS whom creds identify (sts:GetCallerIdentity), at
// the endpoint the identity's own STS calls use: o.STSEndpoint, else the
// pod's region's. It returns the caller's ARN and account.
func CallerIdentity(ctx context.Context, o AWSOptions, creds aws.CredentialsProvider) (arn, account string, err error) {
	out, err := stsClient(o).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}, func(so *sts.Options) {
		so.Credentials = creds
	})
	if err != nil {
		return "", "", fmt.Errorf("sts:GetCallerIdentity: %w", err)
	}
	return aws.ToString(out.Arn), aws.ToString(out.Account), nil
}
