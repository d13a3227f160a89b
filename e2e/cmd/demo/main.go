// Command demo runs the whole product locally — kube-apiserver and etcd,
// strict STS / Pod Identity / Artifactory emulators, an OCI registry, and
// the webhook registered with the API server — and shows a pod being
// patched and its image pulled with the Secret the webhook wrote.
//
//	make demo                       stay up until interrupted (.demo/kubeconfig)
//	make demo ARGS=--once           exit after the showcase (non-zero if a step failed)
//	make demo ARGS=--per-sa         also show per-ServiceAccount identities: two teams,
//	                                two roles, two Artifactory users (issue #11)
//	make demo ARGS="--per-sa --once"
//	make demo ARGS=--oidc           instead show Artifactory's OIDC exchange: the API server's
//	                                issuer as provider, two teams mapped by sub to two users,
//	                                no AWS and no annotation (issue #12); not with --per-sa
//	make demo ARGS="--oidc --once"
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

func main() {
	once := flag.Bool("once", false, "exit after the showcase instead of staying up")
	verbose := flag.Bool("v", false, "print the webhook's logs")
	perSA := flag.Bool("per-sa", false, "also show per-ServiceAccount identities: two teams pulling as their own IAM roles")
	oidc := flag.Bool("oidc", false, "also show Artifactory's OIDC exchange: two teams' ServiceAccount tokens mapped by sub to their own users (not with --per-sa)")
	flag.Parse()
	if *perSA && *oidc {
		// Both showcases take the registry's localhost alias (instance burst's
		// host), the only other name the registry answers to.
		fmt.Fprintln(os.Stderr, "demo: --per-sa and --oidc are exclusive (both use the registry's localhost alias); run them one at a time")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *once, *verbose, *perSA, *oidc); err != nil {
		fmt.Fprintln(os.Stderr, "\ndemo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

func run(ctx context.Context, once, verbose, perSA, oidc bool) error {
	root := harness.ModuleRoot()
	demoDir := filepath.Join(root, ".demo")
	if err := os.MkdirAll(demoDir, 0o700); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "apw-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	o := harness.StackOptions{Dir: work, Progress: func(s string) { step("%s", s) }}
	if verbose {
		o.Logs = os.Stdout
	}
	s, err := harness.StartStack(ctx, o)
	if err != nil {
		return err
	}
	defer s.Close()
	var adjust []func(*harness.WebhookOptions)
	if perSA {
		cfg, err := perSAConfig(s)
		if err != nil {
			return err
		}
		adjust = append(adjust, func(o *harness.WebhookOptions) { o.Config = cfg })
		step("starting the webhook (AWS identity: EKS Pod Identity, via the agent emulator; instance %q: each pod's ServiceAccount's role, IRSA)", teamsInstance)
	} else if oidc {
		cfg, err := oidcConfig(s)
		if err != nil {
			return err
		}
		adjust = append(adjust, func(o *harness.WebhookOptions) { o.Config = cfg })
		step("starting the webhook (AWS identity: EKS Pod Identity, via the agent emulator; instance %q: each pod's ServiceAccount token, Artifactory's OIDC exchange)", oidcInstance)
	} else {
		step("starting the webhook (AWS identity: EKS Pod Identity, via the agent emulator)")
	}
	if err := s.StartWebhook(ctx, harness.PodIdentity, adjust...); err != nil {
		return err
	}
	kc, err := os.ReadFile(s.Cluster.Kubeconfig)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(demoDir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return err
	}

	const ns = "demo"
	step("creating namespace %q with label %s=enabled", ns, harness.OptInLabel)
	if err := s.Cluster.CreateNamespace(ctx, ns, map[string]string{harness.OptInLabel: "enabled"}); err != nil {
		return err
	}
	var warnings harness.Warnings
	cs, err := s.Cluster.Clientset(&warnings)
	if err != nil {
		return err
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: corev1.PodSpec{Containers: []corev1.Container{
		{Name: "app", Image: s.Image},
		{Name: "sidecar", Image: "docker.io/library/busybox:1.36"},
	}}}
	step("creating pod %s/app with images %s and docker.io/library/busybox:1.36", ns, s.Image)
	before := s.Emu.Artifactory.Exchanges()
	start := time.Now()
	got, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating the pod: %w", err)
	}
	fmt.Printf("    created in %s; admission warnings: %v\n", time.Since(start).Round(time.Millisecond), warnings.List())

	step("the stored pod's imagePullSecrets")
	var names []string
	for _, r := range got.Spec.ImagePullSecrets {
		names = append(names, r.Name)
	}
	fmt.Printf("    %v\n", names)
	if len(names) == 0 {
		return fmt.Errorf("the pod was not patched")
	}

	step("the Secret the webhook wrote (token redacted)")
	sec, err := cs.CoreV1().Secrets(ns).Get(ctx, names[0], metav1.GetOptions{})
	if err != nil {
		return err
	}
	printSecret(sec, s.Emu.Registry.Host())

	step("the AWS-signed token exchange")
	fmt.Printf("    exchanges answered by the Artifactory emulator for this pod: %d\n", s.Emu.Artifactory.Exchanges()-before)
	fmt.Printf("    (the webhook signed sts:GetCallerIdentity with SigV4A; the emulator replayed it to the STS\n" +
		"     emulator, got the assumed-role ARN, mapped the role to its user and issued a token)\n")

	step("pulling %s with the Secret, the way kubelet resolves pull secrets", s.Image)
	if err := s.Emu.Registry.PullManifest(ctx, s.Image, []corev1.Secret{*sec}); err != nil {
		return fmt.Errorf("pull with the secret failed: %w", err)
	}
	fmt.Println("    manifest fetched: OK")
	if err := s.Emu.Registry.PullManifest(ctx, s.Image, nil); err == nil {
		return fmt.Errorf("the registry served the image without credentials")
	}
	fmt.Println("    without the Secret: denied, as it should be")

	if perSA {
		if err := showPerServiceAccount(ctx, s); err != nil {
			return err
		}
	}
	if oidc {
		if err := showOIDC(ctx, s); err != nil {
			return err
		}
	}
	if once {
		step("done")
		return nil
	}
	step("the stack stays up; press Ctrl-C to stop")
	fmt.Printf("    export KUBECONFIG=%s\n", kubeconfig)
	fmt.Printf("    kubectl create namespace try && kubectl label namespace try %s=enabled\n", harness.OptInLabel)
	fmt.Printf("    kubectl -n try run web --image=%s && kubectl -n try get pod web -o jsonpath='{.spec.imagePullSecrets}'\n", s.Image)
	if perSA {
		fmt.Printf("    kubectl -n team-a create serviceaccount ci && kubectl -n team-a annotate serviceaccount ci %s=arn:aws:iam::%s:role/team-a-puller\n",
			config.RoleARNAnnotation, demoAccount)
		fmt.Printf("    kubectl -n team-a run ci --image=%s --overrides='{\"spec\":{\"serviceAccountName\":\"ci\"}}' && kubectl -n team-a get pod ci -o jsonpath='{.spec.imagePullSecrets}'\n",
			newDemoTeam(s, "a", "").image)
	}
	if oidc {
		fmt.Printf("    kubectl -n team-a create serviceaccount ci  # no annotation: mapping %q of provider %q matches its sub\n",
			newOIDCTeam(s, "a", "", 1).mapping, oidcProvider)
		fmt.Printf("    kubectl -n team-a run ci --image=%s --overrides='{\"spec\":{\"serviceAccountName\":\"ci\"}}' && kubectl -n team-a get pod ci -o jsonpath='{.spec.imagePullSecrets}'\n",
			newOIDCTeam(s, "a", "", 1).image)
	}
	fmt.Printf("    metrics: http://%s/metrics\n", s.Webhook.MetricsAddr)
	<-ctx.Done()
	return nil
}

// printSecret prints a managed Secret, token redacted; extra names further
// annotations to print after the instance's.
func printSecret(sec *corev1.Secret, host string, extra ...string) {
	fmt.Printf("    %s/%s  type=%s\n", sec.Namespace, sec.Name, sec.Type)
	fmt.Printf("    labels:      %v\n", sec.Labels)
	keys := append(append([]string{pullsecret.AnnotationInstance}, extra...), pullsecret.AnnotationHosts, pullsecret.AnnotationIssuedAt, pullsecret.AnnotationExpiresAt)
	width := 40
	for _, k := range keys {
		width = max(width, len(k)+2)
	}
	for _, k := range keys {
		fmt.Printf("    %-*s %s\n", width, k+":", sec.Annotations[k])
	}
	var cfg struct {
		Auths map[string]json.RawMessage `json:"auths"`
	}
	_ = json.Unmarshal(sec.Data[corev1.DockerConfigJsonKey], &cfg)
	hosts := make([]string, 0, len(cfg.Auths))
	for h := range cfg.Auths {
		hosts = append(hosts, h)
	}
	user, _, err := pullsecret.ParseDockerConfigJSON(sec.Data[corev1.DockerConfigJsonKey], host)
	if err != nil {
		fmt.Printf("    .dockerconfigjson: unreadable: %v\n", err)
		return
	}
	fmt.Printf("    .dockerconfigjson: auths for %s, username %q, password [redacted]\n", strings.Join(hosts, ", "), user)
}
