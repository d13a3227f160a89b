// Command demo runs the whole product locally — kube-apiserver and etcd,
// strict STS / Pod Identity / Artifactory emulators, an OCI registry, and
// the webhook registered with the API server — and shows a pod being
// patched and its image pulled with the Secret the webhook wrote.
//
//	make demo                       stay up until interrupted and print what to try next: kubectl
//	                                commands (.demo/kubeconfig), curl switches that break and heal
//	                                Artifactory's exchange (served on 127.0.0.1), and the webhook's
//	                                check command (.demo/config.yaml)
//	make demo ARGS=--once           exit after the showcase, which ends by breaking and healing the
//	                                exchange through those switches (non-zero if a step failed)
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
	"slices"
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
	// The configuration and AWS environment the webhook starts with, for
	// the check command the demo prints.
	var webhookConfig string
	var webhookEnv []string
	adjust = append(adjust, func(o *harness.WebhookOptions) { webhookConfig, webhookEnv = o.Config, slices.Clone(o.Env) })
	if err := s.StartWebhook(ctx, harness.PodIdentity, adjust...); err != nil {
		return err
	}
	kc, err := os.ReadFile(s.Cluster.Kubeconfig)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(demoDir, "kubeconfig")
	if err := writePrivate(kubeconfig, kc); err != nil {
		return err
	}
	checkCmd, err := writeCheckFiles(demoDir, webhookConfig, webhookEnv)
	defer os.Remove(filepath.Join(demoDir, podIdentityTokenFile)) // the emulator's token dies with it
	if err != nil {
		return err
	}
	ctl, err := startControl(s)
	if err != nil {
		return err
	}
	defer ctl.Close()

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
		if err := showBreakAndHeal(ctx, s, ctl, ns); err != nil {
			return err
		}
		step("done")
		return nil
	}
	printTryNext(s, ctl, tryNext{kubeconfig: kubeconfig, ns: ns, secret: names[0], check: checkCmd, perSA: perSA, oidc: oidc})
	<-ctx.Done()
	return nil
}

// podIdentityTokenFile is the copy, in .demo, of the Pod Identity token file
// the webhook reads: the check command reads it too.
const podIdentityTokenFile = "eks-pod-identity-token"

// writeCheckFiles writes the webhook's configuration (config.yaml) and a copy
// of its Pod Identity token file into dir, and returns the command that runs
// the webhook's check against them with the webhook's AWS environment.
func writeCheckFiles(dir, cfg string, env []string) (string, error) {
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := writePrivate(cfgPath, []byte(cfg)); err != nil {
		return "", err
	}
	words := []string{"env"}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if k == "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" {
			token, err := os.ReadFile(v)
			if err != nil {
				return "", err
			}
			v = filepath.Join(dir, podIdentityTokenFile)
			if err := writePrivate(v, token); err != nil {
				return "", err
			}
		}
		words = append(words, k+"="+shellWord(v))
	}
	words = append(words, "go", "-C", shellWord(harness.ModuleRoot()), "run", "./cmd/artifactory-pull-webhook", "check", "--config", shellWord(cfgPath))
	return strings.Join(words, " "), nil
}

// writePrivate writes b to path readable by the user alone, also when path
// exists with a wider mode.
func writePrivate(path string, b []byte) error {
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return err
	}
	return os.Chmod(path, 0o600)
}

// tryNext is what printTryNext needs from the showcase.
type tryNext struct {
	kubeconfig, ns string
	secret         string // the showcase pod's pull Secret
	check          string // the check command line
	perSA, oidc    bool
}

// printTryNext ends the showcase with commands to try against the running
// stack, each ready to paste.
func printTryNext(s *harness.Stack, c *control, t tryNext) {
	kubectl := "kubectl --kubeconfig " + shellWord(t.kubeconfig)
	faulty := faultyImage(s)
	step("the stack stays up until Ctrl-C; try next")
	fmt.Printf("    1. a pod in namespace %s gets its pull Secret:\n", t.ns)
	fmt.Printf("       %s -n %s run web --image=%s\n", kubectl, t.ns, s.Image)
	fmt.Printf("       %s -n %s get pod web -o jsonpath='{.spec.imagePullSecrets[*].name}{\"\\n\"}'\n", kubectl, t.ns)
	fmt.Printf("       %s -n %s describe secret %s   # the token is not shown\n", kubectl, t.ns, t.secret)
	fmt.Printf("    2. break the exchange: instance faulty holds no token yet, so its first pod needs one:\n")
	fmt.Printf("       curl -X POST '%s/artifactory?status=401'   # or status=403, status=500, down=true, delay=10s\n", c.URL)
	fmt.Printf("       %s -n %s run broken --image=%s   # admitted without a Secret, with a warning\n", kubectl, t.ns, faulty)
	fmt.Printf("       %s -n %s get events --field-selector reason=TokenExchangeFailed\n", kubectl, t.ns)
	fmt.Printf("    3. heal it: faulty's next pod gets its Secret (faulty then holds a token, as main does):\n")
	fmt.Printf("       curl -X POST %s/heal\n", c.URL)
	fmt.Printf("       %s -n %s run healed --image=%s\n", kubectl, t.ns, faulty)
	fmt.Printf("       %s -n %s get pod healed -o jsonpath='{.spec.imagePullSecrets[*].name}{\"\\n\"}'\n", kubectl, t.ns)
	fmt.Printf("    4. the webhook's diagnostics (while broken, add --instance faulty to see the failure explained):\n")
	fmt.Printf("       %s\n", t.check)
	if t.perSA {
		fmt.Printf("    per-ServiceAccount identities: a ServiceAccount of team-a's role, and its pod:\n")
		fmt.Printf("       %s -n team-a create serviceaccount ci && %s -n team-a annotate serviceaccount ci %s=arn:aws:iam::%s:role/team-a-puller\n",
			kubectl, kubectl, config.RoleARNAnnotation, demoAccount)
		fmt.Printf("       %s -n team-a run ci --image=%s --overrides='{\"spec\":{\"serviceAccountName\":\"ci\"}}' && %s -n team-a get pod ci -o jsonpath='{.spec.imagePullSecrets}'\n",
			kubectl, newDemoTeam(s, "a", "").image, kubectl)
	}
	if t.oidc {
		fmt.Printf("    OIDC: a ServiceAccount without annotation (mapping %q of provider %q matches its sub), and its pod:\n",
			newOIDCTeam(s, "a", "", 1).mapping, oidcProvider)
		fmt.Printf("       %s -n team-a create serviceaccount ci\n", kubectl)
		fmt.Printf("       %s -n team-a run ci --image=%s --overrides='{\"spec\":{\"serviceAccountName\":\"ci\"}}' && %s -n team-a get pod ci -o jsonpath='{.spec.imagePullSecrets}'\n",
			kubectl, newOIDCTeam(s, "a", "", 1).image, kubectl)
	}
	fmt.Printf("    metrics: http://%s/metrics   switches: curl %s/\n", s.Webhook.MetricsAddr, c.URL)
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
