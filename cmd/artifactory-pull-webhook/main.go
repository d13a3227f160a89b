// Command artifactory-pull-webhook runs the mutating admission webhook that
// gives pods in opted-in namespaces a short-lived Artifactory pull secret.
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	// The release image has no CA bundle of its own: these roots serve when
	// the system has none (an instance's caBundle is added to them).
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/internal/version"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
	pwebhook "github.com/artifactory-pull-webhook/artifactory-pull-webhook/webhook"
)

const name = "artifactory-pull-webhook"

type flags struct {
	config      string
	listenAddr  string
	metricsAddr string
	healthAddr  string
	certDir     string
	checkpoint  string
	// serviceAccount is the webhook's own ServiceAccount.
	serviceAccount string
	leader         leaderFlags
	certs          certFlags
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "check" {
		os.Exit(check(context.Background(), os.Args[2:], os.Stdout, os.Stderr))
	}
	var f flags
	flag.StringVar(&f.config, "config", "/etc/artifactory-pull-webhook/config.yaml", "Path to the YAML configuration file.")
	flag.StringVar(&f.listenAddr, "listen-addr", ":9443", "Address the HTTPS admission server listens on.")
	flag.StringVar(&f.metricsAddr, "metrics-addr", ":8080", "Address of the Prometheus /metrics endpoint (\"0\" disables it).")
	flag.StringVar(&f.healthAddr, "health-addr", ":8081", "Address of the /healthz and /readyz endpoints.")
	flag.StringVar(&f.certDir, "cert-dir", "/tmp/k8s-webhook-server/serving-certs", "Directory holding tls.crt and tls.key; reloaded when they change.")
	flag.StringVar(&f.checkpoint, "token-checkpoint-secret", pullsecret.DefaultCheckpointSecret, "Secret in the webhook's own "+
		"namespace (as for --leader-election-namespace) where minted tokens are kept so that a restart need not exchange again.")
	flag.StringVar(&f.serviceAccount, "service-account-name", os.Getenv("POD_SERVICE_ACCOUNT"), "The webhook's own "+
		"ServiceAccount, whose token an OIDC exchange with identity webhook and subjectToken.source serviceAccount sends "+
		"(default $POD_SERVICE_ACCOUNT, which the chart sets).")
	f.leader.bind(flag.CommandLine)
	f.certs.bind(flag.CommandLine)
	showVersion := flag.Bool("version", false, "Print the version, commit and Go version, and exit.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse() // --kubeconfig is registered by controller-runtime's config package.
	if *showVersion {
		fmt.Println(name, version.Get())
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := run(ctrl.SetupSignalHandler(), f); err != nil {
		ctrl.Log.WithName("setup").Error(err, "exiting")
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags) error {
	log := ctrl.Log.WithName("setup")
	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	host, port, err := splitHostPort(f.listenAddr)
	if err != nil {
		return fmt.Errorf("--listen-addr: %w", err)
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	// The webhook's own namespace: the Lease, the token checkpoint and the
	// self-managed certificate live there.
	f.leader.resolveNamespace()
	refresh, err := planRefresh(cfg, &f.leader)
	if err != nil {
		return err
	}
	cacheOpts, err := cacheOptions(cfg)
	if err != nil {
		return err
	}
	tlsOpts := []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }}
	selfCerts, err := f.certs.selfManaged(restCfg, scheme, f.leader.namespace)
	if err != nil {
		return err
	}
	if selfCerts != nil {
		// GetCertificate set: controller-runtime serves it and skips the file watcher.
		tlsOpts = append(tlsOpts, selfCerts.TLSOpt)
	}
	opts := ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress: f.healthAddr,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    host,
			Port:    port,
			CertDir: f.certDir,
			TLSOpts: tlsOpts,
		}),
		Cache: cacheOpts,
		// Secrets are read from the per-name caches (secretCaches) or
		// directly: never through an informer of every Secret, which the
		// chart's RBAC forbids.
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
	}
	if refresh.elected {
		f.leader.apply(&opts)
	}
	mgr, err := ctrl.NewManager(restCfg, opts)
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	if selfCerts != nil {
		if err := mgr.Add(selfCerts); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("certificate", selfCerts.Checker); err != nil {
			return err
		}
	}
	secrets, err := newSecretCaches(mgr, restCfg, cfg)
	if err != nil {
		return err
	}
	// Writes, and the reads that must see the API server rather than the
	// label-filtered cache, go through a direct client.
	direct, err := client.New(restCfg, client.Options{Scheme: scheme, HTTPClient: mgr.GetHTTPClient()})
	if err != nil {
		return fmt.Errorf("creating API client: %w", err)
	}

	awsOpts := credentials.AWSOptions{
		AuthType:    credentials.AuthType(cfg.AWS.AuthType),
		Region:      cfg.AWS.Region,
		STSEndpoint: cfg.AWS.STSEndpoint,
	}
	self := types.NamespacedName{Namespace: f.leader.namespace, Name: f.serviceAccount}
	metadataHost := cmp.Or(os.Getenv("GCE_METADATA_HOST"), credentials.DefaultGCPMetadataHost)
	prints, keys := fingerprints(cfg, awsOpts, self.String(), metadataHost)
	checkpoint, err := newCheckpoint(direct, f.leader.namespace, f.checkpoint, keys, roleKeys(cfg, prints))
	if err != nil {
		return err
	}
	if checkpoint != nil {
		if err := mgr.Add(checkpoint); err != nil {
			return err
		}
	} else {
		log.Info("token checkpoint disabled: the webhook's namespace is unknown (running outside a cluster); pass " +
			"--leader-election-namespace or set POD_NAMESPACE. A restart exchanges new tokens.")
	}
	m := metrics.New(crmetrics.Registry)
	tokens, err := newTokenCache(ctx, cfg, awsOpts, m, checkpoint, tokenSources{
		serviceAccountTokens: func(audience string) credentials.ServiceAccountTokens { return serviceAccountTokens(direct, audience) },
		self:                 self,
		gcpMetadataHost:      metadataHost,
	})
	if err != nil {
		return err
	}
	// The refresher writes through a client of its own, at its own pace.
	refreshClient, err := refresherClient(restCfg, scheme, mgr.GetRESTMapper())
	if err != nil {
		return err
	}
	store := pullsecret.NewStore(pullsecret.Options{
		Reader:           secrets,
		Writer:           direct,
		RefreshWriter:    refreshClient,
		RefreshPace:      refreshPace(cfg),
		Tokens:           tokens,
		Fingerprints:     prints,
		Installation:     cfg.Installation,
		RefreshThreshold: cfg.RefreshThreshold,
		WriteBackoff:     credentials.Backoff{Cap: cfg.BackoffCap.Duration},
		Metrics:          m,
		Log:              ctrl.Log.WithName("pullsecret"),
	})
	// The expiry gauge describes the tokens the Secrets hold, read from the
	// informer caches at scrape time: every replica reports the same. One
	// survey of the managed Secrets serves it and the rotation gauges, at
	// most once per surveyEvery however often /metrics is read.
	survey := &surveyMemo{every: surveyEvery, survey: func() (pullsecret.Survey, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return store.Survey(ctx, cfg)
	}}
	m.SetTokenExpirySource(func() map[string]time.Time {
		sv, err := survey.get()
		if err != nil { // no sample rather than a wrong one (before the caches sync)
			log.V(1).Info("could not list managed pull secrets for the token expiry gauge", "error", err.Error())
			return nil
		}
		return sv.Held
	})
	// The pods' ServiceAccounts, from their metadata informer (started only
	// with an instance of identity serviceAccount).
	var sas *pullsecret.ServiceAccounts
	if cfg.PerServiceAccount() {
		sas = pullsecret.NewServiceAccounts(mgr.GetClient(), mgr.GetAPIReader(), cfg.ServiceAccounts.OptInAnnotation, nil)
	}
	handler, err := pwebhook.NewHandler(pwebhook.Options{
		Config:          cfg,
		Namespaces:      mgr.GetClient(),
		APIReader:       mgr.GetAPIReader(),
		Secrets:         store,
		ServiceAccounts: optional(sas),
		Recorder:        pullsecret.FittingNotes(mgr.GetEventRecorder(name)),
		Metrics:         m,
		Log:             ctrl.Log.WithName("admission"),
	})
	if err != nil {
		return err
	}
	// The handler reads the AdmissionReview itself, in one pass (see package
	// webhook). Deadlines: a client trickling its review cannot hold a
	// connection.
	mgr.GetWebhookServer().Register("/mutate", withDeadlines(handler,
		10*time.Second, cfg.RequestTimeout.Duration+5*time.Second))

	// Warm the caches and seed the token cache from the checkpoint before
	// reporting ready, so a restart makes no new exchange.
	warm := &warmup{mgr: mgr, secrets: secrets, checkpoint: checkpoint, tokens: tokens, done: make(chan struct{}),
		serviceAccounts: cfg.PerServiceAccount()}
	if refresh.enabled {
		warm.rotation = rotationCheck(log, cfg, store)
		// The rotation gauges: what a rotation would take, read from the
		// informer caches at scrape time.
		budget, _ := cfg.RotationBudget()
		m.SetRotationSource(cfg.Refresh.WritesPerSecond, budget, func() (int, error) {
			sv, err := survey.get()
			return sv.Managed, err
		})
	}
	if err := mgr.Add(warm); err != nil {
		return err
	}
	if refresh.enabled {
		refresher, err := pullsecret.NewRefresher(pullsecret.RefresherOptions{
			Config:          cfg,
			Store:           store,
			Reader:          secrets,
			Secrets:         secrets.Caches(),
			Retry:           tokens,
			ServiceAccounts: sas,
			Ready:           warm.done,
			Recorder:        pullsecret.FittingNotes(mgr.GetEventRecorder(name)),
			Metrics:         m,
			Log:             ctrl.Log.WithName("refresher"),
		})
		if err != nil {
			return err
		}
		if err := refresher.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the pull secret refresher: %w", err)
		}
		if cfg.PatchServiceAccounts == config.PatchDefault || cfg.PatchServiceAccounts == config.PatchAll {
			saCache, err := serviceAccountCache(mgr, restCfg, cfg.PatchServiceAccounts == config.PatchAll,
				pullsecret.PatchedPullSecretsAnnotation(cfg.Installation))
			if err != nil {
				return err
			}
			patcher, err := pullsecret.NewSAPatcher(pullsecret.SAPatcherOptions{Config: cfg, Reader: secrets, ServiceAccounts: saCache,
				Client: direct, Recorder: pullsecret.FittingNotes(mgr.GetEventRecorder(name)), Metrics: m,
				Log: ctrl.Log.WithName("serviceaccounts")})
			if err != nil {
				return err
			}
			if err := patcher.SetupWithManager(mgr, secrets.Caches(), saCache); err != nil {
				return fmt.Errorf("setting up the ServiceAccount patcher: %w", err)
			}
		}
	} else {
		log.Info("pull secret refresher disabled: leader election needs a Lease namespace, and none was given " +
			"nor found (running outside a cluster); pass --leader-election-namespace, or --leader-elect=false " +
			"for a single replica. Secrets are still written at admission.")
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("caches", warm.Checker); err != nil {
		return err
	}
	log.Info("starting", "instances", len(cfg.Instances), "listen", f.listenAddr, "authType", cfg.AWS.AuthType,
		"refresher", refresh.enabled, "leaderElection", refresh.elected, "leaseNamespace", f.leader.namespace)
	return mgr.Start(ctx)
}

// optional makes a nil *ServiceAccounts a nil interface.
func optional(sas *pullsecret.ServiceAccounts) pwebhook.ServiceAccounts {
	if sas == nil {
		return nil
	}
	return sas
}

// fingerprints returns each instance's token fingerprint (by instance name)
// and the token keys of the configuration. A chained role (aws.assumeRole)
// is part of what signs, so it is part of the fingerprint.
func fingerprints(cfg *config.Config, o credentials.AWSOptions, self, metadataHost string) (map[string]string, []credentials.Key) {
	signer := credentials.SigningIdentity(o)
	prints := make(map[string]string, len(cfg.Instances))
	keys := make([]credentials.Key, 0, len(cfg.Instances))
	for _, in := range cfg.Instances {
		s := signer
		if o := in.OIDC; in.ExchangesOIDC() && o != nil {
			// What decides the token instead of an AWS identity: the
			// integration, the mapping asked for and the subject's source.
			subject := o.SubjectToken.Path // file
			switch o.SubjectToken.Source {
			case config.SubjectServiceAccount:
				subject = self // the webhook's own ServiceAccount (identity webhook, fallback webhook)
			case config.SubjectGCPMetadata:
				subject = metadataHost
			}
			s = strings.Join([]string{"oidc", o.ProviderName, o.IdentityMappingName, o.ProjectKey, o.Audience,
				string(o.SubjectToken.Source), in.SubjectAudience(), subject}, "\x00")
		}
		if ar := in.AWS.AssumeRole; ar != nil {
			s += "\x00assumeRole:" + ar.RoleARN + "\x00" + ar.ExternalID
		}
		prints[in.Name] = credentials.Fingerprint(in.URL, in.TokenTTL.Duration, s)
		keys = append(keys, credentials.Key{Instance: in.Name, Identity: credentials.WebhookIdentity, Fingerprint: prints[in.Name]})
	}
	return prints, keys
}

// roleKeys says whether a token key is a role's of an instance with
// identity serviceAccount under its current fingerprint (nil without such
// instances).
func roleKeys(cfg *config.Config, prints map[string]string) func(credentials.Key) bool {
	if !cfg.PerServiceAccount() {
		return nil
	}
	return func(k credentials.Key) bool {
		in, ok := cfg.Instance(k.Instance)
		if !ok || !in.PerServiceAccount() || k.Fingerprint != prints[k.Instance] {
			return false
		}
		_, role := credentials.RoleOfName(k.Identity)
		return role != in.ExchangesOIDC() && (role || strings.HasPrefix(k.Identity, credentials.ServiceAccountNamePrefix))
	}
}

// newCheckpoint returns the token checkpoint in namespace, or nil when the
// namespace is unknown. Entries of keys other than keys (or roles') are
// dropped.
func newCheckpoint(c client.Client, namespace, name string, keys []credentials.Key, roles func(credentials.Key) bool) (*pullsecret.Checkpoint, error) {
	if namespace == "" {
		return nil, nil
	}
	return pullsecret.NewCheckpoint(pullsecret.CheckpointOptions{Client: c, Namespace: namespace, Name: name,
		Keys: keys, Roles: roles, Log: ctrl.Log.WithName("checkpoint")})
}

// ServiceAccount tokens the webhook asks for: for STS (or an OIDC
// exchange's audience), valid for the shortest time the API server grants,
// bound to nothing (the pod does not exist yet at admission). The chart's
// token policy allows exactly these.
const (
	stsAudience                 = "sts.amazonaws.com"
	serviceAccountTokenLifetime = 10 * time.Minute
)

// serviceAccountTokens requests ServiceAccount tokens of audience through
// the TokenRequest API.
func serviceAccountTokens(c client.Client, audience string) credentials.ServiceAccountTokens {
	return func(ctx context.Context, namespace, name string) (string, error) {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{audience},
			ExpirationSeconds: ptr.To(int64(serviceAccountTokenLifetime / time.Second)),
		}}
		if err := c.SubResource("token").Create(ctx, sa, tr); err != nil {
			if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
				return "", fmt.Errorf("%w: %w", credentials.ErrServiceAccountTokenRefused, err)
			}
			return "", err // a passing failure: a kept proof still holds
		}
		if tr.Status.Token == "" {
			return "", errors.New("the TokenRequest answered no token")
		}
		return tr.Status.Token, nil
	}
}

// tokenSources are what newTokenCache needs besides the configuration:
// ServiceAccount tokens of an audience (the TokenRequest API) and the
// webhook's own ServiceAccount (for the OIDC exchange with identity
// webhook and subject token source serviceAccount).
type tokenSources struct {
	serviceAccountTokens func(audience string) credentials.ServiceAccountTokens
	self                 types.NamespacedName
	gcpMetadataHost      string
}

// newTokenCache builds one exchange per configured instance — AWS-signed or
// OIDC — behind a shared cache, whose mints go to checkpoint (when not
// nil). AWS instances with identity serviceAccount also mint as
// ServiceAccounts' roles, assumed with ServiceAccount tokens; an instance's
// aws.assumeRole is chained on top of whichever identity signs. OIDC
// instances exchange the subject token of the identity: the webhook's (its
// ServiceAccount's token, a file, the metadata server's) or the pod's
// ServiceAccount's.
func newTokenCache(ctx context.Context, cfg *config.Config, awsOpts credentials.AWSOptions, m *metrics.Metrics,
	checkpoint *pullsecret.Checkpoint, src tokenSources) (*credentials.Cache, error) {
	// The webhook's own AWS identity is resolved only when an instance
	// signs with it: an OIDC-only installation needs no AWS at all.
	var aws awssdk.CredentialsProvider
	if slices.ContainsFunc(cfg.Instances, func(in config.Instance) bool { return !in.ExchangesOIDC() }) {
		var err error
		if aws, err = credentials.AWSCredentials(ctx, awsOpts); err != nil {
			return nil, fmt.Errorf("aws: %w", err)
		}
	}
	chained := func(in config.Instance, base awssdk.CredentialsProvider, session string) awssdk.CredentialsProvider {
		return chainedRole(awsOpts, in, base, session)
	}
	exchangers := make(map[string]*credentials.Exchanger, len(cfg.Instances))
	oidc := make(map[string]*credentials.OIDCExchanger, len(cfg.Instances))
	for _, in := range cfg.Instances {
		hc, err := credentials.NewHTTPClient(in.CABundle, in.ExchangeTimeout.Duration)
		if err != nil {
			return nil, fmt.Errorf("instance %q: %w", in.Name, err)
		}
		if in.ExchangesOIDC() {
			subject, err := subjectTokens(in, src)
			if err != nil {
				return nil, fmt.Errorf("instance %q: %w", in.Name, err)
			}
			ex, err := credentials.NewOIDCExchanger(credentials.OIDCOptions{
				Instance: in.Name, URL: in.URL, ProviderName: in.OIDC.ProviderName,
				IdentityMappingName: in.OIDC.IdentityMappingName, ProjectKey: in.OIDC.ProjectKey, Audience: in.OIDC.Audience,
				TTL: in.TokenTTL.Duration, Subject: subject, HTTPClient: hc, Metrics: m,
			})
			if err != nil {
				return nil, fmt.Errorf("instance %q: %w", in.Name, err)
			}
			oidc[in.Name] = ex
			continue
		}
		ex, err := credentials.NewExchanger(credentials.ExchangeOptions{
			Instance:    in.Name,
			URL:         in.URL,
			Region:      cfg.AWS.Region,
			STSEndpoint: cfg.AWS.SigningEndpoint,
			TTL:         in.TokenTTL.Duration,
			HTTPClient:  hc,
			Credentials: chained(in, aws, ""),
			Metrics:     m,
		})
		if err != nil {
			return nil, fmt.Errorf("instance %q: %w", in.Name, err)
		}
		exchangers[in.Name] = ex
	}
	mint := func(ctx context.Context, key credentials.Key) (credentials.Credential, error) {
		if ex, ok := oidc[key.Instance]; ok {
			return ex.ExchangeAs(ctx, credentials.Identity{})
		}
		ex, ok := exchangers[key.Instance]
		if !ok {
			return credentials.Credential{}, fmt.Errorf("unknown instance %q", key.Instance)
		}
		return ex.Exchange(ctx)
	}
	o := credentials.CacheOptions{
		RefreshThreshold: cfg.RefreshThreshold,
		Metrics:          m,
		MintTimeout:      cfg.RequestTimeout.Duration,
		// A fallback token must outlive the pull it is written for.
		MinRemaining: cfg.RequestTimeout.Duration + time.Minute,
		Backoff:      credentials.Backoff{Cap: cfg.BackoffCap.Duration},
	}
	if cfg.PerServiceAccount() {
		roles, err := credentials.NewRoleCredentials(awsOpts, src.serviceAccountTokens(stsAudience))
		if err != nil {
			return nil, err
		}
		roles.Metrics = m
		o.Prove = roles.Prove
		// The AWS exchange signs with the credentials the proof got: the
		// role is assumed once per ServiceAccount and credential lifetime,
		// not once per mint. A chained aws.assumeRole is assumed once per
		// mint (once per role and rotation). The OIDC exchange sends the
		// ServiceAccount's own token.
		o.MintAs = func(ctx context.Context, key credentials.Key, id credentials.Identity) (credentials.Credential, error) {
			in, ok := cfg.Instance(key.Instance)
			if !ok || !in.PerServiceAccount() {
				return credentials.Credential{}, fmt.Errorf("instance %q does not mint per ServiceAccount", key.Instance)
			}
			if id.Shared() == in.ExchangesOIDC() {
				return credentials.Credential{}, fmt.Errorf("instance %q (exchange %s) does not mint as %s", key.Instance, in.Exchange, id)
			}
			if ex, ok := oidc[key.Instance]; ok {
				return ex.ExchangeAs(ctx, id)
			}
			return exchangers[key.Instance].ExchangeWith(ctx, chained(in, roles.Provider(id), credentials.SessionName(id)))
		}
	}
	if checkpoint != nil {
		o.OnMint = checkpoint.Record
		// Before minting, take a token another replica checkpointed.
		o.Adopt = checkpoint.Adopt
	}
	return credentials.NewCache(mint, o), nil
}

// chainedRole is base chained to in's aws.assumeRole, or base itself.
func chainedRole(o credentials.AWSOptions, in config.Instance, base awssdk.CredentialsProvider, session string) awssdk.CredentialsProvider {
	ar := in.AWS.AssumeRole
	if ar == nil {
		return base
	}
	return credentials.ChainRole(o, base, credentials.ChainedRole{RoleARN: ar.RoleARN, ExternalID: ar.ExternalID,
		SessionName: ar.SessionName}, session)
}

// subjectTokens is the ID token source of in, an instance of exchange oidc.
func subjectTokens(in config.Instance, src tokenSources) (credentials.SubjectTokens, error) {
	st := in.OIDC.SubjectToken
	switch st.Source {
	case config.SubjectFile:
		return credentials.FileSubject(st.Path), nil
	case config.SubjectGCPMetadata:
		return credentials.GCPMetadataSubject(src.gcpMetadataHost, in.SubjectAudience(), nil), nil
	}
	tokens := src.serviceAccountTokens(in.SubjectAudience())
	// The webhook's own identity — with identity webhook, or the fallback
	// webhook of identity serviceAccount — sends its own ServiceAccount's
	// token.
	ownNeeded := !in.PerServiceAccount() || in.Fallback == config.FallbackWebhook
	if ownNeeded && (src.self.Namespace == "" || src.self.Name == "") {
		return nil, errors.New("oidc.subjectToken.source serviceAccount exchanges the webhook's own ServiceAccount's token " +
			"(identity webhook, or fallback webhook): pass --service-account-name (the chart sets POD_SERVICE_ACCOUNT) and " +
			"the namespace (--leader-election-namespace or POD_NAMESPACE)")
	}
	return func(ctx context.Context, id credentials.Identity) (string, error) {
		switch {
		case id.IsWebhook() && ownNeeded:
			return tokens(ctx, src.self.Namespace, src.self.Name)
		case id.IsWebhook(), id.Shared(), !in.PerServiceAccount():
			return "", fmt.Errorf("instance %q does not mint as %s", in.Name, id)
		}
		return tokens(ctx, id.Namespace, id.ServiceAccount)
	}, nil
}

func splitHostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return h, port, nil
}

var _ manager.LeaderElectionRunnable = (*warmup)(nil)

// surveyEvery is how often the scrape-time gauges list the managed
// Secrets at most: scrapes in quick succession (several scrapers, or a
// benchmark polling /metrics) cost one pass over them per surveyEvery, not
// one each; the gauges lag the Secrets by at most that.
const surveyEvery = time.Second

// surveyMemo keeps the last survey of the managed Secrets for every.
type surveyMemo struct {
	every  time.Duration
	survey func() (pullsecret.Survey, error)
	now    func() time.Time // time.Now when nil

	mu   sync.Mutex
	at   time.Time
	last pullsecret.Survey
}

func (m *surveyMemo) get() (pullsecret.Survey, error) {
	now := time.Now
	if m.now != nil {
		now = m.now
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.at.IsZero() && now().Sub(m.at) < m.every {
		return m.last, nil
	}
	sv, err := m.survey()
	if err != nil {
		return sv, err // not kept: the next scrape asks again
	}
	m.at, m.last = now(), sv
	return sv, nil
}
