package webhook

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
)

// Tests that pin behaviour the mutation run (make mutation) found unpinned.

func TestMatcherWildcardWithPortMatchesOnlyThatPort(t *testing.T) {
	m := config.NewMatcher([]config.Instance{{Name: "wildport", RegistryHosts: []string{"*.example.io:5000"}}})
	for image, want := range map[string]string{
		"a.example.io:5000/app": "wildport",
		"a.example.io/app":      "",
		"a.example.io:5001/app": "",
		"a.b.example.io:5000/x": "",
	} {
		if got, _, err := m.Match(image); err != nil || got != want {
			t.Errorf("Match(%q) = %q, %v; want %q", image, got, err, want)
		}
	}
}

func TestTruncateKeepsAStringOfExactlyTheLimit(t *testing.T) {
	if got := truncate("abcd", 4); got != "abcd" {
		t.Errorf("truncate at the limit = %q", got)
	}
	if got := truncate("abcde", 4); got != "abcd..." {
		t.Errorf("truncate past the limit = %q", got)
	}
}

// The decision log names the pod, or its generateName before the API
// server has named it: the operator's way to find one admission.
func TestDecisionLogNamesThePod(t *testing.T) {
	for _, tc := range []struct {
		meta map[string]any
		want string
	}{
		{map[string]any{"name": "web", "generateName": "web-"}, `"pod"="web"`},
		{map[string]any{"generateName": "web-7d9c-"}, `"pod"="web-7d9c-"`},
	} {
		var mu sync.Mutex
		var logs strings.Builder
		log := funcr.New(func(prefix, args string) {
			mu.Lock()
			defer mu.Unlock()
			logs.WriteString(args + "\n")
		}, funcr.Options{Verbosity: 1})
		h, _ := testHandler(t, &fakeSecrets{}, func(o *Options) { o.Log = log })
		p := simplePod(mainImage)
		p["metadata"] = tc.meta
		serve(t, h, context.Background(), podRequest(t, testNamespace, p))
		mu.Lock()
		got := logs.String()
		mu.Unlock()
		if !strings.Contains(got, tc.want) {
			t.Errorf("decision log does not contain %s:\n%s", tc.want, got)
		}
	}
}
