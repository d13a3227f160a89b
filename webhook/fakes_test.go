package webhook

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

const (
	testNamespace  = "team-a"
	testConfigYAML = `
instances:
- name: main
  url: https://artifactory.example.com
  registryHosts: [artifactory.example.com, "artifactory.example.com:8443"]
  secretName: artifactory-main
- name: cloud
  url: https://team.jfrog.example.io
  registryHosts: ["*.jfrog.example.io"]
  secretName: artifactory-cloud
requestTimeout: 2s
`
)

func testConfig(t testing.TB) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(testConfigYAML))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type ensureCall struct {
	namespace, instance string
	dryRun              bool
	id                  credentials.Identity
}

// fakeSecrets records calls and answers with the instance's SecretName, or
// with what ensure returns when set.
type fakeSecrets struct {
	mu     sync.Mutex
	calls  []ensureCall
	ensure func(ctx context.Context, inst config.Instance) (pullsecret.Result, error)
}

func (f *fakeSecrets) EnsureAs(ctx context.Context, namespace string, inst config.Instance, id credentials.Identity, dryRun bool) (pullsecret.Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, ensureCall{namespace, inst.Name, dryRun, id})
	f.mu.Unlock()
	if f.ensure != nil {
		return f.ensure(ctx, inst)
	}
	return pullsecret.Result{SecretName: pullsecret.SecretName(inst, id), Action: pullsecret.ActionReused}, nil
}

func (f *fakeSecrets) Calls() []ensureCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ensureCall(nil), f.calls...)
}

func namespaceObject(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, UID: "ns-uid"}}
}

func optedIn() map[string]string {
	return map[string]string{"artifactory-pull-webhook/inject": "enabled"}
}

func fakeReader(objs ...client.Object) client.Reader {
	return fake.NewClientBuilder().WithObjects(objs...).Build()
}

// testHandler builds a Handler over the test config, an opted-in namespace
// and s, with metrics on a fresh registry.
func testHandler(t testing.TB, s Secrets, mod func(*Options)) (*Handler, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o := Options{
		Config:     testConfig(t),
		Namespaces: fakeReader(namespaceObject(testNamespace, optedIn())),
		Secrets:    s,
		Metrics:    metrics.New(reg),
		Log:        testr.NewWithInterface(t, testr.Options{}),
	}
	if mod != nil {
		mod(&o)
	}
	h, err := NewHandler(o)
	if err != nil {
		t.Fatal(err)
	}
	return h, reg
}

func podRequest(t testing.TB, namespace string, pod any) admission.Request {
	t.Helper()
	raw, ok := pod.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(pod); err != nil {
			t.Fatal(err)
		}
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "uid-1",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: namespace,
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}}
}

// simplePod is a pod with one container per image.
func simplePod(images ...string) map[string]any {
	var cs []any
	for i, img := range images {
		cs = append(cs, map[string]any{"name": "c" + string(rune('0'+i)), "image": img})
	}
	return map[string]any{
		"metadata": map[string]any{"name": "web"},
		"spec":     map[string]any{"containers": cs},
	}
}

// waitFor bounds a test on a handler call that must not hang.
func waitFor(t *testing.T, d time.Duration, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("handler did not answer within %s", d)
	}
}

// admissions reads artifactory_pull_admissions_total{outcome} from reg.
func admissions(t testing.TB, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "artifactory_pull_admissions_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// sampleCount is the number of observations of histogram name{outcome} in reg.
func sampleCount(t testing.TB, reg *prometheus.Registry, name, outcome string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

// counterTotal is the sum of counter name over its label values in reg.
func counterTotal(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
