package webhook

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"sigs.k8s.io/yaml"
)

// fixture is one testdata/*.yaml file: an input pod and what the webhook
// must answer for it.
type fixture struct {
	// Namespace holds the labels of the request's namespace; absent means
	// opted in.
	Namespace *struct {
		Labels map[string]string `json:"labels"`
	} `json:"namespace"`
	DryRun   bool            `json:"dryRun"`
	Pod      json.RawMessage `json:"pod"`
	Patch    json.RawMessage `json:"patch"`
	Warnings []string        `json:"warnings"`
	// Ensured lists the instances Ensure must be called for, in order.
	Ensured []string `json:"ensured"`
	// Unparseable is how many image references are skipped as invalid
	// (artifactory_pull_unparseable_images_total).
	Unparseable int    `json:"unparseable"`
	Outcome     string `json:"outcome"`
}

func TestGoldenFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var fx fixture
			if err := yaml.UnmarshalStrict(b, &fx); err != nil {
				t.Fatal(err)
			}
			labels := optedIn()
			if fx.Namespace != nil {
				labels = fx.Namespace.Labels
			}
			secrets := &fakeSecrets{}
			h, reg := testHandler(t, secrets, func(o *Options) {
				o.Namespaces = fakeReader(namespaceObject(testNamespace, labels))
			})
			req := podRequest(t, testNamespace, []byte(fx.Pod))
			req.DryRun = &fx.DryRun

			resp := serve(t, h, context.Background(), req)

			if !resp.Allowed {
				t.Fatalf("denied: %+v", resp.Result)
			}
			var gotEnsured []string
			for _, c := range secrets.Calls() {
				gotEnsured = append(gotEnsured, c.instance)
				if c.namespace != testNamespace || c.dryRun != fx.DryRun {
					t.Errorf("Ensure called with namespace %q dryRun %v, want %q %v", c.namespace, c.dryRun, testNamespace, fx.DryRun)
				}
			}
			slices.Sort(gotEnsured) // Ensure runs concurrently; the patch order is checked below
			wantEnsured := slices.Sorted(slices.Values(fx.Ensured))
			if !slices.Equal(gotEnsured, wantEnsured) {
				t.Errorf("Ensure called for %v, want %v", gotEnsured, wantEnsured)
			}
			gotPatch := mustJSON(t, resp.Patches)
			if !jsonEqual(t, gotPatch, fx.Patch) {
				t.Errorf("patch:\n got %s\nwant %s", gotPatch, orEmpty(fx.Patch))
			}
			if len(resp.Patches) > 0 {
				assertPatchApplies(t, fx.Pod, gotPatch)
			}
			if !slices.Equal(resp.Warnings, fx.Warnings) {
				t.Errorf("warnings:\n got %q\nwant %q", resp.Warnings, fx.Warnings)
			}
			if fx.Outcome != "" {
				if got := admissions(t, reg, fx.Outcome); got != 1 {
					t.Errorf("admissions_total{outcome=%q} = %v, want 1", fx.Outcome, got)
				}
				// The dashboard's latency panel reads this histogram.
				if got := sampleCount(t, reg, "artifactory_pull_admission_duration_seconds", fx.Outcome); got != 1 {
					t.Errorf("admission_duration_seconds{outcome=%q} observed %d admissions, want 1", fx.Outcome, got)
				}
			}
			if got := counterTotal(t, reg, "artifactory_pull_unparseable_images_total"); got != float64(fx.Unparseable) {
				t.Errorf("unparseable_images_total = %v, want %d", got, fx.Unparseable)
			}
		})
	}
}

// assertPatchApplies applies the patch as the API server would and checks
// the result holds no duplicate pull secret.
func assertPatchApplies(t *testing.T, pod, patch []byte) {
	t.Helper()
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("decoding patch: %v", err)
	}
	out, err := p.Apply(pod)
	if err != nil {
		t.Fatalf("applying patch: %v", err)
	}
	var patched struct {
		Spec struct {
			ImagePullSecrets []struct{ Name string } `json:"imagePullSecrets"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(out, &patched); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range patched.Spec.ImagePullSecrets {
		if seen[s.Name] {
			t.Errorf("imagePullSecrets holds %q twice: %s", s.Name, out)
		}
		seen[s.Name] = true
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jsonEqual compares two JSON documents; null, absent and [] are equal.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	decode := func(b []byte) any {
		var v any
		if len(b) > 0 {
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatal(err)
			}
		}
		if l, ok := v.([]any); ok && len(l) == 0 {
			return nil
		}
		return v
	}
	return reflect.DeepEqual(decode(a), decode(b))
}

func orEmpty(b []byte) string {
	if len(b) == 0 {
		return "[]"
	}
	return string(b)
}
