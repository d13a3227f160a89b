package harness

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/sirupsen/logrus"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/certs"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/emulator"
)

// Identity is how the webhook process gets its AWS credentials.
type Identity string

const (
	PodIdentity Identity = "podIdentity"
	IRSA        Identity = "webIdentity"
)

// Names used by the stack.
const (
	WebhookNamespace      = "artifactory-pull-webhook"
	WebhookServiceAccount = "artifactory-pull-webhook"
	OptInLabel            = "artifactory-pull-webhook/inject"
	ImageRepo             = "team/app"
	ImageTag              = "1.0"
)

// Stack is the whole local product: API server, emulators, registry with a
// pushed image, and the webhook process registered with the API server.
type Stack struct {
	Dir     string
	Cluster *Cluster
	Emu     *emulator.Env
	Webhook *Webhook
	// Image is the pushed image on the "main" Artifactory instance.
	Image string
	// FaultyHost is the registry host of the "faulty" instance: no image
	// lives there, its pods exist to exercise exchange failures.
	FaultyHost string
	// BurstHost is the registry host of the "burst" instance (the same
	// registry under another name, with its own token cache key).
	BurstHost string

	binary string
	certs  *certs.Bundle
	addr   string
	logs   io.Writer
}

// StackOptions configure StartStack.
type StackOptions struct {
	Dir  string
	Logs io.Writer // webhook process output (optional)
	// Progress receives one line per startup step (optional).
	Progress func(string)
}

// StartStack starts everything but the webhook process; call StartWebhook.
// The in-process registry logs through logrus's global logger; StartStack
// silences it unless o.Logs asks for logs.
func StartStack(ctx context.Context, o StackOptions) (s *Stack, err error) {
	if o.Logs == nil {
		logrus.SetOutput(io.Discard)
	}
	say := o.Progress
	if say == nil {
		say = func(string) {}
	}
	st := &Stack{Dir: o.Dir, logs: o.Logs}
	s = st
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	say("starting kube-apiserver and etcd")
	if s.Cluster, err = StartCluster(o.Dir); err != nil {
		return nil, err
	}
	issuerClient, err := s.Cluster.HTTPClient()
	if err != nil {
		return nil, err
	}
	say("starting the STS, Pod Identity agent and Artifactory emulators and the registry")
	if s.Emu, err = emulator.Start(ctx, emulator.Options{Issuer: s.Cluster.Issuer(), IssuerClient: issuerClient}); err != nil {
		return nil, err
	}
	reg := s.Emu.Registry.Host()
	_, port, _ := strings.Cut(reg, ":")
	s.BurstHost = "localhost:" + port
	s.FaultyHost = "faulty.registry.test"
	s.Image = reg + "/" + ImageRepo + ":" + ImageTag
	say("pushing " + s.Image)
	if _, err = s.Emu.Registry.PushRandomImage(ctx, ImageRepo, ImageTag, s.Emu.AdminUser, s.Emu.AdminPassword); err != nil {
		return nil, fmt.Errorf("pushing the test image: %w", err)
	}
	say("building the webhook binary")
	if s.binary, err = BuildWebhook(o.Dir); err != nil {
		return nil, err
	}
	if s.addr, err = FreeAddr(); err != nil {
		return nil, err
	}
	if s.certs, err = certs.Generate([]string{"127.0.0.1"}, 24*time.Hour); err != nil {
		return nil, err
	}
	if err = os.WriteFile(filepath.Join(o.Dir, "artifactory-ca.pem"), s.Emu.Artifactory.CACertPEM(), 0o600); err != nil {
		return nil, err
	}
	if err = s.Cluster.CreateNamespace(ctx, WebhookNamespace, nil); err != nil {
		return nil, err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: WebhookServiceAccount, Namespace: WebhookNamespace,
		Annotations: map[string]string{"eks.amazonaws.com/role-arn": s.Emu.RoleARN}}}
	if err = s.Cluster.Client.Create(ctx, sa); err != nil {
		return nil, err
	}
	say("registering the MutatingWebhookConfiguration from " + ManifestPath)
	if err = InstallWebhook(ctx, s.Cluster.Client, "https://"+s.addr+"/mutate", s.certs.CACert); err != nil {
		return nil, err
	}
	return s, nil
}

// RetiredSecretName is a pull Secret name the stack's webhook has retired
// (config retiredSecretNames): it deletes its managed Secrets of that name.
const RetiredSecretName = "artifactory-pull-retired"

// Config is the webhook's configuration file for this stack. It turns
// provisionOnOptIn off: namespaces get their Secrets from the admission of
// their first pod, whose exchanges and writes the tests count, and the
// demo's broken exchange is the one instance faulty's first pod makes.
func (s *Stack) Config(id Identity) string {
	ca := filepath.Join(s.Dir, "artifactory-ca.pem")
	url := s.Emu.Artifactory.URL()
	return fmt.Sprintf(`instances:
- name: main
  url: %[1]s
  registryHosts: [%[2]q]
  tokenTTL: 1h
  caBundle: %[3]s
- name: burst
  url: %[1]s
  registryHosts: [%[4]q]
  tokenTTL: 1h
  caBundle: %[3]s
  secretName: artifactory-pull-burst
- name: faulty
  url: %[1]s
  registryHosts: [%[5]q]
  tokenTTL: 1h
  caBundle: %[3]s
  secretName: artifactory-pull-faulty
aws:
  authType: %[6]s
  stsEndpoint: %[7]s
requestTimeout: 5s
retiredSecretNames: [%[8]s]
provisionOnOptIn: false
`, url, s.Emu.Registry.Host(), ca, s.BurstHost, s.FaultyHost, id, s.Emu.STS.URL(), RetiredSecretName)
}

// StartWebhook (re)starts the webhook process with the given AWS identity,
// on the address the API server calls. Options, when given, adjust the
// process (another config, kubeconfig, environment or flags) before it
// starts.
func (s *Stack) StartWebhook(ctx context.Context, id Identity, adjust ...func(*WebhookOptions)) error {
	s.StopWebhook()
	o, err := s.WebhookOptions(ctx, id)
	if err != nil {
		return err
	}
	for _, f := range adjust {
		f(&o)
	}
	s.Webhook, err = StartWebhook(ctx, o)
	return err
}

// LeaderArgs run the webhook elected in its namespace with the production
// lease timings, so the refresher and the token checkpoint are active in
// every test. Tests that need fast failover or short-lived tokens pass
// their own leader flags; the benchmark runs one replica without election.
var LeaderArgs = []string{"--leader-election-namespace=" + WebhookNamespace}

// WebhookOptions are the options StartWebhook uses for identity id: the
// stack's binary, config, kubeconfig, certificates and the address the API
// server calls, and the webhook's namespace as in production: it holds the
// leader election Lease (so the refresher runs, elected) and the token
// checkpoint. Tests that run further webhook processes (a second replica)
// start from these and change Addr and Dir.
func (s *Stack) WebhookOptions(ctx context.Context, id Identity) (WebhookOptions, error) {
	env, err := s.identityEnv(ctx, id)
	if err != nil {
		return WebhookOptions{}, err
	}
	return WebhookOptions{
		Binary: s.binary, Dir: filepath.Join(s.Dir, "webhook"), Kubeconfig: s.Cluster.Kubeconfig,
		Config: s.Config(id), Env: env, Addr: s.addr, Certs: s.certs, Stdout: s.logs,
		Args: slices.Clone(LeaderArgs),
	}, nil
}

// StopWebhook stops the webhook process if it runs.
func (s *Stack) StopWebhook() {
	if s.Webhook != nil {
		s.Webhook.Stop()
		s.Webhook = nil
	}
}

// identityEnv writes the token file each identity needs and returns the
// environment EKS would inject into the webhook's pod.
func (s *Stack) identityEnv(ctx context.Context, id Identity) ([]string, error) {
	dir := filepath.Join(s.Dir, "identity")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	switch id {
	case PodIdentity:
		path := filepath.Join(dir, "eks-pod-identity-token")
		if err := os.WriteFile(path, []byte(s.Emu.PodIdentityToken), 0o600); err != nil {
			return nil, err
		}
		return []string{
			"AWS_CONTAINER_CREDENTIALS_FULL_URI=" + s.Emu.PodIdentity.URL(),
			"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=" + path,
		}, nil
	case IRSA:
		cs, err := kubernetes.NewForConfig(s.Cluster.Config)
		if err != nil {
			return nil, err
		}
		tr, err := cs.CoreV1().ServiceAccounts(WebhookNamespace).CreateToken(ctx, WebhookServiceAccount,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
				Audiences: []string{"sts.amazonaws.com"}, ExpirationSeconds: ptr.To[int64](3600)}},
			metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("requesting a projected service account token: %w", err)
		}
		path := filepath.Join(dir, "eks-irsa-token")
		if err := os.WriteFile(path, []byte(tr.Status.Token), 0o600); err != nil {
			return nil, err
		}
		return []string{"AWS_ROLE_ARN=" + s.Emu.RoleARN, "AWS_WEB_IDENTITY_TOKEN_FILE=" + path}, nil
	}
	return nil, fmt.Errorf("unknown identity %q", id)
}

// Close stops everything.
func (s *Stack) Close() {
	s.StopWebhook()
	if s.Emu != nil {
		s.Emu.Close()
	}
	if s.Cluster != nil {
		_ = s.Cluster.Stop()
	}
}
