package config

import (
	"strings"
	"testing"
	"time"
)

const minimal = `
instances:
- name: main
  url: https://example.jfrog.io
  registryHosts: [example.jfrog.io, "*.example.jfrog.io"]
`

func TestParseAppliesDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	in := c.Instances[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"namespaceLabel", c.NamespaceLabel, DefaultNamespaceLabel},
		{"podOptOutLabel", c.PodOptOutLabel, DefaultPodOptOutLabel},
		{"refreshThreshold", c.RefreshThreshold, DefaultRefreshThreshold},
		{"requestTimeout", c.RequestTimeout.Duration, DefaultRequestTimeout},
		{"aws.authType", c.AWS.AuthType, AuthAuto},
		{"secretName", in.SecretName, DefaultSecretName},
		{"tokenTTL", in.TokenTTL.Duration, DefaultTokenTTL},
		{"exchangeTimeout", in.ExchangeTimeout.Duration, DefaultExchangeTimeout},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseLowercasesRegistryHosts(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(minimal, "example.jfrog.io,", "Example.JFrog.io,", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Instances[0].RegistryHosts[0]; got != "example.jfrog.io" {
		t.Errorf("host = %q, want lowercase", got)
	}
}

func TestParseReadsEveryField(t *testing.T) {
	c, err := Parse([]byte(`
namespaceLabel: team.example.com/pull=yes
podOptOutLabel: team.example.com/pull=no
refreshThreshold: 0.5
requestTimeout: 3s
aws: {authType: podIdentity, region: us-gov-west-1, stsEndpoint: "https://sts.example.internal"}
instances:
- name: a
  url: https://a.example.com/artifactory
  registryHosts: ["a.example.com:8443"]
  tokenTTL: 1h
  secretName: a-pull
  exchangeTimeout: 2s
retiredSecretNames: [old-pull]
`))
	if err != nil {
		t.Fatal(err)
	}
	in := c.Instances[0]
	if c.AWS.AuthType != AuthPodIdentity || c.AWS.Region != "us-gov-west-1" || c.RefreshThreshold != 0.5 ||
		c.RequestTimeout.Duration != 3*time.Second || in.TokenTTL.Duration != time.Hour ||
		in.SecretName != "a-pull" || in.ExchangeTimeout.Duration != 2*time.Second ||
		c.NamespaceLabel != "team.example.com/pull=yes" || len(c.RetiredSecretNames) != 1 || c.RetiredSecretNames[0] != "old-pull" {
		t.Errorf("fields not read: %+v", c)
	}
}

func TestParseRejectsInvalidConfigNamingTheField(t *testing.T) {
	cases := []struct {
		name, doc, field string
	}{
		{"no instances", `instances: []`, "instances:"},
		{"unknown key", minimal + "\nrefreshTreshold: 0.3\n", "refreshTreshold"},
		{"bad url", strings.Replace(minimal, "https://example.jfrog.io", "example.jfrog.io", 1), "instances[0].url"},
		{"no hosts", strings.Replace(minimal, `[example.jfrog.io, "*.example.jfrog.io"]`, `[]`, 1), "instances[0].registryHosts"},
		{"host with scheme", strings.Replace(minimal, `[example.jfrog.io,`, `["https://example.jfrog.io",`, 1), "instances[0].registryHosts[0]"},
		{"inner wildcard", strings.Replace(minimal, `"*.example.jfrog.io"`, `"a.*.jfrog.io"`, 1), "instances[0].registryHosts[1]"},
		{"bad port", strings.Replace(minimal, `[example.jfrog.io,`, `["example.jfrog.io:x",`, 1), "instances[0].registryHosts[0]"},
		{"auth type", minimal + "aws: {authType: keys}\n", "aws.authType"},
		{"threshold", minimal + "refreshThreshold: 1.5\n", "refreshThreshold"},
		{"label", minimal + "namespaceLabel: enabled\n", "namespaceLabel"},
		{"duration", minimal + "requestTimeout: soon\n", "requestTimeout"},
		{"ttl below refresh window", minimal + "  tokenTTL: 12s\n", "instances[0].tokenTTL"},
		{"duplicate name", minimal + "- name: main\n  url: https://b.example.com\n  registryHosts: [b.example.com]\n  secretName: b\n", "instances[1].name"},
		{"duplicate secretName", minimal + "- name: b\n  url: https://b.example.com\n  registryHosts: [b.example.com]\n", "instances[1].secretName"},
		{"duplicate host", minimal + "- name: b\n  url: https://b.example.com\n  registryHosts: [example.jfrog.io]\n  secretName: b\n", "instances[1].registryHosts[0]"},
		{"missing ca", minimal + "  caBundle: /nonexistent/ca.pem\n", "instances[0].caBundle"},
		{"retired name in use", minimal + "retiredSecretNames: [artifactory-pull]\n", "retiredSecretNames[0]"},
		{"token Secret named as the pull Secret", minimal + "  tokenSecretName: artifactory-pull\n", "instances[0].tokenSecretName"},
		{"token Secret name invalid", minimal + "  tokenSecretName: Token_Secret\n", "instances[0].tokenSecretName"},
		{"token Secret with wildcard hosts only", strings.Replace(minimal, `[example.jfrog.io, "*.example.jfrog.io"]`, `["*.example.jfrog.io"]`, 1) + "  tokenSecretName: artifactory-token\n", "instances[0].tokenSecretName"},
		{"token Secret of a ServiceAccount identity", minimal + "  identity: serviceAccount\n  tokenSecretName: artifactory-token\n", "instances[0].tokenSecretName"},
		{"retired token Secret name in use", minimal + "  tokenSecretName: artifactory-token\nretiredSecretNames: [artifactory-token]\n", "retiredSecretNames[0]"},
		{"retired name invalid", minimal + "retiredSecretNames: [Not_A_Name]\n", "retiredSecretNames[0]"},
		{"retired name twice", minimal + "retiredSecretNames: [old, old]\n", "retiredSecretNames[1]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %q", err, tc.field)
			}
		})
	}
}

func TestSplitLabel(t *testing.T) {
	k, v, err := SplitLabel("artifactory-pull-webhook/inject=enabled")
	if err != nil || k != "artifactory-pull-webhook/inject" || v != "enabled" {
		t.Errorf("got %q %q %v", k, v, err)
	}
	for _, bad := range []string{"novalue", "=x", "a b=c", "k=with space"} {
		if _, _, err := SplitLabel(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseRejectsPlainHTTPArtifactoryURLs(t *testing.T) {
	for _, u := range []string{"http://example.jfrog.io", "http://127.0.0.1:8081", "http://localhost/artifactory", "http://[::1]:8082"} {
		t.Run(u, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(minimal, "https://example.jfrog.io", u, 1)))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, want := range []string{"instances[0].url", "must use https", u, "instances[0].caBundle"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestParseRejectsNamespaceLabelWithEmptyValue(t *testing.T) {
	_, err := Parse([]byte(minimal + "namespaceLabel: team.example.com/pull=\n"))
	if err == nil {
		t.Fatal(`namespaceLabel "team.example.com/pull=" accepted: namespaces without the label would opt in`)
	}
	for _, want := range []string{"namespaceLabel", `"team.example.com/pull="`, "empty value", "team.example.com/pull=enabled"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	// An opt-out label is matched only when present, so an empty value is fine there.
	if _, err := Parse([]byte(minimal + "podOptOutLabel: team.example.com/skip=\n")); err != nil {
		t.Errorf("podOptOutLabel with an empty value: %v", err)
	}
}

func TestParseAcceptsEveryAuthType(t *testing.T) {
	for _, a := range []AuthType{AuthAuto, AuthWebIdentity, AuthPodIdentity, AuthDefault} {
		c, err := Parse([]byte(minimal + "aws: {authType: " + string(a) + "}\n"))
		if err != nil {
			t.Errorf("authType %s: %v", a, err)
		} else if c.AWS.AuthType != a {
			t.Errorf("authType = %q, want %q", c.AWS.AuthType, a)
		}
	}
	_, err := Parse([]byte(minimal + "aws: {authType: keys}\n"))
	if err == nil || !strings.Contains(err.Error(), "must be auto, webIdentity, podIdentity or default") {
		t.Errorf("unknown authType: err = %v, want it to list the four types", err)
	}
}
