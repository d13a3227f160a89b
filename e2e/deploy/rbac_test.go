package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/certs"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// The chart installed as the stack's webhook: release and namespace
// artifactory-pull-webhook, so its ServiceAccount is the one the harness
// created.
const (
	release     = harness.WebhookNamespace
	saUser      = "system:serviceaccount:" + harness.WebhookNamespace + ":" + harness.WebhookServiceAccount
	certSecret  = release + "-serving-cert"
	webhookName = release // the harness's MutatingWebhookConfiguration, rendered from the chart
)

var installRBAC sync.Once

// chartRBAC applies the chart's RBAC, rendered with the stack webhook's
// own configuration (so the Secret names are the ones it writes), once.
func chartRBAC(t *testing.T) {
	t.Helper()
	installRBAC.Do(func() {
		var cfg map[string]any
		if err := yaml.Unmarshal([]byte(stack.Config(harness.PodIdentity)), &cfg); err != nil {
			t.Fatal(err)
		}
		b, err := yaml.Marshal(map[string]any{"config": cfg})
		if err != nil {
			t.Fatal(err)
		}
		values := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(values, b, 0o600); err != nil {
			t.Fatal(err)
		}
		objs := render(t, release, harness.WebhookNamespace, values)
		apply(t, stack.Cluster.Client, only(objs, "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
			"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"))
		waitForSecretPolicy(t)
	})
}

// secretPolicyMessage is how the chart's ValidatingAdmissionPolicy starts
// its refusal of a Secret write by the webhook's ServiceAccount.
const secretPolicyMessage = "artifactory-pull-webhook may write only its pull Secrets"

// deniedByPolicy reports whether err is the chart's policy refusing a write.
func deniedByPolicy(err error) bool {
	return err != nil && strings.Contains(err.Error(), secretPolicyMessage)
}

// waitForSecretPolicy waits until the API server enforces the chart's
// Secret write policy (it loads policies from a watch): a dry-run create of
// an Opaque Secret as the ServiceAccount is refused.
func waitForSecretPolicy(t *testing.T) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(asServiceAccount())
	if err != nil {
		t.Fatal(err)
	}
	probe := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "policy-probe", Namespace: "default"}}
	err = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			_, err := cs.CoreV1().Secrets("default").Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return deniedByPolicy(err), nil
		})
	if err != nil {
		t.Fatalf("the chart's Secret write policy is not enforced: %v", err)
	}
}

// pullSecret is a Secret the webhook may write: a configured name, type
// kubernetes.io/dockerconfigjson, the managed-by label.
func pullSecret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	data, err := pullsecret.DockerConfigJSON([]string{"registry.test"}, "user", credentials.NewToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels: map[string]string{pullsecret.ManagedByLabel: pullsecret.ManagedByValue}},
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: data},
	}
}

// asServiceAccount is the admin config impersonating the chart's
// ServiceAccount: RBAC decides every request as for the webhook's pod.
func asServiceAccount() *rest.Config {
	cfg := rest.CopyConfig(stack.Cluster.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: saUser,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + harness.WebhookNamespace, "system:authenticated"}}
	return cfg
}

var nsSeq struct {
	sync.Mutex
	n int
}

func newNamespace(t *testing.T, prefix string, labels map[string]string) string {
	t.Helper()
	nsSeq.Lock()
	nsSeq.n++
	name := fmt.Sprintf("%s-%d", prefix, nsSeq.n)
	nsSeq.Unlock()
	if err := stack.Cluster.CreateNamespace(context.Background(), name, labels); err != nil {
		t.Fatal(err)
	}
	return name
}

func TestChartServiceAccountCanMakeEveryCallOfTheWebhookAndReadNoOtherSecret(t *testing.T) {
	chartRBAC(t)
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(asServiceAccount())
	if err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t, "rbac", nil)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s as the chart's ServiceAccount: %v", what, err)
		}
	}
	forbidden := func(what string, err error) {
		t.Helper()
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s as the chart's ServiceAccount: got %v, want Forbidden", what, err)
		}
	}
	watchOnce := func(what string, w interface{ Stop() }, err error) {
		t.Helper()
		must(what, err)
		if err == nil {
			w.Stop()
		}
	}

	// Namespaces: the opt-in informer and the direct read on a cache miss.
	_, err = cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	must("get namespace", err)
	_, err = cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	must("list namespaces", err)
	w, err := cs.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{})
	watchOnce("watch namespaces", w, err)

	// Managed Secrets: one informer per configured name lists and watches
	// with a metadata.name field selector, which RBAC's resourceNames
	// authorizes; without it (any label selector) nothing can be listed.
	managed := pullsecret.ManagedByLabel + "=" + pullsecret.ManagedByValue
	for _, name := range []string{"artifactory-pull", "artifactory-pull-burst", "artifactory-pull-faulty", harness.RetiredSecretName} {
		byName := metav1.ListOptions{LabelSelector: managed, FieldSelector: "metadata.name=" + name}
		_, err = cs.CoreV1().Secrets("").List(ctx, byName)
		must("list managed secrets named "+name, err)
		w, err = cs.CoreV1().Secrets("").Watch(ctx, byName)
		watchOnce("watch managed secrets named "+name, w, err)
	}
	_, err = cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{LabelSelector: managed})
	forbidden("list secrets by the managed-by label alone", err)
	_, err = cs.CoreV1().Secrets("").Watch(ctx, metav1.ListOptions{LabelSelector: managed})
	forbidden("watch secrets by the managed-by label alone", err)
	_, err = cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=db-password"})
	forbidden("list secrets of another name", err)
	_, err = cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	forbidden("list the secrets of one namespace", err)

	// The pull Secret's lifecycle in a namespace.
	_, err = cs.CoreV1().Secrets(ns).Create(ctx, pullSecret(t, ns, "artifactory-pull"), metav1.CreateOptions{})
	must("create the pull secret", err)
	got, err := cs.CoreV1().Secrets(ns).Get(ctx, "artifactory-pull", metav1.GetOptions{})
	must("get the pull secret", err)
	if err == nil {
		got.Annotations = map[string]string{"updated": "yes"}
		updated, err := cs.CoreV1().Secrets(ns).Update(ctx, got, metav1.UpdateOptions{})
		must("update the pull secret", err)
		if err == nil {
			got = updated
		}
		got.Labels = nil
		_, err = cs.CoreV1().Secrets(ns).Update(ctx, got, metav1.UpdateOptions{})
		if !deniedByPolicy(err) {
			t.Errorf("update dropping the managed-by label: got %v, want the policy's refusal", err)
		}
	}
	_, err = cs.CoreV1().Secrets(ns).Patch(ctx, "artifactory-pull", types.MergePatchType, []byte(`{"metadata":{"labels":{"p":"1"}}}`), metav1.PatchOptions{})
	forbidden("patch the pull secret (the webhook only updates)", err)
	must("delete the pull secret", cs.CoreV1().Secrets(ns).Delete(ctx, "artifactory-pull", metav1.DeleteOptions{}))

	// A retired name: deleted, never written.
	if err := stack.Cluster.Client.Create(ctx, pullSecret(t, ns, harness.RetiredSecretName)); err != nil {
		t.Fatal(err)
	}
	retired, err := cs.CoreV1().Secrets(ns).Get(ctx, harness.RetiredSecretName, metav1.GetOptions{})
	must("get a secret of a retired name", err)
	if err == nil {
		_, err = cs.CoreV1().Secrets(ns).Update(ctx, retired, metav1.UpdateOptions{})
		forbidden("update a secret of a retired name", err)
	}
	must("delete a secret of a retired name", cs.CoreV1().Secrets(ns).Delete(ctx, harness.RetiredSecretName, metav1.DeleteOptions{}))

	// Creates the policy refuses: RBAC allows create of any Secret, the
	// ValidatingAdmissionPolicy only the webhook's own kinds of Secret.
	opaque := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "artifactory-pull", Namespace: ns}}
	saToken := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "artifactory-pull", Namespace: ns,
		Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}}, Type: corev1.SecretTypeServiceAccountToken}
	unlabelled := pullSecret(t, ns, "artifactory-pull")
	unlabelled.Labels = nil
	for what, sec := range map[string]*corev1.Secret{
		"an Opaque Secret of a pull secret's name":               opaque,
		"a service-account-token Secret":                         saToken,
		"a dockerconfigjson Secret of another name":              pullSecret(t, ns, "db-password"),
		"a dockerconfigjson Secret without the managed-by label": unlabelled,
		"an Opaque Secret of the checkpoint's name elsewhere": {ObjectMeta: metav1.ObjectMeta{
			Name: pullsecret.DefaultCheckpointSecret, Namespace: ns}},
	} {
		_, err := cs.CoreV1().Secrets(ns).Create(ctx, sec, metav1.CreateOptions{})
		if !deniedByPolicy(err) {
			t.Errorf("create %s as the chart's ServiceAccount: got %v, want the policy's refusal", what, err)
		}
	}

	// Events on the namespace, both APIs.
	_, err = cs.CoreV1().Events(ns).Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: "apw-", Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Namespace", Name: ns, Namespace: ns, APIVersion: "v1"},
		Reason:         "TokenExchangeFailed", Message: "test", Type: corev1.EventTypeWarning,
	}, metav1.CreateOptions{})
	must("create a core/v1 event", err)
	_, err = cs.EventsV1().Events(ns).Create(ctx, &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "apw-", Namespace: ns},
		EventTime:  metav1.NowMicro(), ReportingController: "artifactory-pull-webhook", ReportingInstance: "test",
		Action: "Exchange", Reason: "TokenExchangeFailed", Type: corev1.EventTypeWarning,
		Regarding: corev1.ObjectReference{Kind: "Namespace", Name: ns, Namespace: ns, APIVersion: "v1"},
	}, metav1.CreateOptions{})
	must("create an events.k8s.io/v1 event", err)

	// Leader election Lease, in its own namespace only.
	lease, err := cs.CoordinationV1().Leases(harness.WebhookNamespace).Create(ctx,
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "artifactory-pull-webhook-leader"}}, metav1.CreateOptions{})
	must("create the lease", err)
	if err == nil {
		lease, err = cs.CoordinationV1().Leases(harness.WebhookNamespace).Get(ctx, lease.Name, metav1.GetOptions{})
		must("get the lease", err)
		_, err = cs.CoordinationV1().Leases(harness.WebhookNamespace).Update(ctx, lease, metav1.UpdateOptions{})
		must("update the lease", err)
	}
	_, err = cs.CoordinationV1().Leases(ns).Create(ctx,
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere"}}, metav1.CreateOptions{})
	forbidden("create a lease in another namespace", err)

	// Token checkpoint: one Secret in the webhook's own namespace, by name
	// (the webhook may already have created it).
	checkpoints := cs.CoreV1().Secrets(harness.WebhookNamespace)
	_, err = checkpoints.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: pullsecret.DefaultCheckpointSecret,
		Labels: map[string]string{pullsecret.CheckpointLabel: "true"}}}, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		must("create the token checkpoint", err)
	}
	cp, err := checkpoints.Get(ctx, pullsecret.DefaultCheckpointSecret, metav1.GetOptions{})
	must("get the token checkpoint", err)
	if err == nil {
		_, err = checkpoints.Update(ctx, cp, metav1.UpdateOptions{})
		must("update the token checkpoint", err)
	}
	_, err = checkpoints.Patch(ctx, pullsecret.DefaultCheckpointSecret, types.MergePatchType, []byte(`{"metadata":{"labels":{"p":"1"}}}`), metav1.PatchOptions{})
	must("patch the token checkpoint", err)
	_, err = cs.CoreV1().Secrets(ns).Get(ctx, pullsecret.DefaultCheckpointSecret, metav1.GetOptions{})
	forbidden("get a Secret of the checkpoint's name in another namespace", err)

	// Self-managed certificates: the shared Secret and the CA injection,
	// done by the certs package itself with the ServiceAccount's rights.
	sa, err := client.New(asServiceAccount(), client.Options{Scheme: stack.Cluster.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	sm, err := certs.NewSelfManaged(certs.SelfManagedOptions{Client: sa, Namespace: harness.WebhookNamespace,
		SecretName: certSecret, WebhookConfigName: webhookName, Hosts: certs.ServiceHosts(release, harness.WebhookNamespace)})
	if err != nil {
		t.Fatal(err)
	}
	must("self-managed certificate sync (create Secret, inject caBundle)", sm.Sync(ctx))
	_, err = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "someone-elses", metav1.GetOptions{})
	forbidden("get another MutatingWebhookConfiguration", err)

	// No other Secret: a tenant's own Secret can be neither read nor changed.
	if err := stack.Cluster.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db-password", Namespace: ns},
		StringData: map[string]string{"password": "hunter2"}}); err != nil {
		t.Fatal(err)
	}
	_, err = cs.CoreV1().Secrets(ns).Get(ctx, "db-password", metav1.GetOptions{})
	forbidden("get an arbitrary Secret in another namespace", err)
	_, err = cs.CoreV1().Secrets(ns).Patch(ctx, "db-password", types.MergePatchType, []byte(`{"metadata":{"labels":{"p":"1"}}}`), metav1.PatchOptions{})
	forbidden("patch an arbitrary Secret", err)
	err = cs.CoreV1().Secrets(ns).Delete(ctx, "db-password", metav1.DeleteOptions{})
	forbidden("delete an arbitrary Secret", err)
}

// impersonatingKubeconfig writes the admin kubeconfig with every user
// impersonating the chart's ServiceAccount.
func impersonatingKubeconfig(t *testing.T) string {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(stack.Cluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range kc.AuthInfos {
		ai.Impersonate = saUser
		ai.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + harness.WebhookNamespace, "system:authenticated"}
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestWebhookWorksEndToEndWithOnlyTheChartsRBAC(t *testing.T) {
	chartRBAC(t)
	ctx := context.Background()
	kubeconfig := impersonatingKubeconfig(t)
	// Ready means its caches synced: list/watch of namespaces and managed
	// Secrets and the start-up seeding all ran as the ServiceAccount.
	// POD_NAMESPACE turns on leader election (Lease) as in the chart.
	adjust := func(o *harness.WebhookOptions) {
		o.Kubeconfig = kubeconfig
		o.Env = append(o.Env, "POD_NAMESPACE="+harness.WebhookNamespace)
	}
	if err := stack.StartWebhook(ctx, harness.PodIdentity, adjust); err != nil {
		t.Fatalf("starting the webhook as the chart's ServiceAccount: %v", err)
	}
	t.Cleanup(stack.StopWebhook)
	cs, err := stack.Cluster.Clientset(nil)
	if err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t, "rbac-e2e", map[string]string{harness.OptInLabel: "enabled"})
	// A managed Secret of a retired name, in a namespace that does not opt
	// in: the refresher deletes it (get/list/watch/delete by that name).
	retiredNS := newNamespace(t, "rbac-retired", nil)
	if err := stack.Cluster.Client.Create(ctx, pullSecret(t, retiredNS, harness.RetiredSecretName)); err != nil {
		t.Fatal(err)
	}
	createPod := func(name, image string) *corev1.Pod {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}}}
		got, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating pod %s: %v", name, err)
		}
		return got
	}

	// Mint, create the Secret, patch the pod.
	got := createPod("app", stack.Image)
	if len(got.Spec.ImagePullSecrets) != 1 || got.Spec.ImagePullSecrets[0].Name != "artifactory-pull" {
		t.Fatalf("imagePullSecrets = %v, want [artifactory-pull]\n%s", got.Spec.ImagePullSecrets, stack.Webhook.Logs())
	}
	if err := stack.Cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "artifactory-pull"}, &corev1.Secret{}); err != nil {
		t.Fatalf("pull Secret not written: %v", err)
	}
	// The minted token is checkpointed in the webhook's namespace.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		cp := &corev1.Secret{}
		err := stack.Cluster.Client.Get(ctx, client.ObjectKey{Namespace: harness.WebhookNamespace, Name: pullsecret.DefaultCheckpointSecret}, cp)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return len(cp.Data["main."+credentials.WebhookIdentity]) > 0, err
	})
	if err != nil {
		t.Fatalf("the token checkpoint was not written as the ServiceAccount: %v\n%s", err, stack.Webhook.Logs())
	}
	// A failed exchange records an Event on the namespace.
	stack.Emu.Artifactory.SetStatus(401, `{"errors":[{"status":401,"message":"no user is mapped"}]}`)
	defer stack.Emu.Artifactory.SetStatus(0, "")
	createPod("faulty", stack.FaultyHost+"/team/app:1.0")
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		// Events about a Namespace (cluster-scoped) may be stored in
		// "default": look everywhere for one regarding ns.
		var ev eventsv1.EventList
		if err := stack.Cluster.Client.List(ctx, &ev); err != nil {
			return false, err
		}
		for _, e := range ev.Items {
			if e.Reason == "TokenExchangeFailed" && e.Regarding.Name == ns {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no TokenExchangeFailed event recorded as the ServiceAccount: %v\n%s", err, stack.Webhook.Logs())
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := stack.Cluster.Client.Get(ctx, client.ObjectKey{Namespace: retiredNS, Name: harness.RetiredSecretName}, &corev1.Secret{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	if err != nil {
		t.Errorf("the managed Secret of a retired name was not deleted as the ServiceAccount: %v\n%s", err, stack.Webhook.Logs())
	}
	// The elected replica holds the Lease in its own namespace.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var leases coordinationv1.LeaseList
		if err := stack.Cluster.Client.List(ctx, &leases, client.InNamespace(harness.WebhookNamespace)); err != nil {
			return false, err
		}
		for _, l := range leases.Items {
			if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" && l.Name != "artifactory-pull-webhook-leader" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Errorf("no leader Lease acquired as the ServiceAccount: %v", err)
	}
	if logs := stack.Webhook.Logs(); strings.Contains(strings.ToLower(logs), "forbidden") {
		t.Errorf("the webhook hit a Forbidden error with the chart's RBAC:\n%s", logs)
	}
}
