package config

import (
	"fmt"
	"testing"
)

// The Matcher's behaviour against kubelet's keyring is proven in the
// webhook package (TestMatcherAgreesWithKubeletKeyring, FuzzMatch), whose
// tests write the pull Secrets kubelet reads; these pin its memo and the
// index the admission path and the credential provider use.

var memoInstances = []Instance{
	{Name: "main", RegistryHosts: []string{"artifactory.example.com"}},
	{Name: "cloud", RegistryHosts: []string{"*.jfrog.example.io", "r.example.io:5000"}},
}

func TestMatcherIndexIsTheInstancesPosition(t *testing.T) {
	m := NewMatcher(memoInstances)
	for image, want := range map[string]int{
		"artifactory.example.com/team/app:1.0": 0,
		"team.jfrog.example.io/docker/envoy":   1,
		"r.example.io:5000/x":                  1,
		"r.example.io/x":                       -1,
		"nginx":                                -1,
	} {
		if got, err := m.Index(image); err != nil || got != want {
			t.Errorf("Index(%q) = %d, %v; want %d", image, got, err, want)
		}
	}
	if _, err := m.Index("bad::ref"); err == nil {
		t.Error("Index of an invalid reference: no error")
	}
}

func TestMatcherMemoIsBoundedAndClearsOnlyPastTheBound(t *testing.T) {
	m := NewMatcher([]Instance{{Name: "main", RegistryHosts: []string{"r.example.io"}}})
	for i := range maxKnownImages {
		if _, _, err := m.Match(fmt.Sprintf("r.example.io/app:%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.knownSize.Load(); n != maxKnownImages {
		t.Fatalf("memo holds %d images after %d distinct ones, want all of them", n, maxKnownImages)
	}
	if _, _, err := m.Match("r.example.io/one-more"); err != nil {
		t.Fatal(err)
	}
	if n := m.knownSize.Load(); n != 1 {
		t.Errorf("memo holds %d images past its bound, want it cleared to the newest", n)
	}
	if got, _, _ := m.Match("r.example.io/app:1"); got != "main" {
		t.Errorf("a cleared memo changed the answer: %q", got)
	}
}

// TestMatcherAnswersStayTheSameWhenItsMemoIsFull proves the memo of matched
// images changes no answer: a repeat, an eviction (more distinct images than
// it holds) and invalid references answer as a fresh Matcher does.
func TestMatcherAnswersStayTheSameWhenItsMemoIsFull(t *testing.T) {
	m := NewMatcher(memoInstances)
	images := []string{"UPPER/case", "bad::ref", "", "artifactory.example.com/team/app:1.0",
		"team.jfrog.example.io/docker/envoy:1", "prom/statsd-exporter:v0.26.0", "nginx"}
	for i := range maxKnownImages + 10 {
		images = append(images, fmt.Sprintf("x%d.jfrog.example.io/app:%d", i, i), fmt.Sprintf("docker.io/app-%d", i))
	}
	for round := range 2 {
		for _, img := range images {
			fresh := NewMatcher(memoInstances)
			wantName, wantOK, wantErr := fresh.Match(img)
			name, ok, err := m.Match(img)
			if name != wantName || ok != wantOK || (err == nil) != (wantErr == nil) {
				t.Fatalf("round %d, %q: got (%q, %v, %v), a fresh Matcher says (%q, %v, %v)",
					round, img, name, ok, err, wantName, wantOK, wantErr)
			}
		}
	}
	if n := m.knownSize.Load(); n > maxKnownImages {
		t.Errorf("memo holds %d images, more than its bound %d", n, maxKnownImages)
	}
}

// BenchmarkMatchDomain is the host rule alone, as run on an image's first
// sight after the reference parse.
func BenchmarkMatchDomain(b *testing.B) {
	m := NewMatcher(memoInstances)
	domains := []string{"artifactory.example.com", "x.team.jfrog.example.io", "acme.jfrog.example.io", "a.b.jfrog.example.io", "ghcr.io", "r.example.io:5000"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m.matchDomain(domains[i%len(domains)])
	}
}
