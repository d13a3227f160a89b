package config

import (
	"strings"
	"testing"
)

func TestParseReadsTheOIDCExchangeWithDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal + `  exchange: oidc
  identity: serviceAccount
  oidc: {providerName: k8s-cluster, identityMappingName: pull, projectKey: team, audience: jfrog}
`))
	if err != nil {
		t.Fatal(err)
	}
	in := c.Instances[0]
	if !in.ExchangesOIDC() || in.OIDC.ProviderName != "k8s-cluster" || in.OIDC.IdentityMappingName != "pull" ||
		in.OIDC.ProjectKey != "team" || in.OIDC.Audience != "jfrog" {
		t.Errorf("instance %+v, oidc %+v", in, in.OIDC)
	}
	if in.OIDC.SubjectToken.Source != SubjectServiceAccount || in.SubjectAudience() != "https://example.jfrog.io" {
		t.Errorf("subject token source %q audience %q, want serviceAccount and the instance url", in.OIDC.SubjectToken.Source, in.SubjectAudience())
	}
	plain, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if plain.Instances[0].Exchange != ExchangeAWS || plain.Instances[0].ExchangesOIDC() {
		t.Errorf("default exchange %q, want aws", plain.Instances[0].Exchange)
	}
	c, err = Parse([]byte(minimal + "  exchange: oidc\n  oidc: {providerName: azure, subjectToken: {source: file, path: /var/run/secrets/azure/tokens/azure-identity-token}}\n"))
	if err != nil || c.Instances[0].OIDC.SubjectToken.Path == "" {
		t.Errorf("file source: %v", err)
	}
	c, err = Parse([]byte(minimal + "  exchange: oidc\n  oidc: {providerName: gke, subjectToken: {source: gcpMetadata, audience: artifactory}}\n"))
	if err != nil || c.Instances[0].SubjectAudience() != "artifactory" {
		t.Errorf("gcpMetadata source: %v", err)
	}
}

func TestParseRejectsBadOIDCSettingsNamingTheField(t *testing.T) {
	for _, tc := range []struct{ name, doc, field string }{
		{"unknown exchange", minimal + "  exchange: saml\n", "instances[0].exchange"},
		{"oidc without providerName", minimal + "  exchange: oidc\n", "instances[0].oidc.providerName"},
		{"oidc block with exchange aws", minimal + "  oidc: {providerName: x}\n", "instances[0].oidc"},
		{"unknown source", minimal + "  exchange: oidc\n  oidc: {providerName: x, subjectToken: {source: vault}}\n", "instances[0].oidc.subjectToken.source"},
		{"file without path", minimal + "  exchange: oidc\n  oidc: {providerName: x, subjectToken: {source: file}}\n", "instances[0].oidc.subjectToken.path"},
		{"file with an audience", minimal + "  exchange: oidc\n  oidc: {providerName: x, subjectToken: {source: file, path: /t, audience: a}}\n", "instances[0].oidc.subjectToken.audience"},
		{"per-ServiceAccount with a file", minimal + "  exchange: oidc\n  identity: serviceAccount\n  oidc: {providerName: x, subjectToken: {source: file, path: /t}}\n", "instances[0].oidc.subjectToken.source"},
		{"assumeRole with oidc", minimal + "  exchange: oidc\n  oidc: {providerName: x}\n  aws: {assumeRole: {roleARN: \"arn:aws:iam::210987654321:role/pull\"}}\n", "instances[0].aws.assumeRole"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
}
