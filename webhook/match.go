package webhook

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/distribution/reference"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
)

// Matcher maps an image reference to the configured instance serving its
// registry host. Its patterns are fixed by NewMatcher; it is safe for
// concurrent use.
type Matcher struct {
	names     []string
	exact     map[string]int // "host" or "host:port", lowercase → instance index
	wildcards []wildcard     // most specific suffix first

	// known memoizes match for valid references (image → instance index or
	// -1). Parsing a reference runs distribution/reference's regular
	// expressions, the largest cost of a warm admission, while a cluster
	// pulls from a small set of images. Bounded: emptied when full.
	known     sync.Map
	knownSize atomic.Int32
}

// maxKnownImages bounds Matcher.known (a few hundred KiB at most).
const maxKnownImages = 4096

// wildcard is a "*.suffix[:port]" pattern. suffix keeps its leading dot, so
// "*.jfrog.io" cannot match "jfrog.io" or "evil-jfrog.io".
type wildcard struct {
	suffix   string
	port     string
	instance int
}

// NewMatcher precomputes the host patterns of instances. Patterns are host,
// host:port or *.suffix[:port], compared case-insensitively. When patterns
// overlap, an exact host beats a wildcard and a longer wildcard suffix beats
// a shorter one; otherwise the first instance in config order wins.
func NewMatcher(instances []config.Instance) *Matcher {
	m := &Matcher{exact: map[string]int{}}
	for i, in := range instances {
		m.names = append(m.names, in.Name)
		for _, h := range in.RegistryHosts {
			h = strings.ToLower(strings.TrimSpace(h))
			if rest, ok := strings.CutPrefix(h, "*."); ok {
				host, port := splitPort(rest)
				m.wildcards = append(m.wildcards, wildcard{suffix: "." + host, port: port, instance: i})
				continue
			}
			if _, dup := m.exact[h]; !dup {
				m.exact[h] = i
			}
		}
	}
	slices.SortStableFunc(m.wildcards, func(a, b wildcard) int { return len(b.suffix) - len(a.suffix) })
	return m
}

// Match returns the name of the instance serving image's registry. err is
// set when image is not a valid reference.
func (m *Matcher) Match(image string) (instance string, ok bool, err error) {
	i, err := m.match(image)
	if err != nil || i < 0 {
		return "", false, err
	}
	return m.names[i], true, nil
}

// match returns the index of the matching instance, or -1.
func (m *Matcher) match(image string) (int, error) {
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

func (m *Matcher) matchDomain(domain string) int {
	domain = strings.ToLower(domain) // no allocation when already lowercase
	if i, ok := m.exact[domain]; ok {
		return i
	}
	host, port := splitPort(domain)
	for _, w := range m.wildcards {
		if w.port == port && strings.HasSuffix(host, w.suffix) {
			return w.instance
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
