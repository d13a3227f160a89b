package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// Cluster is a running kube-apiserver + etcd.
type Cluster struct {
	Env        *envtest.Environment
	Config     *rest.Config
	Client     client.Client
	Scheme     *runtime.Scheme
	Kubeconfig string // path of an admin kubeconfig file
}

// StartCluster starts envtest's control plane and writes an admin
// kubeconfig into dir. configure, when given, changes the environment
// before it starts (e.g. the API server's flags).
func StartCluster(dir string, configure ...func(*envtest.Environment)) (*Cluster, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(ModuleRoot(), "bin", "k8s")
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: run `make envtest-bins` (or `make test`) first", bin, assets)
		}
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	// OIDC discovery advertises the JWKS at the advertise address; keep it
	// on loopback so the STS emulator can fetch it, as AWS fetches EKS's.
	env.ControlPlane.GetAPIServer().Configure().Set("advertise-address", "127.0.0.1")
	env.ControlPlane.GetAPIServer().Configure().Set("endpoint-reconciler-type", "none")
	for _, f := range configure {
		f(env)
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting kube-apiserver and etcd: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, hc)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme, HTTPClient: hc, Mapper: mapper})
	if err != nil {
		return nil, err
	}
	admin, err := env.ControlPlane.AddUser(envtest.User{Name: "e2e-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		return nil, err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		return nil, err
	}
	return &Cluster{Env: env, Config: cfg, Client: c, Scheme: scheme, Kubeconfig: path}, nil
}

// Stop stops the control plane.
func (c *Cluster) Stop() error { return c.Env.Stop() }

// Issuer is the API server's service-account token issuer (OIDC discovery
// is served under it).
func (c *Cluster) Issuer() string {
	return c.Env.ControlPlane.APIServer.SecureServing.URL("https", "/").String()
}

// HTTPClient returns a client authenticated as the admin, trusting the API
// server's CA.
func (c *Cluster) HTTPClient() (*http.Client, error) { return rest.HTTPClientFor(c.Config) }

// CreateNamespace creates a namespace with the given labels, and its
// default ServiceAccount (envtest runs no controller-manager to do it).
func (c *Cluster) CreateNamespace(ctx context.Context, name string, labels map[string]string) error {
	ns := &corev1.Namespace{}
	ns.Name = name
	ns.Labels = labels
	if err := c.Client.Create(ctx, ns); err != nil {
		return err
	}
	sa := &corev1.ServiceAccount{}
	sa.Namespace, sa.Name = name, "default"
	return c.Client.Create(ctx, sa)
}

// ModuleRoot is the directory holding the project's go.mod.
func ModuleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err == nil {
		if p := strings.TrimSpace(string(out)); p != "" && p != os.DevNull {
			return filepath.Dir(p)
		}
	}
	wd, _ := os.Getwd()
	for d := wd; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return wd
}

// FreeAddr returns a free 127.0.0.1:port.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Warnings collects the admission warnings the API server returns.
type Warnings struct {
	mu   sync.Mutex
	list []string
}

// HandleWarningHeader implements rest.WarningHandler.
func (w *Warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

// List returns the warnings seen so far.
func (w *Warnings) List() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.list...)
}

// Clientset returns a typed clientset whose warnings go to w.
func (c *Cluster) Clientset(w *Warnings) (*kubernetes.Clientset, error) {
	cfg := rest.CopyConfig(c.Config)
	if w != nil {
		cfg.WarningHandler = w
	}
	return kubernetes.NewForConfig(cfg)
}
