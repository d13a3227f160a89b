// Command kubelet-keyring resolves image credentials exactly as kubelet
// does with exec credential provider plugins: it registers the plugins of a
// CredentialProviderConfig with kubelet's own plugin runner
// (k8s.io/kubernetes/pkg/credentialprovider/plugin), builds the per-pod
// keyring kubelet builds, and prints what the keyring's Lookup answers for
// each image, as JSON on stdout. The end-to-end tests use it to prove the
// credential provider against kubelet's code, not a reimplementation.
//
// In the service-account-token mode (tokenAttributes in the config) the
// pod's ServiceAccount and its tokens come from the API server of
// --kubeconfig, as kubelet's token manager gets them: a TokenRequest bound
// to the pod.
//
// It lives in the kube-apiserver tools module so that the Go build cache
// serves the packages both share.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/kubernetes/pkg/credentialprovider/plugin"
)

// result is one image's answer: the keyring's credentials, in the order
// kubelet tries them, and whether it found any.
type result struct {
	Image string `json:"image"`
	Found bool   `json:"found"`
	Auth  []auth `json:"auth"`
}

type auth struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func main() {
	var (
		configPath = flag.String("config", "", "CredentialProviderConfig file (required)")
		binDir     = flag.String("bin-dir", "", "directory of the plugin binaries (required)")
		kubeconfig = flag.String("kubeconfig", "", "kubeconfig of the API server (service-account-token mode)")
		namespace  = flag.String("namespace", "", "pod namespace")
		podName    = flag.String("pod", "", "pod name")
		podUID     = flag.String("pod-uid", "", "pod UID")
		sa         = flag.String("service-account", "", "pod's ServiceAccount")
	)
	flag.Parse()
	if err := run(*configPath, *binDir, *kubeconfig, *namespace, *podName, *podUID, *sa, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "kubelet-keyring:", err)
		os.Exit(1)
	}
}

func run(configPath, binDir, kubeconfig, namespace, podName, podUID, sa string, images []string) error {
	if configPath == "" || binDir == "" || len(images) == 0 {
		return fmt.Errorf("usage: kubelet-keyring --config F --bin-dir D [--kubeconfig K --namespace NS --pod P --pod-uid U --service-account SA] IMAGE...")
	}
	getToken := func(string, string, *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
		return nil, fmt.Errorf("no --kubeconfig: no ServiceAccount tokens")
	}
	getSA := func(string, string) (*corev1.ServiceAccount, error) {
		return nil, fmt.Errorf("no --kubeconfig: no ServiceAccounts")
	}
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return err
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		getToken = func(ns, name string, tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, tr, metav1.CreateOptions{})
		}
		getSA = func(ns, name string) (*corev1.ServiceAccount, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return cs.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
		}
	}
	if err := plugin.RegisterCredentialProviderPlugins(configPath, binDir, getToken, getSA); err != nil {
		return err
	}
	keyring := plugin.NewExternalCredentialProviderDockerKeyring(namespace, podName, podUID, sa)
	out := make([]result, 0, len(images))
	for _, image := range images {
		configs, found := keyring.Lookup(image)
		r := result{Image: image, Found: found, Auth: []auth{}}
		for _, c := range configs {
			r.Auth = append(r.Auth, auth{Username: c.Username, Password: c.Password})
		}
		out = append(out, r)
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
