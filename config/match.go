package config

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/distribution/reference"
)

// Matcher maps an image reference to the configured instance serving its
// registry host. It matches a host as kubelet matches the keys of the pull
// Secret the instance gets, so that a matched pod is patched with a Secret
// kubelet will use. Its patterns are fixed by NewMatcher; it is safe for
// concurrent use.
type Matcher struct {
	names     []string
	exact     map[string]int   // "host" or "host:port", lowercase → instance index
	wildcards map[wildcard]int // "*.suffix[:port]" → instance index

	// known memoizes match for valid references (image → instance index or
	// -1). Parsing a reference runs distribution/reference's regular
	// expressions, the largest cost of a warm admission, while a cluster
	// pulls from a small set of images. Bounded: emptied when full.
	known     sync.Map
	knownSize atomic.Int32
}

// maxKnownImages bounds Matcher.known (a few hundred KiB at most).
const maxKnownImages = 4096

// wildcard is a "*.suffix[:port]" pattern, lowercase, without the "*.".
type wildcard struct {
	suffix string
	port   string
}

// NewMatcher precomputes the host patterns of instances. Patterns are host,
// host:port or *.suffix[:port] and match as kubelet's credential keyring
// matches a dockerconfig key: the port must be the same (a pattern without
// port matches only an image without port), and "*" stands for exactly one
// DNS label, so "*.jfrog.io" matches a.jfrog.io but neither jfrog.io nor
// a.b.jfrog.io. Patterns are lowercased (as the Secret's keys are); an image
// host is compared as written, case-sensitively like kubelet, so one in upper
// case matches nothing: kubelet would not apply the Secret to it. When
// patterns overlap, an exact host beats a wildcard; otherwise the first
// instance in config order wins. (Two different wildcards never match the
// same host: each fixes every label but the first.)
func NewMatcher(instances []Instance) *Matcher {
	m := &Matcher{exact: map[string]int{}, wildcards: map[wildcard]int{}}
	for i, in := range instances {
		m.names = append(m.names, in.Name)
		for _, h := range in.RegistryHosts {
			h = strings.ToLower(strings.TrimSpace(h))
			if rest, ok := strings.CutPrefix(h, "*."); ok {
				host, port := splitPort(rest)
				if _, dup := m.wildcards[wildcard{host, port}]; !dup {
					m.wildcards[wildcard{host, port}] = i
				}
				continue
			}
			if strings.HasSuffix(h, "]") {
				// kubelet globs each label and, without a port, keeps the
				// brackets: "[v6]" reads as a character class and never
				// matches an IPv6 literal.
				continue
			}
			if _, dup := m.exact[h]; !dup {
				m.exact[h] = i
			}
		}
	}
	return m
}

// Match returns the name of the instance serving image's registry. err is
// set when image is not a valid reference.
func (m *Matcher) Match(image string) (instance string, ok bool, err error) {
	i, err := m.Index(image)
	if err != nil || i < 0 {
		return "", false, err
	}
	return m.names[i], true, nil
}

// Index returns the index (in the instances given to NewMatcher) of the
// instance serving image's registry, or -1. err is set when image is not a
// valid reference.
func (m *Matcher) Index(image string) (int, error) {
	if i, ok := m.known.Load(image); ok {
		return i.(int), nil
	}
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return -1, fmt.Errorf("parsing image reference %q: %w", image, err)
	}
	i := m.matchDomain(reference.Domain(named))
	if m.knownSize.Add(1) > maxKnownImages {
		m.known.Clear()
		m.knownSize.Store(1)
	}
	m.known.Store(image, i)
	return i, nil
}

// matchDomain matches a registry domain, "host[:port]", as it comes out of a
// parsed reference (no trailing dot, no empty label).
func (m *Matcher) matchDomain(domain string) int {
	if i, ok := m.exact[domain]; ok {
		return i
	}
	host, port := splitPort(domain)
	// kubelet splits both hosts on "." and globs label by label: "*" takes
	// the first label, and the rest must equal the suffix.
	if _, suffix, ok := strings.Cut(host, "."); ok {
		if i, ok := m.wildcards[wildcard{suffix, port}]; ok {
			return i
		}
	}
	return -1
}

// splitPort splits "host:port" (also "[v6]:port"); port is empty when absent.
func splitPort(hostport string) (host, port string) {
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 || i < strings.LastIndexByte(hostport, ']') {
		return hostport, ""
	}
	return hostport[:i], hostport[i+1:]
}
