package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// Step results of the check command.
const (
	stepPassed  = "passed"
	stepFailed  = "failed"
	stepSkipped = "skipped"
)

// checkStep is one line of the check command's report. No field holds a
// token, a key or a Secret's contents: they are built from configuration,
// identities (ARNs, usernames) and redacted errors.
type checkStep struct {
	Step   string `json:"step"`
	Result string `json:"result"`
	Detail string `json:"detail"`
	// Cause, Fix and More are the hint of a failed step
	// (credentials.Explain).
	Cause string `json:"cause,omitempty"`
	Fix   string `json:"fix,omitempty"`
	More  string `json:"more,omitempty"`
}

// checkReport is the check command's whole answer (--output json).
type checkReport struct {
	OK    bool        `json:"ok"`
	Steps []checkStep `json:"steps"`
}

type checkFlags struct {
	config, instance, namespace, serviceAccount, output, kubeconfig string
	// self is the webhook's own ServiceAccount (namespace/name), whose
	// token an OIDC instance with subject source serviceAccount sends.
	selfName, selfNamespace string
	timeout                 time.Duration
}

// check is the check subcommand: every step the webhook would take, once,
// writing nothing to the cluster. It returns the exit code: 0 when every
// step passed, 1 when one failed, 2 for bad usage.
func check(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f checkFlags
	fs := flag.NewFlagSet("artifactory-pull-webhook check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "config", "/etc/artifactory-pull-webhook/config.yaml", "Path to the YAML configuration file.")
	fs.StringVar(&f.instance, "instance", "", "Check only this instance (default: all).")
	fs.StringVar(&f.namespace, "namespace", "", "With --service-account: the namespace whose pods to check.")
	fs.StringVar(&f.serviceAccount, "service-account", "", "With --namespace: the pods' ServiceAccount; shows the identity each "+
		"instance uses for them and exchanges as it (a ServiceAccount token is requested; nothing is stored).")
	fs.StringVar(&f.output, "output", "text", "text or json.")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "Kubeconfig for the cluster steps (default: $KUBECONFIG, ~/.kube/config, or in-cluster).")
	fs.StringVar(&f.selfName, "service-account-name", os.Getenv("POD_SERVICE_ACCOUNT"), "The webhook's own ServiceAccount "+
		"(default $POD_SERVICE_ACCOUNT), for OIDC instances whose subject token is its token.")
	fs.StringVar(&f.selfNamespace, "webhook-namespace", os.Getenv("POD_NAMESPACE"), "The webhook's own namespace (default $POD_NAMESPACE).")
	fs.DurationVar(&f.timeout, "timeout", time.Minute, "Bound of the whole check.")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: artifactory-pull-webhook check [--config F] [--instance NAME] [--namespace NS --service-account SA] [--output text|json]")
		fmt.Fprintln(stderr, "Runs once every step the webhook would take, without writing to the cluster, and says for each failure its likely cause and fix.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usage := func(msg string) int {
		fmt.Fprintln(stderr, "artifactory-pull-webhook check: "+msg)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return usage(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	case f.output != "text" && f.output != "json":
		return usage(fmt.Sprintf("--output %q: want text or json", f.output))
	case (f.namespace == "") != (f.serviceAccount == ""):
		return usage("--namespace and --service-account go together")
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	c := &checker{f: f}
	c.run(ctx)
	if c.usage != "" {
		return usage(c.usage)
	}
	r := checkReport{OK: !slices.ContainsFunc(c.steps, func(s checkStep) bool { return s.Result == stepFailed }), Steps: c.steps}
	if f.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
	} else {
		writeCheckText(stdout, r)
	}
	if !r.OK {
		return 1
	}
	return 0
}

// writeCheckText writes the report as a table: one line per step, and for
// a failure its cause and fix below it.
func writeCheckText(w io.Writer, r checkReport) {
	width := 0
	for _, s := range r.Steps {
		width = max(width, len(s.Step))
	}
	passed, failed := 0, 0
	for _, s := range r.Steps {
		mark := "✓"
		switch s.Result {
		case stepFailed:
			mark = "✗"
			failed++
		case stepSkipped:
			mark = "-"
		default:
			passed++
		}
		fmt.Fprintf(w, "%s %-*s  %s\n", mark, width, s.Step, s.Detail)
		indent := strings.Repeat(" ", width+4)
		if s.Cause != "" {
			fmt.Fprintf(w, "%scause: %s\n", indent, s.Cause)
		}
		if s.Fix != "" {
			fmt.Fprintf(w, "%sfix:   %s\n", indent, s.Fix)
		}
		if s.More != "" {
			fmt.Fprintf(w, "%s       %s\n", indent, s.More)
		}
	}
	if failed == 0 {
		fmt.Fprintf(w, "all %d steps passed\n", passed)
	} else {
		fmt.Fprintf(w, "%d of %d steps failed\n", failed, passed+failed)
	}
}

// checker runs the steps and collects their lines.
type checker struct {
	f     checkFlags
	steps []checkStep
	// usage, when set, is a bad flag value found once the config is read.
	usage string

	cfg     *config.Config
	awsOpts credentials.AWSOptions
	// aws is the webhook's own AWS identity, nil until resolved (or when
	// it failed); role is the IAM role STS says it is.
	aws  awssdk.CredentialsProvider
	role string
	// cluster is the API client of the cluster steps, made on first use.
	cluster    client.Client
	clusterErr error
}

func (c *checker) pass(step, format string, args ...any) {
	c.steps = append(c.steps, checkStep{Step: step, Result: stepPassed, Detail: fmt.Sprintf(format, args...)})
}

func (c *checker) skip(step, format string, args ...any) {
	c.steps = append(c.steps, checkStep{Step: step, Result: stepSkipped, Detail: fmt.Sprintf(format, args...)})
}

func (c *checker) fail(step string, err error, h credentials.Hint) {
	c.steps = append(c.steps, checkStep{Step: step, Result: stepFailed, Detail: pullsecret.CleanText(err.Error()),
		Cause: h.Cause, Fix: h.Fix, More: h.Detail})
}

func (c *checker) run(ctx context.Context) {
	cfg, err := config.Load(c.f.config)
	if err != nil {
		c.fail("config", err, credentials.Hint{Fix: "correct the field the error names"})
		return
	}
	c.cfg = cfg
	instances := cfg.Instances
	if c.f.instance != "" {
		in, ok := cfg.Instance(c.f.instance)
		if !ok {
			names := make([]string, len(cfg.Instances))
			for i, in := range cfg.Instances {
				names[i] = in.Name
			}
			c.usage = fmt.Sprintf("--instance %q: %s has no such instance; name one of %s", c.f.instance, c.f.config, strings.Join(names, ", "))
			return
		}
		instances = []config.Instance{in}
	}
	names := make([]string, len(instances))
	for i, in := range instances {
		names[i] = fmt.Sprintf("%s (%s exchange, identity %s)", in.Name, cmp.Or(in.Exchange, config.ExchangeAWS), cmp.Or(in.Identity, config.IdentityWebhook))
	}
	c.pass("config", "%s: %s", c.f.config, strings.Join(names, "; "))

	c.awsOpts = credentials.AWSOptions{AuthType: credentials.AuthType(cfg.AWS.AuthType), Region: cfg.AWS.Region, STSEndpoint: cfg.AWS.STSEndpoint}
	// The webhook resolves its own AWS identity at start whenever an
	// instance uses the AWS exchange (and fails to start without it).
	if slices.ContainsFunc(instances, func(in config.Instance) bool { return !in.ExchangesOIDC() }) {
		c.awsIdentity(ctx)
		c.signing()
	}
	for _, in := range instances {
		c.exchangeAsWebhook(ctx, in)
	}
	if c.f.namespace != "" {
		c.serviceAccountSteps(ctx, instances)
	}
}

// signsAsWebhook reports whether in signs an AWS exchange with the
// webhook's own identity (identity webhook, or its fallback).
func (c *checker) signsAsWebhook(in config.Instance) bool {
	return !in.ExchangesOIDC() && (!in.PerServiceAccount() || in.Fallback == config.FallbackWebhook)
}

// awsIdentity resolves the webhook's own AWS identity: the source its
// authType gives here and why, then whom STS says it is.
func (c *checker) awsIdentity(ctx context.Context) {
	src, err := credentials.ResolveAWSSource(c.awsOpts)
	if err != nil {
		c.fail("aws credentials", err, credentials.ExplainCredentials(err))
		return
	}
	p, err := credentials.AWSCredentials(ctx, c.awsOpts)
	if err == nil {
		_, err = p.Retrieve(ctx)
	}
	if err != nil {
		c.fail("aws credentials", fmt.Errorf("%s: %w", src.Why, err), credentials.ExplainCredentials(err)) // err names the source
		return
	}
	c.pass("aws credentials", "%s (%s)", src, src.Why)
	c.aws = p // the exchanges sign with it whatever STS answers here: Artifactory, not the pod, calls STS
	arn, account, err := credentials.CallerIdentity(ctx, c.awsOpts, p)
	if err != nil {
		c.fail("caller identity", err, credentials.Hint{Cause: "sts:GetCallerIdentity from here failed: the credentials are refused, or STS is not reachable from this pod",
			Fix: "if the exchanges below pass, STS is only unreachable from the pod (which the webhook does not need); else check that the role exists and its credentials are current (aws.stsEndpoint for a VPC endpoint)"})
		return
	}
	c.role = credentials.IAMRoleOf(arn)
	c.pass("caller identity", "%s (account %s, partition %s); Artifactory maps the role %s", arn, account,
		credentials.PartitionOf(arn), c.role)
}

// signing says how the GetCallerIdentity request is signed, and fails
// when that cannot be verified for the caller's partition.
func (c *checker) signing() {
	a := c.cfg.AWS
	endpoint := ""
	if a.SigningEndpoint != "" {
		endpoint = "; signed for " + a.SigningEndpoint + " (aws.signingEndpoint)"
	}
	partition := credentials.PartitionOf(c.role)
	if c.aws == nil {
		c.skip("signing", "no AWS identity to sign with (see aws credentials)")
		return
	}
	if partition == "" {
		endpoint += "; the role's partition is unknown (see caller identity), not checked"
	}
	if a.Region == "" {
		if h, ok := credentials.GlobalSigningHint(partition); ok {
			c.fail("signing", fmt.Errorf("SigV4A for every region (X-Amz-Region-Set *) against sts.amazonaws.com, but the role is in partition %s", partition), h)
			return
		}
		c.pass("signing", "SigV4A for every region (X-Amz-Region-Set *) against sts.amazonaws.com%s", endpoint)
		return
	}
	// The partitions told by a region's name alone: China and GovCloud;
	// others (ISO) are not judged.
	want := ""
	switch {
	case strings.HasPrefix(a.Region, "cn-"):
		want = "aws-cn"
	case strings.HasPrefix(a.Region, "us-gov-"):
		want = "aws-us-gov"
	case partition == "aws-cn" || partition == "aws-us-gov":
		want = "aws"
	}
	if partition != "" && want != "" && partition != want {
		c.fail("signing", fmt.Errorf("aws.region %s is in partition %s, the role in %s", a.Region, want, partition),
			credentials.Hint{Cause: "Artifactory replays the signature to the STS of aws.region's partition, which does not know the role",
				Fix: "set aws.region to a region of the role's partition " + partition})
		return
	}
	c.pass("signing", "SigV4A for region %s against its STS endpoint, with ?region=%s on the exchange URL%s", a.Region, a.Region, endpoint)
}

// exchangeAsWebhook exchanges in's token as the webhook's own identity —
// what every pod of an identity webhook instance gets.
func (c *checker) exchangeAsWebhook(ctx context.Context, in config.Instance) {
	step := "exchange " + in.Name
	if in.PerServiceAccount() {
		if in.Fallback != config.FallbackWebhook {
			c.skip(step, "pulls as each pod's ServiceAccount: pass --namespace and --service-account to check one")
			return
		}
		step += " (fallback webhook)"
	}
	if in.ExchangesOIDC() {
		ex, err := c.oidcExchanger(in)
		if err != nil {
			c.fail(step, err, credentials.Hint{Fix: "correct the instance's oidc settings"})
			return
		}
		cred, err := ex.ExchangeAs(ctx, credentials.Identity{})
		c.exchanged(step, in, cred, err, "")
		return
	}
	if c.aws == nil {
		c.skip(step, "no AWS identity to sign with (see aws credentials)")
		return
	}
	ex, err := c.awsExchanger(in, chainedRole(c.awsOpts, in, c.aws, ""))
	if err != nil {
		c.fail(step, err, credentials.Hint{Fix: "correct the instance's settings"})
		return
	}
	cred, err := ex.Exchange(ctx)
	role := c.role
	if in.AWS.AssumeRole != nil {
		role = in.AWS.AssumeRole.RoleARN
	}
	c.exchanged(step, in, cred, err, role)
}

// exchanged records an exchange's line: the user and lifetime granted, or
// the failure with its hint.
func (c *checker) exchanged(step string, in config.Instance, cred credentials.Credential, err error, role string) {
	if err != nil {
		h, _ := credentials.Explain(err, role)
		c.fail(step, err, h)
		return
	}
	granted, asked := cred.Lifetime().Round(time.Second), in.TokenTTL.Duration
	detail := fmt.Sprintf("%s answered a token of user %s, valid %s (asked %s)", urlHost(in.URL), cred.Username, granted, asked)
	if granted < asked {
		detail += fmt.Sprintf("; Artifactory shortened it (its token.max-expiry): refresh at %.0f%% left comes every %s",
			c.cfg.RefreshThreshold*100, (granted - time.Duration(float64(granted)*c.cfg.RefreshThreshold)).Round(time.Second))
	}
	c.pass(step, "%s", detail)
}

// awsExchanger is in's AWS exchange, signing with creds.
func (c *checker) awsExchanger(in config.Instance, creds awssdk.CredentialsProvider) (*credentials.Exchanger, error) {
	hc, err := credentials.NewHTTPClient(in.CABundle, in.ExchangeTimeout.Duration)
	if err != nil {
		return nil, err
	}
	return credentials.NewExchanger(credentials.ExchangeOptions{Instance: in.Name, URL: in.URL, Region: c.cfg.AWS.Region,
		STSEndpoint: c.cfg.AWS.SigningEndpoint, TTL: in.TokenTTL.Duration, HTTPClient: hc, Credentials: creds})
}

// oidcExchanger is in's OIDC exchange with the subject tokens the webhook
// would send.
func (c *checker) oidcExchanger(in config.Instance) (*credentials.OIDCExchanger, error) {
	subject, err := subjectTokens(in, tokenSources{
		serviceAccountTokens: func(audience string) credentials.ServiceAccountTokens {
			return func(ctx context.Context, namespace, name string) (string, error) {
				cl, err := c.client()
				if err != nil {
					return "", err
				}
				return serviceAccountTokens(cl, audience)(ctx, namespace, name)
			}
		},
		self:            types.NamespacedName{Namespace: c.f.selfNamespace, Name: c.f.selfName},
		gcpMetadataHost: cmp.Or(os.Getenv("GCE_METADATA_HOST"), credentials.DefaultGCPMetadataHost),
	})
	if err != nil {
		return nil, fmt.Errorf("%w (for check: --service-account-name and --webhook-namespace, which default to them)", err)
	}
	return c.oidcExchangerFor(in, subject)
}

// oidcExchangerFor is in's OIDC exchange sending subject's tokens.
func (c *checker) oidcExchangerFor(in config.Instance, subject credentials.SubjectTokens) (*credentials.OIDCExchanger, error) {
	hc, err := credentials.NewHTTPClient(in.CABundle, in.ExchangeTimeout.Duration)
	if err != nil {
		return nil, err
	}
	o := in.OIDC
	return credentials.NewOIDCExchanger(credentials.OIDCOptions{Instance: in.Name, URL: in.URL, ProviderName: o.ProviderName,
		IdentityMappingName: o.IdentityMappingName, ProjectKey: o.ProjectKey, Audience: o.Audience, TTL: in.TokenTTL.Duration,
		Subject: subject, HTTPClient: hc})
}

// serviceAccountSteps checks the namespace's opt-in and, for each
// instance, the identity its pods of the ServiceAccount get, exchanging as
// it where it is the ServiceAccount's own.
func (c *checker) serviceAccountSteps(ctx context.Context, instances []config.Instance) {
	ns, sa := c.f.namespace, c.f.serviceAccount
	cl, err := c.client()
	if err != nil {
		c.fail("namespace "+ns, err, credentials.Hint{Fix: "pass --kubeconfig, or run check in the webhook's pod"})
		return
	}
	key, value, _ := config.SplitLabel(c.cfg.NamespaceLabel)
	var namespace corev1.Namespace
	if err := cl.Get(ctx, client.ObjectKey{Name: ns}, &namespace); err != nil {
		c.fail("namespace "+ns, err, credentials.Hint{Fix: "name an existing namespace, and check that this identity may get it"})
		return
	}
	if namespace.Labels[key] != value {
		c.fail("namespace "+ns, fmt.Errorf("namespace %s does not carry the opt-in label %s", ns, c.cfg.NamespaceLabel),
			credentials.Hint{Cause: "the webhook leaves pods of namespaces that did not opt in alone",
				Fix: fmt.Sprintf("kubectl label namespace %s %s", ns, c.cfg.NamespaceLabel)})
	} else {
		c.pass("namespace "+ns, "opted in (label %s)", c.cfg.NamespaceLabel)
	}
	// Read only for an instance that pulls as the ServiceAccount: the
	// webhook may read ServiceAccounts only then.
	var account pullsecret.ServiceAccount
	var lookupErr error
	if slices.ContainsFunc(instances, config.Instance.PerServiceAccount) {
		sas := pullsecret.NewServiceAccounts(cl, nil, c.cfg.ServiceAccounts.OptInAnnotation, nil)
		account, lookupErr = sas.Lookup(ctx, ns, sa)
	}
	var roles *credentials.RoleCredentials
	for _, in := range instances {
		step := fmt.Sprintf("identity %s as %s/%s", in.Name, ns, sa)
		if !in.PerServiceAccount() {
			c.pass(step, "the webhook's own identity, the same for every ServiceAccount")
			continue
		}
		id, err := account.IdentityFor(in)
		if lookupErr != nil {
			err = lookupErr
		}
		switch {
		case errors.Is(err, credentials.ErrNoRole) && in.Fallback == config.FallbackWebhook:
			c.pass(step, "%v: falls back to the webhook's own identity (fallback webhook)", err)
			continue
		case errors.Is(err, credentials.ErrNoRole) && in.ExchangesOIDC():
			c.fail(step, err, credentials.Hint{Cause: "pods of this ServiceAccount get no pull secret of the instance (fallback none)",
				Fix: fmt.Sprintf("annotate ServiceAccount %s with %s: \"true\", or set the instance's fallback: webhook", sa, c.cfg.ServiceAccounts.OptInAnnotation)})
			continue
		case errors.Is(err, credentials.ErrNoRole):
			c.fail(step, err, credentials.Hint{Cause: "pods of this ServiceAccount get no pull secret of the instance (fallback none)",
				Fix: fmt.Sprintf("annotate ServiceAccount %s with %s: <IAM role ARN>, or set the instance's fallback: webhook", sa, config.RoleARNAnnotation)})
			continue
		case err != nil:
			c.fail(step, err, credentials.Hint{Fix: fmt.Sprintf("correct the annotation %s of ServiceAccount %s", config.RoleARNAnnotation, sa)})
			continue
		}
		exchange := fmt.Sprintf("exchange %s as %s/%s", in.Name, ns, sa)
		if in.ExchangesOIDC() {
			c.pass(step, "the ServiceAccount's own token (audience %s) for the OIDC exchange, as %s", in.SubjectAudience(), id.Name())
			tokens := serviceAccountTokens(cl, in.SubjectAudience())
			ex, err := c.oidcExchangerFor(in, func(ctx context.Context, id credentials.Identity) (string, error) {
				return tokens(ctx, id.Namespace, id.ServiceAccount)
			})
			if err != nil {
				c.fail(exchange, err, credentials.Hint{Fix: "correct the instance's oidc settings"})
				continue
			}
			cred, err := ex.ExchangeAs(ctx, id)
			c.exchanged(exchange, in, cred, err, "")
			continue
		}
		c.pass(step, "role %s (annotation %s), assumed with a token of the ServiceAccount", id.RoleARN, config.RoleARNAnnotation)
		if roles == nil {
			if roles, err = credentials.NewRoleCredentials(c.awsOpts, serviceAccountTokens(cl, stsAudience)); err != nil {
				c.fail(exchange, err, credentials.Hint{})
				continue
			}
		}
		ex, err := c.awsExchanger(in, chainedRole(c.awsOpts, in, roles.Provider(id), credentials.SessionName(id)))
		if err != nil {
			c.fail(exchange, err, credentials.Hint{Fix: "correct the instance's settings"})
			continue
		}
		cred, err := ex.Exchange(ctx)
		role := id.RoleARN
		if in.AWS.AssumeRole != nil {
			role = in.AWS.AssumeRole.RoleARN
		}
		c.exchanged(exchange, in, cred, err, role)
	}
}

// client is the API client of the cluster steps: --kubeconfig, else
// controller-runtime's resolution ($KUBECONFIG, in-cluster, ~/.kube/config).
func (c *checker) client() (client.Client, error) {
	if c.cluster != nil || c.clusterErr != nil {
		return c.cluster, c.clusterErr
	}
	var cfg *rest.Config
	var err error
	if c.f.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", c.f.kubeconfig)
	} else {
		cfg, err = ctrl.GetConfig()
	}
	if err != nil {
		c.clusterErr = fmt.Errorf("loading kubeconfig: %w", err)
		return nil, c.clusterErr
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		c.clusterErr = err
		return nil, err
	}
	c.cluster, c.clusterErr = client.New(cfg, client.Options{Scheme: scheme})
	return c.cluster, c.clusterErr
}

// urlHost is the host of a URL, for a step's line: never its userinfo.
func urlHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the instance's url"
	}
	return u.Host
}
