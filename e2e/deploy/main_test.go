// Package deploy proves the Helm chart against a real API server: every
// rendered object applied with server-side apply, the webhook running with
// exactly the chart's RBAC, and self-managed certificates rotating under
// live admission traffic.
package deploy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
)

const chartDir = "deploy/charts/artifactory-pull-webhook"

var (
	stack       *harness.Stack
	helm        string
	kubeVersion string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx := context.Background()
	ctrllog.SetLogger(logr.Discard()) // the in-process admission servers' logger
	helm = os.Getenv("HELM")
	if helm == "" {
		helm = filepath.Join(harness.ModuleRoot(), "bin", "helm")
	}
	if _, err := os.Stat(helm); err != nil {
		fmt.Fprintln(os.Stderr, "helm not found: run `make helm` (or `make deploy-e2e`) first:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "apw-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	stack, err = harness.StartStack(ctx, harness.StackOptions{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the e2e stack:", err)
		return 1
	}
	defer stack.Close()
	dc, err := discovery.NewDiscoveryClientForConfig(stack.Cluster.Config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	v, err := dc.ServerVersion()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading the API server version:", err)
		return 1
	}
	kubeVersion = v.GitVersion
	code := m.Run()
	if code != 0 && stack.Webhook != nil {
		fmt.Fprintln(os.Stderr, "--- webhook logs ---\n"+stack.Webhook.Logs())
	}
	return code
}

// helmRun runs helm in the module root and returns its standard output.
func helmRun(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(helm, args...)
	cmd.Dir = harness.ModuleRoot()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %v: %v\n%s%s", args, err, out, stderr.String())
	}
	return out
}

// render runs helm template for a release and decodes every object.
func render(t *testing.T, release, namespace string, valueFiles ...string) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}
	for _, f := range valueFiles {
		args = append(args, "-f", f)
	}
	return decodeAll(t, helmRun(t, args...))
}

func decodeAll(t *testing.T, b []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return objs
		}
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("decoding a rendered document: %v\n%s", err, doc)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// apply server-side applies objs in order, as an operator's kubectl apply
// --server-side would: the API server validates every field against the
// schema of the kind (unknown fields are an error for apply).
func apply(t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, u := range objs {
		err := c.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u.DeepCopy()),
			client.FieldOwner("deploy-e2e"), client.ForceOwnership)
		if err != nil {
			t.Fatalf("server-side apply of %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}
}

// only keeps the objects of the given kinds.
func only(objs []*unstructured.Unstructured, kinds ...string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range objs {
		for _, k := range kinds {
			if u.GetKind() == k {
				out = append(out, u)
			}
		}
	}
	return out
}
