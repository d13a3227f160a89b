package credentials

import (
	"context"
	"errors"
	"fmt"
	"github.com/aws/smithy-go"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// TestExplainGivesTheCauseAndFixOfEachExchangeFailure runs the real
// exchanger against each failure and checks that the one table of hints
// names a cause and a fix that fit it, and never a token.
func TestExplainGivesTheCauseAndFixOfEachExchangeFailure(t *testing.T) {
	const role = "arn:aws:iam::123456789012:role/puller"
	tests := []struct {
		name    string
		respond func(http.ResponseWriter, *http.Request)
		mod     func(*ExchangeOptions)
		region  string // signed for, and asked with ?region=
		role    string // the role check learnt from GetCallerIdentity
		cause   string
		fix     string
	}{
		{name: "401 unmapped role from the body", respond: status(401, `{"errors":[{"status":401,"message":"No user is mapped to IAM role `+role+`"}]}`),
			cause: "maps no user to its IAM role " + role, fix: `PUT /access/api/v1/aws/iam_role {"username":"<user>","iam_role":"` + role + `"}`},
		{name: "401 unmapped role from check", respond: status(401, `{"errors":[{"status":401,"message":"Unauthorized"}]}`), role: role,
			cause: "maps no user", fix: `"iam_role":"` + role + `"`},
		{name: "401 in GovCloud without a region", respond: status(401, `{"errors":[{"status":401,"message":"Failed to verify AWS identity"}]}`),
			role: "arn:aws-us-gov:iam::123456789012:role/puller", cause: "partition aws-us-gov", fix: "set aws.region to the role's region (e.g. us-gov-west-1)"},
		{name: "401 clock skew", respond: status(401, `{"errors":[{"message":"Failed to verify AWS identity: SignatureDoesNotMatch: Signature expired: 20260517T100000Z is now earlier than 20260517T102500Z"}]}`),
			cause: "clock", fix: "synchronise the node's clock"},
		{name: "401 STS refused", respond: status(401, `{"errors":[{"message":"Failed to verify AWS identity: AccessDenied: denied"}]}`),
			cause: "STS refused the signed request", fix: "set aws.region"},
		{name: "403 above the admin maximum", respond: status(403, `{"errors":[{"status":403,"message":"expires_in exceeds the admin limit of 1800 seconds"}]}`),
			cause: "expires_in 3600", fix: "tokenTTL to at most 1800s (now 1h0m0s)"},
		{name: "403 without the maximum", respond: status(403, `{"errors":[{"status":403,"message":"Forbidden"}]}`),
			cause: "above its maximum", fix: "lower the instance's tokenTTL (now 1h0m0s)"},
		{name: "404", respond: status(404, `not found`), cause: "no token exchange", fix: "base URL"},
		{name: "400 region", respond: status(400, `{"errors":[{"message":"invalid region"}]}`), region: "eu-west-1",
			cause: "region eu-west-1", fix: "aws.region"},
		{name: "500", respond: status(500, `{"errors":[{"message":"database connection pool exhausted"}]}`), cause: "HTTP 500", fix: "Access service"},
		{name: "login page", respond: status(200, `<html>Sign in to JFrog</html>`), cause: "not Artifactory's token JSON", fix: "base URL"},
		{name: "anonymous token", respond: okResponse(testRawToken, "anonymous", 3600), cause: "CVE-2026-42018", fix: "upgrade Artifactory"},
		{name: "redirect", respond: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.example/access", http.StatusTemporaryRedirect)
		}, cause: "redirected", fix: "address it redirects to"},
		{name: "unknown authority", mod: func(o *ExchangeOptions) {
			o.HTTPClient, _ = NewHTTPClient("", 5*time.Second)
		}, cause: "authority the webhook does not trust", fix: "caBundle"},
		{name: "timeout", respond: func(http.ResponseWriter, *http.Request) {
			time.Sleep(time.Second) // past the client's timeout (returning would answer an empty 200)
		}, mod: func(o *ExchangeOptions) { o.HTTPClient.Timeout = 200 * time.Millisecond },
			cause: "within the exchange timeout (200ms)", fix: "exchangeTimeout"},
		{name: "body stalls after a 200", respond: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			// Past the client's timeout whatever the request's context says:
			// returning early would end the body, a different failure.
			time.Sleep(time.Second)
		}, mod: func(o *ExchangeOptions) { o.HTTPClient.Timeout = 200 * time.Millisecond },
			cause: "did not finish its answer within the exchange timeout (200ms)", fix: "exchangeTimeout"},
		{name: "credentials", mod: func(o *ExchangeOptions) {
			o.Credentials = sourced{aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
				return aws.Credentials{}, errors.New("exceeded maximum number of attempts: pod identity agent is down")
			}), AWSSource{Kind: AuthPodIdentity}}
		}, cause: "Pod Identity agent", fix: "Pod Identity association"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeArtifactory(t)
			if tc.respond != nil {
				f.respond = tc.respond
			}
			if tc.region != "" {
				f.region, f.regionSet, f.stsHost = tc.region, tc.region, "sts."+tc.region+".amazonaws.com"
			}
			e := newTestExchanger(t, f, func(o *ExchangeOptions) {
				o.Region = tc.region
				if tc.mod != nil {
					tc.mod(o)
				}
			})
			_, err := e.Exchange(context.Background())
			if err == nil {
				t.Fatal("the exchange succeeded")
			}
			h, ok := Explain(fmt.Errorf("pull secret x: %w", err), tc.role)
			if !ok {
				t.Fatalf("no hint for %v", err)
			}
			if !strings.Contains(h.Cause, tc.cause) || !strings.Contains(h.Fix, tc.fix) {
				t.Errorf("hint %+v\nwant cause ∋ %q and fix ∋ %q (error: %v)", h, tc.cause, tc.fix, err)
			}
			if all := h.Cause + h.Fix + h.Detail; strings.Contains(all, testRawToken) || strings.Contains(all, testSecretKey) ||
				strings.Contains(all, testSessionToken) {
				t.Errorf("a hint carries a secret: %+v", h)
			}
			if got := h.ShortFix(); got != "to fix: "+h.Fix {
				t.Errorf("ShortFix = %q", got)
			}
		})
	}
}

func TestExplainOIDCAndSubjectFailures(t *testing.T) {
	oidcErr := &ExchangeError{Instance: "o", Host: "a.example", Status: 401, Exchange: ExchangeOIDC,
		Body: `{"errors":[{"message":"no identity mapping matched"}]}`}
	if h, _ := Explain(oidcErr, ""); !strings.Contains(h.Fix, "mapping matches the token's iss and sub") {
		t.Errorf("OIDC 401 hint %+v", h)
	}
	subject := &ExchangeError{Instance: "o", Host: "a.example", Exchange: ExchangeOIDC,
		Err: fmt.Errorf("%w: open /var/run/token: no such file", errSubjectToken)}
	if h, _ := Explain(subject, ""); !strings.Contains(h.Fix, "oidc.subjectToken") {
		t.Errorf("subject token hint %+v", h)
	}
	refused := fmt.Errorf("requesting a token: %w: forbidden", ErrServiceAccountTokenRefused)
	if h, _ := Explain(refused, ""); !strings.Contains(h.Fix, "serviceaccounts/token") {
		t.Errorf("refused ServiceAccount token hint %+v", h)
	}
	role := &RoleError{ID: Identity{RoleARN: "arn:aws:iam::123456789012:role/team-a", Namespace: "team-a", ServiceAccount: "api"},
		Err: &smithy.GenericAPIError{Code: "AccessDenied", Message: "Not authorized to perform sts:AssumeRoleWithWebIdentity"}}
	// As the exchange returns it: wrapped as the credentials that failed.
	f := newFakeArtifactory(t)
	_, viaExchange := newTestExchanger(t, f, nil).ExchangeWith(context.Background(),
		aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return aws.Credentials{}, role }))
	if h, _ := Explain(fmt.Errorf("pull secret x: %w", viaExchange), ""); !strings.Contains(h.Fix, "system:serviceaccount:team-a:api") ||
		!strings.Contains(h.Fix, "arn:aws:iam::123456789012:role/team-a") {
		t.Errorf("a ServiceAccount's refused role: %+v", h)
	}
	// STS unreachable is not a trust policy to fix.
	down := &RoleError{ID: role.ID, Err: fmt.Errorf("operation error STS: AssumeRoleWithWebIdentity: %w", context.DeadlineExceeded)}
	if h, _ := Explain(down, ""); strings.Contains(h.Fix, "trust policy") || !strings.Contains(h.Fix, "network path to STS") ||
		!strings.Contains(h.Cause, "a timeout") {
		t.Errorf("STS timing out: %+v", h)
	}
	// Artifactory names the role only after STS verified it: a GovCloud
	// role without aws.region is still a missing mapping.
	gov := &ExchangeError{Instance: "g", Host: "a.example", Status: 401, Exchange: ExchangeAWS,
		Body: `{"errors":[{"message":"No user is mapped to IAM role arn:aws-us-gov:iam::123456789012:role/puller"}]}`}
	if h, _ := Explain(gov, ""); !strings.Contains(h.Fix, "iam_role") {
		t.Errorf("mapped GovCloud role: %+v", h)
	}
	// An ARN longer than any IAM role's is not repeated whole.
	long := &ExchangeError{Instance: "g", Host: "a.example", Status: 401, Exchange: ExchangeAWS,
		Body: "no user is mapped to IAM role arn:aws:iam::123456789012:role/" + strings.Repeat("a", 2000)}
	if h, _ := Explain(long, ""); len(h.Fix) > 700 {
		t.Errorf("a 2000-character role name made a fix of %d bytes", len(h.Fix))
	}
	if _, ok := Explain(errors.New("something else"), ""); ok {
		t.Error("an error of no known kind got a hint")
	}
	if _, ok := Explain(nil, ""); ok {
		t.Error("nil got a hint")
	}
}

func TestExplainCredentialsNamesTheSourceToFix(t *testing.T) {
	tests := []struct{ err, fix string }{
		{"authType auto: neither EKS Pod Identity (...) nor IRSA (...) is configured", "an EKS Pod Identity association, or the eks.amazonaws.com/role-arn annotation"},
		{"EKS Pod Identity agent: failed to refresh cached credentials: not valid for this association", "Pod Identity association"},
		{"IRSA (sts:AssumeRoleWithWebIdentity): operation error STS: AssumeRoleWithWebIdentity, AccessDenied", "trust policy"},
		{"operation error STS: AssumeRole, https response error StatusCode: 403, AccessDenied", "external ID"},
		{"IRSA (sts:AssumeRoleWithWebIdentity): open /var/run/secrets/eks.amazonaws.com/serviceaccount/token: no such file or directory", "projected token volume"},
		{"authType webIdentity: AWS_ROLE_ARN is not set", "set aws.authType: auto"},
		{"something nobody foresaw", "aws.authType and the pod's AWS environment"},
	}
	for _, tc := range tests {
		if h := ExplainCredentials(errors.New(tc.err)); !strings.Contains(h.Fix, tc.fix) {
			t.Errorf("ExplainCredentials(%q) = %+v, want fix ∋ %q", tc.err, h, tc.fix)
		}
	}
}

func TestIAMRoleAndPartitionOfAnAssumedRole(t *testing.T) {
	if got := IAMRoleOf("arn:aws-us-gov:sts::123456789012:assumed-role/puller/session-1"); got != "arn:aws-us-gov:iam::123456789012:role/puller" {
		t.Errorf("IAMRoleOf = %q", got)
	}
	if got := IAMRoleOf("arn:aws:iam::123456789012:user/alice"); got != "arn:aws:iam::123456789012:user/alice" {
		t.Errorf("IAMRoleOf of a user = %q", got)
	}
	if got := PartitionOf("arn:aws-cn:iam::123456789012:role/x"); got != "aws-cn" {
		t.Errorf("PartitionOf = %q", got)
	}
}

func TestResolveAWSSourceSaysWhy(t *testing.T) {
	clearAWSEnv(t)
	if _, err := ResolveAWSSource(AWSOptions{AuthType: AuthAuto, InCluster: func() bool { return true }}); err == nil ||
		!strings.Contains(err.Error(), "neither EKS Pod Identity") {
		t.Errorf("auto without identity: %v", err)
	}
	t.Setenv(envRoleARN, "arn:aws:iam::123456789012:role/webhook")
	t.Setenv(envWebIdentityFile, "/var/run/token")
	src, err := ResolveAWSSource(AWSOptions{})
	if err != nil || src.Kind != AuthWebIdentity || !strings.Contains(src.Why, "arn:aws:iam::123456789012:role/webhook") {
		t.Errorf("auto with IRSA: %+v %v", src, err)
	}
	t.Setenv(envContainerURI, "http://127.0.0.1:1/v1/credentials")
	t.Setenv(envContainerTokenFile, "/var/run/pi-token")
	if src, _ := ResolveAWSSource(AWSOptions{}); src.Kind != AuthPodIdentity || !strings.Contains(src.Why, envContainerTokenFile) {
		t.Errorf("auto with Pod Identity: %+v", src)
	}
	if src, _ := ResolveAWSSource(AWSOptions{AuthType: AuthDefault}); src.Kind != AuthDefault || src.String() != "the AWS SDK default chain" {
		t.Errorf("default: %+v", src)
	}
}
