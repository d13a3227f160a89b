package emulator

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/awssig"
)

const testSubject = "system:serviceaccount:apps:puller"

func newTestSTS(t *testing.T, iss *oidcIssuer, clk *clock) *STS {
	t.Helper()
	s := NewSTS(STSOptions{
		Issuer: iss.srv.URL,
		Roles:  map[string][]string{testRoleARN: {testSubject}},
		Now:    clk.Now,
	})
	t.Cleanup(s.Close)
	return s
}

// stsClient is aws-sdk-go-v2's STS client pointed at the emulator; creds may be nil (anonymous).
func stsClient(s *STS, creds aws.CredentialsProvider) *sts.Client {
	return sts.New(sts.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(s.URL()),
		Credentials:      creds,
		RetryMaxAttempts: 1,
	})
}

func apiErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestAssumeRoleWithWebIdentityVerifiesTokenAndTrust(t *testing.T) {
	iss := newOIDCIssuer(t)
	clk := newClock()
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	tests := []struct {
		name     string
		role     string
		token    func() string
		wantCode string
	}{
		{"valid token for a trusting role gets credentials", testRoleARN, func() string {
			return iss.sign(t, iss.claims(testSubject, now), iss.key)
		}, ""},
		{"wrong audience is rejected", testRoleARN, func() string {
			c := iss.claims(testSubject, now)
			c.Audience = jwt.Audience{"https://kubernetes.default.svc"}
			return iss.sign(t, c, iss.key)
		}, "InvalidIdentityToken"},
		{"expired token is rejected", testRoleARN, func() string {
			c := iss.claims(testSubject, now.Add(-2*time.Hour))
			return iss.sign(t, c, iss.key)
		}, "ExpiredTokenException"},
		{"untrusted issuer is rejected", testRoleARN, func() string {
			c := iss.claims(testSubject, now)
			c.Issuer = "https://evil.example.com"
			return iss.sign(t, c, iss.key)
		}, "InvalidIdentityToken"},
		{"signature by another key is rejected", testRoleARN, func() string {
			return iss.sign(t, iss.claims(testSubject, now), otherKey)
		}, "InvalidIdentityToken"},
		{"subject the role does not trust is denied", testRoleARN, func() string {
			return iss.sign(t, iss.claims("system:serviceaccount:apps:other", now), iss.key)
		}, "AccessDenied"},
		{"role not configured is denied", "arn:aws:iam::123456789012:role/someone-else", func() string {
			return iss.sign(t, iss.claims(testSubject, now), iss.key)
		}, "AccessDenied"},
		{"garbage token is rejected", testRoleARN, func() string { return "not-a-jwt" }, "InvalidIdentityToken"},
	}
	s := newTestSTS(t, iss, clk)
	client := stsClient(s, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := client.AssumeRoleWithWebIdentity(t.Context(), &sts.AssumeRoleWithWebIdentityInput{
				RoleArn:          aws.String(tc.role),
				RoleSessionName:  aws.String("webhook-session"),
				WebIdentityToken: aws.String(tc.token()),
				DurationSeconds:  aws.Int32(900),
			})
			if tc.wantCode != "" {
				if got := apiErrorCode(err); got != tc.wantCode {
					t.Fatalf("error code = %q (err %v), want %q", got, err, tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := aws.ToString(out.AssumedRoleUser.Arn), "arn:aws:sts::123456789012:assumed-role/artifactory-puller/webhook-session"; got != want {
				t.Errorf("assumed role ARN = %q, want %q", got, want)
			}
			if !strings.HasPrefix(aws.ToString(out.Credentials.AccessKeyId), "ASIA") || aws.ToString(out.Credentials.SessionToken) == "" {
				t.Errorf("credentials are not session credentials: key %q", aws.ToString(out.Credentials.AccessKeyId))
			}
			if got := out.Credentials.Expiration.Sub(now); got < 899*time.Second || got > 901*time.Second {
				t.Errorf("expiration is %s after now, want DurationSeconds=900", got)
			}
			if aws.ToString(out.SubjectFromWebIdentityToken) != testSubject {
				t.Errorf("subject = %q", aws.ToString(out.SubjectFromWebIdentityToken))
			}
		})
	}
}

func TestGetCallerIdentityAcceptsSigV4WithIssuedCredentials(t *testing.T) {
	clk := newClock()
	s := newTestSTS(t, newOIDCIssuer(t), clk)
	c := s.IssueCredentials(testRoleARN, "sdk-session", time.Hour)
	client := stsClient(s, awscreds.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken))
	out, err := client.GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.Arn) != c.AssumedRoleARN || aws.ToString(out.Account) != "123456789012" {
		t.Errorf("caller = %s in %s, want %s", aws.ToString(out.Arn), aws.ToString(out.Account), c.AssumedRoleARN)
	}
}

func TestGetCallerIdentityWithSigV4A(t *testing.T) {
	clk := newClock()
	s := newTestSTS(t, newOIDCIssuer(t), clk)
	c := s.IssueCredentials(testRoleARN, "sigv4a-session", time.Hour)
	expiring := s.IssueCredentials(testRoleARN, "short", 15*time.Minute)

	tests := []struct {
		name       string
		request    func() *http.Request
		before     func()
		wantStatus int
		wantCode   string
	}{
		{"signed for the global endpoint answers the assumed-role ARN", func() *http.Request {
			return signGetCallerIdentity(t, c, "sts.amazonaws.com", "*", clk.Now())
		}, nil, http.StatusOK, ""},
		{"signed for a China regional endpoint is accepted", func() *http.Request {
			return signGetCallerIdentity(t, c, "sts.cn-north-1.amazonaws.com.cn", "cn-north-1", clk.Now())
		}, nil, http.StatusOK, ""},
		{"tampered query fails the signature", func() *http.Request {
			r := signGetCallerIdentity(t, c, "sts.amazonaws.com", "*", clk.Now())
			r.URL.RawQuery = "Action=GetCallerIdentity&Version=2011-06-15&Extra=1"
			return r
		}, nil, http.StatusForbidden, "SignatureDoesNotMatch"},
		{"tampered region set fails the signature", func() *http.Request {
			r := signGetCallerIdentity(t, c, "sts.amazonaws.com", "*", clk.Now())
			r.Header.Set("X-Amz-Region-Set", "us-east-1")
			return r
		}, nil, http.StatusForbidden, "SignatureDoesNotMatch"},
		{"unknown access key is an invalid client token", func() *http.Request {
			forged := c
			forged.AccessKeyID = "ASIAUNKNOWNUNKNOWN00"
			return signGetCallerIdentity(t, forged, "sts.amazonaws.com", "*", clk.Now())
		}, nil, http.StatusForbidden, "InvalidClientTokenId"},
		{"wrong session token is an invalid client token", func() *http.Request {
			forged := c
			forged.SessionToken = "forged"
			return signGetCallerIdentity(t, forged, "sts.amazonaws.com", "*", clk.Now())
		}, nil, http.StatusForbidden, "InvalidClientTokenId"},
		{"signature older than five minutes is rejected", func() *http.Request {
			return signGetCallerIdentity(t, c, "sts.amazonaws.com", "*", clk.Now().Add(-6*time.Minute))
		}, nil, http.StatusForbidden, "SignatureDoesNotMatch"},
		{"expired session credentials are rejected", func() *http.Request {
			return signGetCallerIdentity(t, expiring, "sts.amazonaws.com", "*", clk.Now())
		}, func() { clk.Advance(20 * time.Minute) }, http.StatusForbidden, "ExpiredToken"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			resp := sendTo(t, tc.request(), s.URL())
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, tc.wantStatus, body)
			}
			if tc.wantCode != "" {
				var e struct {
					Code string `xml:"Error>Code"`
				}
				if err := xml.Unmarshal(body, &e); err != nil || e.Code != tc.wantCode {
					t.Fatalf("error code = %q, want %q; body %s", e.Code, tc.wantCode, body)
				}
				return
			}
			var ok getCallerIdentityResponse
			if err := xml.Unmarshal(body, &ok); err != nil || ok.Result.Arn != c.AssumedRoleARN {
				t.Fatalf("ARN = %q, want %q; body %s", ok.Result.Arn, c.AssumedRoleARN, body)
			}
		})
	}
}

func TestSTSFaultSwitches(t *testing.T) {
	clk := newClock()
	s := newTestSTS(t, newOIDCIssuer(t), clk)
	c := s.IssueCredentials(testRoleARN, "session", time.Hour)
	client := stsClient(s, awscreds.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken))

	s.SetDeny(true)
	if _, err := client.GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{}); apiErrorCode(err) != "AccessDenied" {
		t.Errorf("with deny on: err = %v, want AccessDenied", err)
	}
	s.SetDeny(false)

	s.SetClockSkew(10 * time.Minute)
	if _, err := client.GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{}); apiErrorCode(err) != "SignatureDoesNotMatch" {
		t.Errorf("with STS clock 10m ahead: err = %v, want SignatureDoesNotMatch", err)
	}
	s.SetClockSkew(0)

	if _, err := client.GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{}); err != nil {
		t.Errorf("after clearing faults: %v", err)
	}
}

// scopeCase is a GetCallerIdentity signed for host with alg, service and region (SigV4A: region
// set), and STS's answer: "" for the caller's identity, else the SignatureDoesNotMatch message.
type scopeCase struct {
	name                       string
	alg, host, service, region string
	wantMessage                string
}

var scopeCases = []scopeCase{
	{"sigv4a all regions at the global endpoint (the webhook's default)", awssig.AlgorithmSigV4A, "sts.amazonaws.com", "sts", "*", ""},
	{"sigv4a the endpoint's region (the webhook with aws.region)", awssig.AlgorithmSigV4A, "sts.eu-central-1.amazonaws.com", "sts", "eu-central-1", ""},
	{"sigv4a all regions at a regional endpoint", awssig.AlgorithmSigV4A, "sts.eu-central-1.amazonaws.com", "sts", "*", ""},
	{"sigv4a a China region at its endpoint", awssig.AlgorithmSigV4A, "sts.cn-north-1.amazonaws.com.cn", "sts", "cn-north-1", ""},
	{"sigv4 us-east-1 at the global endpoint", awssig.AlgorithmSigV4, "sts.amazonaws.com", "sts", "us-east-1", ""},
	{"sigv4 the endpoint's region", awssig.AlgorithmSigV4, "sts.eu-central-1.amazonaws.com", "sts", "eu-central-1", ""},

	{"sigv4a for iam", awssig.AlgorithmSigV4A, "sts.amazonaws.com", "iam", "*", "Credential should be scoped to correct service: 'sts'."},
	{"sigv4 for iam", awssig.AlgorithmSigV4, "sts.amazonaws.com", "iam", "us-east-1", "Credential should be scoped to correct service: 'sts'."},
	{"sigv4 for s3", awssig.AlgorithmSigV4, "sts.eu-central-1.amazonaws.com", "s3", "eu-central-1", "Credential should be scoped to correct service: 'sts'."},
	{"sigv4 us-west-2 at sts.eu-central-1", awssig.AlgorithmSigV4, "sts.eu-central-1.amazonaws.com", "sts", "us-west-2",
		"Credential should be scoped to a valid region, not 'us-west-2'."},
	{"sigv4 eu-central-1 at the global endpoint", awssig.AlgorithmSigV4, "sts.amazonaws.com", "sts", "eu-central-1",
		"Credential should be scoped to a valid region, not 'eu-central-1'."},
	{"sigv4a region set us-east-1 at sts.eu-central-1", awssig.AlgorithmSigV4A, "sts.eu-central-1.amazonaws.com", "sts", "us-east-1",
		"Credential should be scoped to a valid region, not 'us-east-1'."},
}

func TestGetCallerIdentityChecksCredentialScope(t *testing.T) {
	clk := newClock()
	s := newTestSTS(t, newOIDCIssuer(t), clk)
	c := s.IssueCredentials(testRoleARN, "scope", time.Hour)
	for _, tc := range scopeCases {
		t.Run(tc.name, func(t *testing.T) {
			resp := sendTo(t, signScoped(t, c, tc.alg, tc.host, tc.service, tc.region, clk.Now()), s.URL())
			body, _ := io.ReadAll(resp.Body)
			if tc.wantMessage == "" {
				var ok getCallerIdentityResponse
				if resp.StatusCode != http.StatusOK || xml.Unmarshal(body, &ok) != nil || ok.Result.Arn != c.AssumedRoleARN {
					t.Fatalf("got %d %s, want 200 naming %s", resp.StatusCode, body, c.AssumedRoleARN)
				}
				return
			}
			var e struct {
				Code    string `xml:"Error>Code"`
				Message string `xml:"Error>Message"`
			}
			if resp.StatusCode != http.StatusForbidden || xml.Unmarshal(body, &e) != nil ||
				e.Code != "SignatureDoesNotMatch" || e.Message != tc.wantMessage {
				t.Fatalf("got %d %s, want 403 SignatureDoesNotMatch %q", resp.StatusCode, body, tc.wantMessage)
			}
		})
	}
}
