package webhook

import (
	"testing"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
)

const digest = "sha256:4b0bb1e4e6b4b6d0f8b1a7e0d9c5e8f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7"

// matcherConfigYAML is the configuration of the matcher tables. It is loaded
// with config.Parse, as the product loads it (hosts lowercased and trimmed),
// so that kubelet_agreement_test.go writes the same keys into pull Secrets.
const matcherConfigYAML = `
instances:
- name: main
  url: https://artifactory.example.com
  registryHosts:
  - artifactory.example.com
  - "registry.example.com:5000"
  - " Upper.Example.COM "
  - "localhost:5000"
  - "10.0.0.7:5000"
  - docker.jfrog.io
  secretName: artifactory-main
- name: cloud
  url: https://acme.jfrog.io
  registryHosts: ["*.jfrog.io", "*.ports.example.net:8443"]
  secretName: artifactory-cloud
- name: team
  url: https://team.jfrog.io
  registryHosts: ["*.team.jfrog.io"]
  secretName: artifactory-team
- name: hub
  url: https://hub.example.com
  registryHosts: [docker.io]
  secretName: artifactory-hub
`

func matcherConfig(t testing.TB) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(matcherConfigYAML))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testMatcher(t testing.TB) *config.Matcher { return config.NewMatcher(matcherConfig(t).Instances) }

type matchCase struct {
	name, image, want string
	wantErr           bool
}

// matchCases run against matcherConfigYAML, here and in the kubelet
// agreement test.
var matchCases = []matchCase{
	// docker.io normalisation
	{name: "bare name is docker.io", image: "nginx", want: "hub"},
	{name: "bare name with tag is docker.io", image: "nginx:1.27", want: "hub"},
	{name: "library path is docker.io", image: "library/nginx", want: "hub"},
	{name: "explicit docker.io", image: "docker.io/nginx", want: "hub"},
	{name: "legacy index.docker.io", image: "index.docker.io/library/nginx", want: "hub"},
	// exact hosts, case-insensitive
	{name: "exact host", image: "artifactory.example.com/team/app:1.0", want: "main"},
	{name: "uppercase host in image (kubelet compares case-sensitively)", image: "ARTIFACTORY.Example.com/team/app", want: ""},
	{name: "uppercase host in config", image: "upper.example.com/app", want: "main"},
	{name: "uppercase host in config and image", image: "UPPER.example.COM/app", want: ""},
	{name: "other host", image: "ghcr.io/org/app", want: ""},
	{name: "subdomain of an exact host", image: "eu.artifactory.example.com/app", want: ""},
	{name: "parent of an exact host", image: "example.com/app", want: ""},
	{name: "localhost with port", image: "localhost:5000/app", want: "main"},
	{name: "localhost without port", image: "localhost/app", want: ""},
	{name: "IPv4 with port", image: "10.0.0.7:5000/app", want: "main"},
	{name: "IPv4 without port", image: "10.0.0.7/app", want: ""},
	// ports: compared as strings, as kubelet does
	{name: "port in image but not in pattern", image: "artifactory.example.com:443/app", want: ""},
	{name: "port in pattern and image", image: "registry.example.com:5000/app", want: "main"},
	{name: "port in pattern but not in image", image: "registry.example.com/app", want: ""},
	{name: "other port", image: "registry.example.com:5001/app", want: ""},
	{name: "same port with a leading zero", image: "registry.example.com:05000/app", want: ""},
	{name: "wildcard with port", image: "a.ports.example.net:8443/app", want: "cloud"},
	{name: "wildcard with port, image without", image: "a.ports.example.net/app", want: ""},
	{name: "wildcard with port, other port", image: "a.ports.example.net:9443/app", want: ""},
	{name: "wildcard with port, deep subdomain", image: "a.b.ports.example.net:8443/app", want: ""},
	// wildcards: "*" is exactly one label
	{name: "wildcard subdomain", image: "acme.jfrog.io/docker/app", want: "cloud"},
	{name: "wildcard numeric label", image: "123.jfrog.io/app", want: "cloud"},
	{name: "wildcard punycode label", image: "xn--bcher-kva.jfrog.io/app", want: "cloud"},
	{name: "wildcard does not match a deep subdomain", image: "a.b.jfrog.io/app", want: ""},
	{name: "wildcard does not match a deep subdomain with port", image: "a.b.jfrog.io:443/app", want: ""},
	{name: "wildcard uppercase image", image: "ACME.JFROG.IO/app", want: ""},
	{name: "wildcard uppercase deep subdomain", image: "A.B.JFROG.IO/app", want: ""},
	{name: "wildcard does not match bare suffix", image: "jfrog.io/app", want: ""},
	{name: "wildcard does not match lookalike", image: "evil-jfrog.io/app", want: ""},
	{name: "wildcard does not match lookalike subdomain", image: "acme.evil-jfrog.io/app", want: ""},
	{name: "wildcard does not match suffix elsewhere", image: "jfrog.io.evil.com/app", want: ""},
	{name: "wildcard does not match suffix in the path", image: "evil.com/acme.jfrog.io/app", want: ""},
	{name: "wildcard without port does not match with port", image: "acme.jfrog.io:443/app", want: ""},
	{name: "wildcard suffix is itself a label", image: "team.jfrog.io/app", want: "cloud"},
	{name: "more specific wildcard one label deeper", image: "x.team.jfrog.io/app", want: "team"},
	{name: "more specific wildcard, two labels deeper", image: "y.x.team.jfrog.io/app", want: ""},
	{name: "exact host beats wildcard", image: "docker.jfrog.io/app", want: "main"},
	// digests
	{name: "digest", image: "artifactory.example.com/app@" + digest, want: "main"},
	{name: "tag and digest", image: "artifactory.example.com/app:1.0@" + digest, want: "main"},
	{name: "port, tag and digest", image: "registry.example.com:5000/app:1.0@" + digest, want: "main"},
	{name: "wildcard, tag and digest", image: "acme.jfrog.io/app:1.0@" + digest, want: "cloud"},
	// garbage
	{name: "empty", image: "", wantErr: true},
	{name: "colons", image: ":::", wantErr: true},
	{name: "uppercase repository", image: "Nginx", wantErr: true},
	{name: "uppercase path on known host", image: "artifactory.example.com/App", wantErr: true},
	{name: "short digest", image: "artifactory.example.com/app@sha256:abc", wantErr: true},
	{name: "scheme", image: "https://artifactory.example.com/app", wantErr: true},
	{name: "trailing dot", image: "acme.jfrog.io./app", wantErr: true},
	{name: "trailing dot on exact host", image: "artifactory.example.com./app", wantErr: true},
	{name: "empty label", image: "acme..jfrog.io/app", wantErr: true},
	{name: "empty port", image: "registry.example.com:/app", wantErr: true},
	// An uppercase first component is taken as a registry host.
	{name: "uppercase first component is a host", image: "UPPER/case", want: ""},
}

// ipv6Instances have IPv6 literal hosts, which config validation rejects
// today; written lowercase, as config.Parse would write them.
var ipv6Instances = []config.Instance{
	{Name: "v6", RegistryHosts: []string{"[::1]:5000", "[::a]:5000", "[fd00::7]"}},
}

var ipv6Cases = []matchCase{
	{name: "IPv6 literal with port", image: "[::1]:5000/app", want: "v6"},
	{name: "IPv6 literal without port, pattern with", image: "[::1]/app", want: ""},
	{name: "IPv6 literal, other port", image: "[::1]:5001/app", want: ""},
	{name: "IPv6 literal, uppercase hex", image: "[::A]:5000/app", want: ""},
	// Kubelet never matches a bracketed key without port (it globs it).
	{name: "IPv6 literal without port", image: "[fd00::7]/app", want: ""},
	{name: "IPv6 literal with port, pattern without", image: "[fd00::7]:443/app", want: ""},
	{name: "IPv6 literal with a dotted IPv4 tail", image: "[::ffff:10.0.0.7]:5000/app", wantErr: true},
}

func TestMatcherMatch(t *testing.T) {
	for _, set := range []struct {
		name    string
		matcher *config.Matcher
		cases   []matchCase
	}{
		{"config", testMatcher(t), matchCases},
		{"ipv6", config.NewMatcher(ipv6Instances), ipv6Cases},
	} {
		for _, tt := range set.cases {
			t.Run(set.name+"/"+tt.name, func(t *testing.T) {
				got, ok, err := set.matcher.Match(tt.image)
				if (err != nil) != tt.wantErr {
					t.Fatalf("Match(%q) err = %v, wantErr %v", tt.image, err, tt.wantErr)
				}
				if ok != (tt.want != "") || got != tt.want {
					t.Errorf("Match(%q) = %q, %v; want %q", tt.image, got, ok, tt.want)
				}
			})
		}
	}
}

func TestMatcherExactHostBeatsWildcard(t *testing.T) {
	m := config.NewMatcher([]config.Instance{
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

func TestMatcherSamePatternTwiceFirstInstanceWins(t *testing.T) {
	m := config.NewMatcher([]config.Instance{
		{Name: "first", RegistryHosts: []string{"*.example.io", "registry.example.io"}},
		{Name: "second", RegistryHosts: []string{"*.EXAMPLE.io", " registry.example.io"}},
	})
	for _, image := range []string{"a.example.io/app", "registry.example.io/app"} {
		if got, _, _ := m.Match(image); got != "first" {
			t.Errorf("Match(%q) = %q, want first", image, got)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	m := testMatcher(b)
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
