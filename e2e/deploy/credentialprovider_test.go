package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
)

// TestChartCredentialProviderIsWhatKubeletAccepts renders the credential
// provider value set: the API server accepts every object; the DaemonSet's
// pods are not selected by the webhook's Service and hold no API token;
// nodes may request tokens of the token mode's audience and nothing more;
// the drop-in the ConfigMap carries passes the plugin's install check and
// is then loaded by kubelet's own plugin runner (its config validation:
// apiVersions, matchImages, tokenAttributes) from the directory install
// wrote. The defaults render none of it.
func TestChartCredentialProviderIsWhatKubeletAccepts(t *testing.T) {
	for _, u := range render(t, "cp-defaults", "chart-cp-defaults") {
		if u.GetKind() == "DaemonSet" || strings.Contains(u.GetName(), "credential-provider") {
			t.Errorf("the defaults render %s %s", u.GetKind(), u.GetName())
		}
	}
	ns := "chart-credential-provider"
	objs := render(t, "cp", ns, valuesPath("credential-provider-values.yaml"))
	if err := stack.Cluster.CreateNamespace(t.Context(), ns, nil); err != nil {
		t.Fatal(err)
	}
	nodeMay := func(attrs authorizationv1.ResourceAttributes) bool {
		t.Helper()
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: "system:node:node-1", Groups: []string{"system:nodes", "system:authenticated"}, ResourceAttributes: &attrs}}
		if err := stack.Cluster.Client.Create(t.Context(), sar); err != nil {
			t.Fatal(err)
		}
		return sar.Status.Allowed
	}
	audience := func(a string) authorizationv1.ResourceAttributes {
		return authorizationv1.ResourceAttributes{Verb: "request-serviceaccounts-token-audience", Resource: a}
	}
	if nodeMay(audience("sts.amazonaws.com")) {
		t.Fatal("precondition: nodes may request the audience before the chart is applied")
	}
	apply(t, stack.Cluster.Client, objs)
	t.Cleanup(func() { deleteClusterScoped(t, objs) })
	// The API server's RBAC, for a node: the token mode's audience and
	// nothing more (not another audience, no ServiceAccount reads).
	if !nodeMay(audience("sts.amazonaws.com")) {
		t.Error("nodes may not request tokens of the plugin's audience")
	}
	for _, attrs := range []authorizationv1.ResourceAttributes{audience("other-audience"),
		{Verb: "get", Resource: "serviceaccounts", Namespace: "team-a"}, {Verb: "list", Resource: "serviceaccounts"}} {
		if nodeMay(attrs) {
			t.Errorf("the chart lets nodes %s %s", attrs.Verb, attrs.Resource)
		}
	}

	ds, svc, cm := one(t, objs, "DaemonSet"), one(t, objs, "Service"), one(t, objs, "ConfigMap", "credential-provider")
	podLabels, _, _ := unstructured.NestedStringMap(ds.Object, "spec", "template", "metadata", "labels")
	selector, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
	if labels.SelectorFromSet(selector).Matches(labels.Set(podLabels)) {
		t.Errorf("the webhook's Service selects the credential provider's pods (%v ⊇ %v)", podLabels, selector)
	}
	if mount, _, _ := unstructured.NestedBool(ds.Object, "spec", "template", "spec", "automountServiceAccountToken"); mount {
		t.Error("the DaemonSet's pods mount an API token")
	}

	dropIn, _, _ := unstructured.NestedString(cm.Object, "data", "artifactory-credential-provider.yaml")
	dir := t.TempDir()
	in := filepath.Join(dir, "drop-in.yaml")
	if err := os.WriteFile(in, []byte(dropIn), 0o600); err != nil {
		t.Fatal(err)
	}
	plugin := filepath.Join(dir, "build", "artifactory-credential-provider")
	build := exec.Command("go", "build", "-o", plugin, "./cmd/artifactory-credential-provider")
	build.Dir = harness.ModuleRoot()
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the credential provider: %v\n%s", err, b)
	}
	binDir, configDir := filepath.Join(dir, "node", "bin"), filepath.Join(dir, "node", "config.d")
	if b, err := exec.Command(plugin, "install", "--config", in, "--bin-dir", binDir, "--config-dir", configDir).CombinedOutput(); err != nil {
		t.Fatalf("install refused the chart's drop-in: %v\n%s", err, b)
	}
	keyring := os.Getenv("KUBELET_KEYRING")
	if keyring == "" {
		keyring = filepath.Join(harness.ModuleRoot(), "bin", "kubelet-keyring")
	}
	cmd := exec.Command(keyring, "--config", configDir, "--bin-dir", binDir, "example.jfrog.io/team/app:1.0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err != nil {
		t.Fatalf("kubelet's plugin runner refused the chart's drop-in: %v\n%s%s", err, out, stderr.String())
	}
}

// one returns the only object of kind whose name contains name (any name
// when empty).
func one(t *testing.T, objs []*unstructured.Unstructured, kind string, name ...string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, u := range only(objs, kind) {
		if len(name) == 0 || strings.Contains(u.GetName(), name[0]) {
			found = append(found, u)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d %s objects rendered, want 1", len(found), kind)
	}
	return found[0]
}
