package webhook

import (
	"testing"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
)

const digest = "sha256:4b0bb1e4e6b4b6d0f8b1a7e0d9c5e8f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7"

func testMatcher() *Matcher {
	return NewMatcher([]config.Instance{
		{Name: "main", RegistryHosts: []string{"artifactory.example.com", "registry.example.com:5000", "Upper.Example.COM"}},
		{Name: "cloud", RegistryHosts: []string{"*.jfrog.io", "*.ports.example.net:8443"}},
		{Name: "team", RegistryHosts: []string{"*.team.jfrog.io"}},
		{Name: "hub", RegistryHosts: []string{"docker.io"}},
	})
}

func TestMatcherMatch(t *testing.T) {
	m := testMatcher()
	tests := []struct {
		name, image, want string
		wantErr           bool
	}{
		// docker.io normalisation
		{name: "bare name is docker.io", image: "nginx", want: "hub"},
		{name: "bare name with tag is docker.io", image: "nginx:1.27", want: "hub"},
		{name: "library path is docker.io", image: "library/nginx", want: "hub"},
		{name: "explicit docker.io", image: "docker.io/nginx", want: "hub"},
		{name: "legacy index.docker.io", image: "index.docker.io/library/nginx", want: "hub"},
		// exact hosts, case-insensitive
		{name: "exact host", image: "artifactory.example.com/team/app:1.0", want: "main"},
		{name: "uppercase host in image", image: "ARTIFACTORY.Example.com/team/app", want: "main"},
		{name: "uppercase host in config", image: "upper.example.com/app", want: "main"},
		{name: "other host", image: "ghcr.io/org/app", want: ""},
		// ports
		{name: "port in image but not in pattern", image: "artifactory.example.com:443/app", want: ""},
		{name: "port in pattern and image", image: "registry.example.com:5000/app", want: "main"},
		{name: "port in pattern but not in image", image: "registry.example.com/app", want: ""},
		{name: "other port", image: "registry.example.com:5001/app", want: ""},
		{name: "wildcard with port", image: "a.ports.example.net:8443/app", want: "cloud"},
		{name: "wildcard with port, image without", image: "a.ports.example.net/app", want: ""},
		// wildcards
		{name: "wildcard subdomain", image: "acme.jfrog.io/docker/app", want: "cloud"},
		{name: "wildcard deep subdomain", image: "a.b.jfrog.io/app", want: "cloud"},
		{name: "wildcard uppercase image", image: "ACME.JFROG.IO/app", want: "cloud"},
		{name: "wildcard does not match bare suffix", image: "jfrog.io/app", want: ""},
		{name: "wildcard does not match lookalike", image: "evil-jfrog.io/app", want: ""},
		{name: "wildcard does not match suffix elsewhere", image: "jfrog.io.evil.com/app", want: ""},
		{name: "wildcard without port does not match with port", image: "acme.jfrog.io:443/app", want: ""},
		{name: "longest wildcard wins", image: "x.team.jfrog.io/app", want: "team"},
		// digests
		{name: "digest", image: "artifactory.example.com/app@" + digest, want: "main"},
		{name: "tag and digest", image: "artifactory.example.com/app:1.0@" + digest, want: "main"},
		{name: "port, tag and digest", image: "registry.example.com:5000/app:1.0@" + digest, want: "main"},
		// garbage
		{name: "empty", image: "", wantErr: true},
		{name: "colons", image: ":::", wantErr: true},
		{name: "uppercase repository", image: "Nginx", wantErr: true},
		{name: "uppercase path on known host", image: "artifactory.example.com/App", wantErr: true},
		{name: "short digest", image: "artifactory.example.com/app@sha256:abc", wantErr: true},
		{name: "scheme", image: "https://artifactory.example.com/app", wantErr: true},
		// An uppercase first component is taken as a registry host.
		{name: "uppercase first component is a host", image: "UPPER/case", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := m.Match(tt.image)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Match(%q) err = %v, wantErr %v", tt.image, err, tt.wantErr)
			}
			if ok != (tt.want != "") || got != tt.want {
				t.Errorf("Match(%q) = %q, %v; want %q", tt.image, got, ok, tt.want)
			}
		})
	}
}

func TestMatcherExactHostBeatsWildcard(t *testing.T) {
	m := NewMatcher([]config.Instance{
		{Name: "wild", RegistryHosts: []string{"*.example.io"}},
		{Name: "exact", RegistryHosts: []string{"docker.example.io"}},
	})
	if got, _, _ := m.Match("docker.example.io/app"); got != "exact" {
		t.Errorf("Match = %q, want exact", got)
	}
	if got, _, _ := m.Match("other.example.io/app"); got != "wild" {
		t.Errorf("Match = %q, want wild", got)
	}
}

func BenchmarkMatch(b *testing.B) {
	m := testMatcher()
	images := []string{
		"artifactory.example.com/team/app:1.0",
		"acme.jfrog.io/docker/app@" + digest,
		"nginx:1.27",
		"ghcr.io/org/sidecar:v2",
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, _, err := m.Match(images[i%len(images)]); err != nil {
			b.Fatal(err)
		}
	}
}
