package config

import (
	"strings"
	"testing"
)

func TestIdentityDefaultsToWebhookAndFallbackToNone(t *testing.T) {
	c, err := Parse([]byte(minimal + `  identity: serviceAccount
- name: shared
  url: https://shared.example.io
  registryHosts: [shared.example.io]
  secretName: shared-pull
`))
	if err != nil {
		t.Fatal(err)
	}
	if in := c.Instances[0]; in.Identity != IdentityServiceAccount || in.Fallback != FallbackNone || !in.PerServiceAccount() {
		t.Errorf("instance 0: identity %q fallback %q, want serviceAccount and none", in.Identity, in.Fallback)
	}
	if in := c.Instances[1]; in.Identity != IdentityWebhook || in.Fallback != "" || in.PerServiceAccount() {
		t.Errorf("instance 1: identity %q fallback %q, want webhook and no fallback", in.Identity, in.Fallback)
	}
	if !c.PerServiceAccount() {
		t.Error("config with a serviceAccount instance does not report PerServiceAccount")
	}
	plain, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if plain.PerServiceAccount() {
		t.Error("config without a serviceAccount instance reports PerServiceAccount")
	}
}

func TestParseReadsIdentityFallbackAssumeRoleAndOptIn(t *testing.T) {
	c, err := Parse([]byte(minimal + `  identity: serviceAccount
  fallback: webhook
  aws:
    assumeRole: {roleARN: "arn:aws:iam::210987654321:role/pull", externalID: "fleet-42", sessionName: "eu-cluster"}
serviceAccounts: {optInAnnotation: JFrogExchange}
`))
	if err != nil {
		t.Fatal(err)
	}
	in := c.Instances[0]
	if in.Fallback != FallbackWebhook {
		t.Errorf("fallback = %q, want webhook", in.Fallback)
	}
	if ar := in.AWS.AssumeRole; ar == nil || ar.RoleARN != "arn:aws:iam::210987654321:role/pull" || ar.ExternalID != "fleet-42" || ar.SessionName != "eu-cluster" {
		t.Errorf("assumeRole = %+v", ar)
	}
	if c.ServiceAccounts.OptInAnnotation != "JFrogExchange" {
		t.Errorf("optInAnnotation = %q", c.ServiceAccounts.OptInAnnotation)
	}
}

func TestParseRejectsBadIdentitySettingsNamingTheField(t *testing.T) {
	second := func(secretName string) string {
		return `
- name: other
  url: https://other.example.io
  registryHosts: [other.example.io]
  secretName: ` + secretName + "\n"
	}
	for _, tc := range []struct{ name, doc, field string }{
		{"unknown identity", minimal + "  identity: pod\n", "instances[0].identity"},
		{"unknown fallback", minimal + "  identity: serviceAccount\n  fallback: node\n", "instances[0].fallback"},
		{"fallback without serviceAccount", minimal + "  fallback: webhook\n", "instances[0].fallback"},
		{"another secretName under the per-ServiceAccount prefix", minimal + "  identity: serviceAccount\n" + second("artifactory-pull-team"), "instances[0].secretName"},
		{"a retired name under the prefix", minimal + "  identity: serviceAccount\nretiredSecretNames: [artifactory-pull-old]\n", "instances[0].secretName"},
		{"assumeRole not a role", minimal + "  aws: {assumeRole: {roleARN: \"arn:aws:iam::210987654321:user/bob\"}}\n", "instances[0].aws.assumeRole.roleARN"},
		{"external ID with a space", minimal + "  aws: {assumeRole: {roleARN: \"arn:aws:iam::210987654321:role/pull\", externalID: \"a b\"}}\n", "instances[0].aws.assumeRole.externalID"},
		{"session name too long", minimal + "  aws: {assumeRole: {roleARN: \"arn:aws:iam::210987654321:role/pull\", sessionName: \"" + strings.Repeat("s", 65) + "\"}}\n", "instances[0].aws.assumeRole.sessionName"},
		{"secretName too long for the per-ServiceAccount prefix", minimal + "  identity: serviceAccount\n  secretName: " + strings.Repeat("s", MaxServiceAccountSecretPrefix+1) + "\n", "instances[0].secretName"},
		{"opt-in annotation not a name", minimal + "serviceAccounts: {optInAnnotation: \"bad key!\"}\n", "serviceAccounts.optInAnnotation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
	// The prefix rule applies to serviceAccount instances only.
	if _, err := Parse([]byte(minimal + second("artifactory-pull-team"))); err != nil {
		t.Errorf("two webhook-identity instances with prefixed names: %v", err)
	}
}
