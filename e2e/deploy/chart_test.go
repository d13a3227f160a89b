package deploy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
)

// chartCase is one value set and what the API server must hold after it is
// applied.
type chartCase struct {
	name, values   string // values: file under the chart's ci/ ("" = defaults)
	fullname       string
	optIn, optOut  [2]string
	failurePolicy  admissionregistrationv1.FailurePolicyType
	timeoutSeconds int32
	excluded       []string
	certManager    bool
	roleARN        string
	pullSecrets    []string
	replicas       int32
	observability  bool
	// perServiceAccount: an instance has identity serviceAccount, so the
	// chart adds the ServiceAccount and unnamed Secret rules and the token
	// request policy; no other value set may have any of them.
	perServiceAccount bool
	// selfToken: an instance of exchange oidc and identity webhook exchanges
	// the webhook's own ServiceAccount token, so the Deployment sets
	// POD_SERVICE_ACCOUNT, the Role grants that token by name and the token
	// request policy is rendered.
	selfToken bool
	// extraMounts are the mount paths of extraVolumeMounts.
	extraMounts []string
}

var chartCases = []chartCase{
	{name: "defaults", fullname: "defaults-artifactory-pull-webhook",
		optIn: [2]string{"artifactory-pull-webhook/inject", "enabled"}, optOut: [2]string{"artifactory-pull-webhook/inject", "disabled"},
		failurePolicy: admissionregistrationv1.Ignore, timeoutSeconds: 10, excluded: []string{"kube-system"},
		pullSecrets: []string{"artifactory-pull"}, replicas: 2},
	{name: "cert-manager", values: "cert-manager-values.yaml", fullname: "cert-manager-artifactory-pull-webhook",
		optIn: [2]string{"artifactory-pull-webhook/inject", "enabled"}, optOut: [2]string{"artifactory-pull-webhook/inject", "disabled"},
		failurePolicy: admissionregistrationv1.Ignore, timeoutSeconds: 10, excluded: []string{"kube-system"},
		certManager: true, pullSecrets: []string{"artifactory-pull"}, replicas: 2, observability: true},
	{name: "pod-identity", values: "pod-identity-values.yaml", fullname: "pod-identity-artifactory-pull-webhook",
		optIn: [2]string{"artifactory-pull-webhook/inject", "enabled"}, optOut: [2]string{"artifactory-pull-webhook/inject", "disabled"},
		failurePolicy: admissionregistrationv1.Ignore, timeoutSeconds: 10, excluded: []string{"kube-system"},
		pullSecrets: []string{"artifactory-pull", "artifactory-pull-onprem"}, replicas: 2},
	{name: "custom-selectors", values: "custom-selectors-values.yaml", fullname: "pull-hook",
		optIn: [2]string{"pulls.example.com/artifactory", "yes"}, optOut: [2]string{"pulls.example.com/skip", "true"},
		failurePolicy: admissionregistrationv1.Fail, timeoutSeconds: 7, excluded: []string{"kube-system", "kube-public", "monitoring"},
		roleARN: "arn:aws:iam::123456789012:role/artifactory-puller", pullSecrets: []string{"artifactory-pull"}, replicas: 3},
	{name: "service-account", values: "service-account-values.yaml", fullname: "service-account-artifactory-pull-webhook",
		optIn: [2]string{"artifactory-pull-webhook/inject", "enabled"}, optOut: [2]string{"artifactory-pull-webhook/inject", "disabled"},
		failurePolicy: admissionregistrationv1.Ignore, timeoutSeconds: 10, excluded: []string{"kube-system"},
		roleARN: "arn:aws:iam::123456789012:role/artifactory-puller", pullSecrets: []string{"artifactory-pull", "onprem-pull"},
		replicas: 2, perServiceAccount: true},
	{name: "oidc", values: "oidc-values.yaml", fullname: "oidc-artifactory-pull-webhook",
		optIn: [2]string{"artifactory-pull-webhook/inject", "enabled"}, optOut: [2]string{"artifactory-pull-webhook/inject", "disabled"},
		failurePolicy: admissionregistrationv1.Ignore, timeoutSeconds: 10, excluded: []string{"kube-system"},
		pullSecrets: []string{"artifactory-pull", "teams-pull", "azure-pull"}, replicas: 2, perServiceAccount: true,
		selfToken: true, extraMounts: []string{"/var/run/secrets/artifactory"}},
}

func valuesPath(name string) string {
	return filepath.Join(harness.ModuleRoot(), chartDir, "ci", name)
}

func TestChartLintsAndEveryValueSetAppliesServerSideWithTheWebhookConfigurationAsSpecified(t *testing.T) {
	ctx := context.Background()
	c := stack.Cluster.Client
	installCRDs(t)
	for _, tc := range chartCases {
		t.Run(tc.name, func(t *testing.T) {
			var files []string
			lint := []string{"lint", "--strict", chartDir}
			if tc.values != "" {
				files = append(files, valuesPath(tc.values))
				lint = append(lint, "-f", valuesPath(tc.values))
			}
			helmRun(t, lint...)
			ns := "chart-" + tc.name
			objs := render(t, tc.name, ns, files...)
			if err := stack.Cluster.CreateNamespace(ctx, ns, nil); err != nil {
				t.Fatal(err)
			}
			apply(t, c, objs)
			// The configurations of these releases point at Services with no
			// pods: remove them so they cannot slow other tests' pods.
			t.Cleanup(func() { deleteClusterScoped(t, objs) })

			mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
			if err := c.Get(ctx, client.ObjectKey{Name: tc.fullname}, mwc); err != nil {
				t.Fatal(err)
			}
			checkWebhookConfiguration(t, tc, ns, mwc)
			checkDeployment(t, tc, ns)
			checkRBAC(t, tc, ns)
			checkConfig(t, tc, ns)

			sa := &corev1.ServiceAccount{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: tc.fullname}, sa); err != nil {
				t.Fatal(err)
			}
			if got := sa.Annotations["eks.amazonaws.com/role-arn"]; got != tc.roleARN {
				t.Errorf("ServiceAccount role-arn annotation = %q, want %q", got, tc.roleARN)
			}
			kinds := map[string]bool{}
			for _, u := range objs {
				kinds[u.GetKind()] = true
			}
			for _, k := range []string{"ServiceMonitor", "PrometheusRule", "Certificate", "Issuer"} {
				want := (k == "Certificate" || k == "Issuer") && tc.certManager || (k == "ServiceMonitor" || k == "PrometheusRule") && tc.observability
				if kinds[k] != want {
					t.Errorf("%s rendered = %v, want %v", k, kinds[k], want)
				}
			}
			if !kinds["PodDisruptionBudget"] || !kinds["Service"] || !kinds["ConfigMap"] {
				t.Errorf("missing PodDisruptionBudget, Service or ConfigMap: %v", kinds)
			}
		})
	}
}

func checkWebhookConfiguration(t *testing.T, tc chartCase, ns string, mwc *admissionregistrationv1.MutatingWebhookConfiguration) {
	t.Helper()
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(mwc.Webhooks))
	}
	w := mwc.Webhooks[0]
	if !slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("admissionReviewVersions = %v", w.AdmissionReviewVersions)
	}
	if *w.SideEffects != admissionregistrationv1.SideEffectClassNoneOnDryRun {
		t.Errorf("sideEffects = %s", *w.SideEffects)
	}
	if *w.FailurePolicy != tc.failurePolicy {
		t.Errorf("failurePolicy = %s, want %s", *w.FailurePolicy, tc.failurePolicy)
	}
	if *w.TimeoutSeconds != tc.timeoutSeconds {
		t.Errorf("timeoutSeconds = %d, want %d", *w.TimeoutSeconds, tc.timeoutSeconds)
	}
	if *w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
		t.Errorf("reinvocationPolicy = %s", *w.ReinvocationPolicy)
	}
	if *w.MatchPolicy != admissionregistrationv1.Equivalent {
		t.Errorf("matchPolicy = %s", *w.MatchPolicy)
	}
	if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) ||
		!slices.Equal(w.Rules[0].Resources, []string{"pods"}) || !slices.Equal(w.Rules[0].APIGroups, []string{""}) {
		t.Errorf("rules = %+v, want pods CREATE only", w.Rules)
	}
	if svc := w.ClientConfig.Service; svc == nil || svc.Name != tc.fullname || svc.Namespace != ns || *svc.Path != "/mutate" {
		t.Errorf("clientConfig.service = %+v", svc)
	}
	if got := mwc.Annotations["cert-manager.io/inject-ca-from"]; (got == ns+"/"+tc.fullname) != tc.certManager || (got != "") != tc.certManager {
		t.Errorf("inject-ca-from = %q (cert-manager mode %v)", got, tc.certManager)
	}

	nsSel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector)
	if err != nil {
		t.Fatal(err)
	}
	nsLabels := func(name string, optIn bool) labels.Set {
		l := labels.Set{"kubernetes.io/metadata.name": name}
		if optIn {
			l[tc.optIn[0]] = tc.optIn[1]
		}
		return l
	}
	if !nsSel.Matches(nsLabels("team-a", true)) {
		t.Errorf("namespaceSelector %s does not match an opted-in namespace", nsSel)
	}
	if nsSel.Matches(nsLabels("team-a", false)) {
		t.Errorf("namespaceSelector %s matches a namespace without the opt-in label", nsSel)
	}
	for _, excluded := range append([]string{ns}, tc.excluded...) {
		if nsSel.Matches(nsLabels(excluded, true)) {
			t.Errorf("namespaceSelector %s matches %s even when labelled", nsSel, excluded)
		}
	}
	objSel, err := metav1.LabelSelectorAsSelector(w.ObjectSelector)
	if err != nil {
		t.Fatal(err)
	}
	if objSel.Matches(labels.Set{tc.optOut[0]: tc.optOut[1]}) || !objSel.Matches(labels.Set{"app": "x"}) {
		t.Errorf("objectSelector %s does not exclude exactly the opt-out label", objSel)
	}
}

func checkDeployment(t *testing.T, tc chartCase, ns string) {
	t.Helper()
	d := &appsv1.Deployment{}
	if err := stack.Cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: tc.fullname}, d); err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != tc.replicas {
		t.Errorf("replicas = %d, want %d", *d.Spec.Replicas, tc.replicas)
	}
	p := d.Spec.Template.Spec
	if p.SecurityContext == nil || p.SecurityContext.RunAsNonRoot == nil || !*p.SecurityContext.RunAsNonRoot {
		t.Error("pod does not run as non-root")
	}
	if len(p.TopologySpreadConstraints) == 0 {
		t.Error("no topology spread constraints")
	}
	if d.Spec.Template.Labels[tc.optOut[0]] != tc.optOut[1] {
		t.Errorf("the webhook's own pods lack the opt-out label: %v", d.Spec.Template.Labels)
	}
	ctr := p.Containers[0]
	sc := ctr.SecurityContext
	if sc == nil || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation {
		t.Errorf("container securityContext = %+v", sc)
	}
	if ctr.Resources.Requests.Cpu().IsZero() || ctr.Resources.Requests.Memory().IsZero() {
		t.Error("no resource requests")
	}
	if ctr.ReadinessProbe.HTTPGet.Path != "/readyz" || ctr.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Error("probes are not /readyz and /healthz")
	}
	args := strings.Join(ctr.Args, " ")
	wantMode := "--cert-mode=self"
	if tc.certManager {
		wantMode = "--cert-mode=files"
	}
	if !strings.Contains(args, wantMode) {
		t.Errorf("args %q lack %s", args, wantMode)
	}
	var saEnv *corev1.EnvVar
	for i, e := range ctr.Env {
		if e.Name == "POD_SERVICE_ACCOUNT" {
			saEnv = &ctr.Env[i]
		}
	}
	if (saEnv != nil) != tc.selfToken {
		t.Errorf("POD_SERVICE_ACCOUNT set = %v, want %v (an OIDC instance of identity webhook)", saEnv != nil, tc.selfToken)
	} else if saEnv != nil && (saEnv.ValueFrom == nil || saEnv.ValueFrom.FieldRef == nil || saEnv.ValueFrom.FieldRef.FieldPath != "spec.serviceAccountName") {
		t.Errorf("POD_SERVICE_ACCOUNT = %+v, want the downward API's spec.serviceAccountName", saEnv)
	}
	var mounts, volumes []string
	for _, m := range ctr.VolumeMounts {
		if m.Name != "config" && m.Name != "tls" {
			mounts = append(mounts, m.MountPath)
		}
	}
	for _, v := range p.Volumes {
		if v.Name != "config" && v.Name != "tls" {
			volumes = append(volumes, v.Name)
		}
	}
	if !slices.Equal(mounts, tc.extraMounts) || len(volumes) != len(tc.extraMounts) {
		t.Errorf("extra mounts %v of volumes %v, want %v (extraVolumes, extraVolumeMounts)", mounts, volumes, tc.extraMounts)
	}
}

// checkConfig loads the rendered configuration as the webhook does: every
// value set is a configuration the webhook starts with.
func checkConfig(t *testing.T, tc chartCase, ns string) {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := stack.Cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: tc.fullname}, cm); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse([]byte(cm.Data["config.yaml"])); err != nil {
		t.Errorf("the rendered config.yaml does not load: %v", err)
	}
}

func checkRBAC(t *testing.T, tc chartCase, ns string) {
	t.Helper()
	cr := &rbacv1.ClusterRole{}
	if err := stack.Cluster.Client.Get(context.Background(), client.ObjectKey{Name: tc.fullname}, cr); err != nil {
		t.Fatal(err)
	}
	unnamedSecretRead, serviceAccountRead, tokenCreate := false, false, false
	for _, r := range cr.Rules {
		if slices.Contains(r.Resources, "secrets") && slices.Contains(r.Verbs, "get") {
			if len(r.ResourceNames) == 0 {
				unnamedSecretRead = true
			} else if !slices.Equal(r.ResourceNames, tc.pullSecrets) {
				t.Errorf("secret get limited to %v, want the configured pull Secrets %v", r.ResourceNames, tc.pullSecrets)
			}
		}
		serviceAccountRead = serviceAccountRead || slices.Contains(r.Resources, "serviceaccounts")
		tokenCreate = tokenCreate || slices.Contains(r.Resources, "serviceaccounts/token")
		if slices.Contains(r.Resources, "mutatingwebhookconfigurations") && (tc.certManager || !slices.Equal(r.ResourceNames, []string{tc.fullname})) {
			t.Errorf("webhook configuration rule %+v (cert-manager mode %v)", r, tc.certManager)
		}
	}
	if unnamedSecretRead != tc.perServiceAccount || serviceAccountRead != tc.perServiceAccount || tokenCreate != tc.perServiceAccount {
		t.Errorf("Secret read without resourceNames %v, ServiceAccount read %v, token create %v; want each %v (identity serviceAccount)",
			unnamedSecretRead, serviceAccountRead, tokenCreate, tc.perServiceAccount)
	}
	role := &rbacv1.Role{}
	if err := stack.Cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: tc.fullname}, role); err != nil {
		t.Fatal(err)
	}
	selfToken := false
	for _, r := range role.Rules {
		if slices.Contains(r.Resources, "serviceaccounts/token") {
			selfToken = true
			if !slices.Equal(r.ResourceNames, []string{tc.fullname}) || !slices.Equal(r.Verbs, []string{"create"}) {
				t.Errorf("Role token rule %+v, want create of its own ServiceAccount's token only", r)
			}
		}
	}
	if selfToken != tc.selfToken {
		t.Errorf("Role grants its own ServiceAccount's token = %v, want %v (an OIDC instance of identity webhook)", selfToken, tc.selfToken)
	}
	want := tc.perServiceAccount || tc.selfToken
	err := stack.Cluster.Client.Get(context.Background(), client.ObjectKey{Name: tc.fullname + "-token-requests"},
		&admissionregistrationv1.ValidatingAdmissionPolicy{})
	if want && err != nil || !want && !apierrors.IsNotFound(err) {
		t.Errorf("token request policy: %v (identity serviceAccount %v, own ServiceAccount token %v)", err, tc.perServiceAccount, tc.selfToken)
	}
}

func TestValuesSchemaRejectsInvalidValues(t *testing.T) {
	for name, set := range map[string]string{
		"unknown failurePolicy":   "webhook.failurePolicy=Never",
		"unknown cert mode":       "certificates.mode=vault",
		"no instances":            "config.instances=null",
		"typo in a top-level key": "replicas=3",
		"malformed opt-in label":  "config.namespaceLabel=no-equals-sign",
		"unknown identity":        "config.instances[0].identity=pod",
		"unknown fallback":        "config.instances[0].fallback=anyone",
		"assumeRole without role": "config.instances[0].aws.assumeRole.externalID=x",
		"incomplete tokenAttributes (kubelet would not start)": "credentialProvider.tokenAttributes.serviceAccountTokenAudience=sts.amazonaws.com",
		"unknown token cacheType":                              "credentialProvider.tokenAttributes.cacheType=Pod",
	} {
		cmd := exec.Command(helm, "template", "x", chartDir, "--kube-version", kubeVersion, "--set", set)
		cmd.Dir = harness.ModuleRoot()
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("%s (--set %s) rendered without error", name, set)
		} else if !strings.Contains(string(out), "schema") {
			t.Errorf("%s: failed, but not by the values schema: %s", name, out)
		}
	}
}

// installCRDs applies the minimal CRDs of the chart's optional kinds and
// waits until the API server serves them.
func installCRDs(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("testdata/crds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	crds := decodeAll(t, b)
	apply(t, stack.Cluster.Client, crds)
	for _, crd := range crds {
		err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true,
			func(ctx context.Context) (bool, error) {
				u := &unstructured.Unstructured{}
				u.SetGroupVersionKind(crd.GroupVersionKind())
				if err := stack.Cluster.Client.Get(ctx, client.ObjectKey{Name: crd.GetName()}, u); err != nil {
					return false, err
				}
				conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
				for _, c := range conds {
					m, _ := c.(map[string]any)
					if m["type"] == "Established" && m["status"] == "True" {
						return true, nil
					}
				}
				return false, nil
			})
		if err != nil {
			t.Fatalf("CRD %s not established: %v", crd.GetName(), err)
		}
	}
}

func deleteClusterScoped(t *testing.T, objs []*unstructured.Unstructured) {
	for _, u := range objs {
		if u.GetNamespace() != "" {
			continue
		}
		if err := stack.Cluster.Client.Delete(context.Background(), u.DeepCopy()); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// TestChartPinsTheImageByDigest: image.digest wins over the tag in the
// webhook's Deployment and the credential provider's DaemonSet.
func TestChartPinsTheImageByDigest(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte("image:\n  repository: registry.example/apw\n  tag: ignored\n  digest: "+digest+
		"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	objs := render(t, "pinned", "pinned", valuesPath("credential-provider-values.yaml"), values)
	seen := 0
	for _, o := range objs {
		if o.GetKind() != "Deployment" && o.GetKind() != "DaemonSet" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			if img := c.(map[string]any)["image"]; img != "registry.example/apw@"+digest {
				t.Errorf("%s %s: image %v, want the digest pin", o.GetKind(), o.GetName(), img)
			}
			seen++
		}
	}
	if seen < 2 {
		t.Errorf("%d containers checked, want the Deployment's and the DaemonSet's", seen)
	}
}
