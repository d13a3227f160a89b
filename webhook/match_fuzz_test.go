package webhook

import (
	"strings"
	"testing"

	"github.com/distribution/reference"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
)

// FuzzMatch checks Matcher against the rule the README states, written out
// independently: the image's registry domain equals a configured
// (lowercased) host or, for "*.suffix", is suffix with exactly one more
// label and the same port (kubelet's keyring rule). Unparseable images are
// errors, never matches.
func FuzzMatch(f *testing.F) {
	for _, s := range []string{
		"artifactory.example.com/team/app:1.0",
		"ARTIFACTORY.example.com:8443/team/app@sha256:" + strings.Repeat("0", 64),
		"artifactory.example.com:9999/team/app",
		"team.jfrog.example.io/a/b:c",
		"jfrog.example.io/a",
		"evil-jfrog.example.io/a",
		"a.b.jfrog.example.io:443/x", "a.b.jfrog.example.io/x", "TEAM.jfrog.example.io/x",
		"nginx", "localhost:5000/x", "[::1]:5000/x", "Upper/Case",
		"xn--bcher-kva.jfrog.example.io/x", "ünïcode.jfrog.example.io/x", "",
		"artifactory.example.com/" + strings.Repeat("a/", 200) + "x",
	} {
		f.Add(s)
	}
	instances := testConfig(f).Instances
	m := config.NewMatcher(instances)

	f.Fuzz(func(t *testing.T, image string) {
		name, ok, err := m.Match(image)
		named, perr := reference.ParseNormalizedNamed(image)
		if (err != nil) != (perr != nil) {
			t.Fatalf("Match error %v, but reference parsing says %v", err, perr)
		}
		if err != nil {
			if ok || name != "" {
				t.Fatalf("unparseable %q matched %q", image, name)
			}
			return
		}
		want, wantOK := expectedInstance(instances, reference.Domain(named))
		if ok != wantOK || name != want {
			t.Fatalf("Match(%q) = %q, %v; the host rule says %q, %v", image, name, ok, want, wantOK)
		}
	})
}

// expectedInstance applies the matching rule naively: exact hosts first (in
// config order), then the longest matching wildcard suffix.
func expectedInstance(instances []config.Instance, domain string) (string, bool) {
	for _, in := range instances {
		for _, h := range in.RegistryHosts {
			if h == domain {
				return in.Name, true
			}
		}
	}
	best, bestLen := "", -1
	host, port := domain, ""
	if i := strings.LastIndexByte(domain, ':'); i >= 0 && !strings.Contains(domain[i:], "]") {
		host, port = domain[:i], domain[i+1:]
	}
	for _, in := range instances {
		for _, h := range in.RegistryHosts {
			pattern, isWildcard := strings.CutPrefix(strings.ToLower(h), "*.")
			if !isWildcard {
				continue
			}
			pHost, pPort := pattern, ""
			if i := strings.LastIndexByte(pattern, ':'); i >= 0 {
				pHost, pPort = pattern[:i], pattern[i+1:]
			}
			_, rest, found := strings.Cut(host, ".")
			if pPort == port && found && rest == pHost && bestLen < 0 {
				best, bestLen = in.Name, len(pHost)
			}
		}
	}
	return best, bestLen >= 0
}
