package config

import (
	"reflect"
	"testing"

	"sigs.k8s.io/yaml"
)

// FuzzParse feeds arbitrary documents to the config loader. It must never
// panic; whatever it accepts must pass validation again and survive a
// marshal/parse round trip unchanged (defaults are applied once, and a
// config that was valid stays valid when written back out).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"instances:\n- name: main\n  url: https://example.jfrog.io\n  registryHosts: [example.jfrog.io, \"*.example.jfrog.io\"]\n",
		"instances:\n- name: a\n  url: https://a.example/artifactory\n  registryHosts: [\"a.example:8443\"]\n  tokenTTL: 1h\n  secretName: s-a\n  caBundle: /etc/ca.pem\n  exchangeTimeout: 2s\n" +
			"- name: b\n  url: http://10.0.0.1\n  registryHosts: [\"[::1]:5000\"]\naws:\n  authType: podIdentity\n  region: us-gov-west-1\n" +
			"namespaceLabel: a/b=c\npodOptOutLabel: d=e\nrefreshThreshold: 0.5\nrequestTimeout: 9s\n",
		"instances: []\n",
		"instances:\n- name: x\n  url: ftp://x\n  registryHosts: [\"*.\"]\n  tokenTTL: -1s\n",
		"{\"instances\":[{\"name\":\"j\",\"url\":\"https://j.example\",\"registryHosts\":[\"J.Example\"]}],\"unknown\":1}",
		"instances:\n- &a {name: a, url: \"https://a\", registryHosts: [a]}\n- *a\n",
		"requestTimeout: 1e309s\nrefreshThreshold: .nan\n",
		"\t- :\n", "", "null", "---\n---\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := Parse(doc)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate rejects: %v", err)
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("marshalling an accepted config: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("an accepted config does not parse back: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", c, again)
		}
	})
}
