package emulator

import (
	"crypto/sha256"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go/aws-http-auth/credentials"
	"github.com/aws/smithy-go/aws-http-auth/sigv4"
)

const (
	chainedRoleARN  = "arn:aws:iam::210987654321:role/artifactory-reader"
	chainedRoleName = "artifactory-reader"
	testExternalID  = "webhook-external-id"
)

func staticCreds(c Creds) aws.CredentialsProvider {
	return awscreds.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// credsOf turns what the SDK retrieved into Creds for the request signers of helpers_test.go.
func credsOf(c aws.Credentials) Creds {
	return Creds{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
}

// TestAssumeRoleChainsWithTheSDKProvider runs stscreds.NewAssumeRoleProvider, as the webhook's
// aws.assumeRole does, on credentials from AssumeRoleWithWebIdentity, and proves the chained
// credentials are the target role's: to STS's GetCallerIdentity and to Artifactory's exchange.
func TestAssumeRoleChainsWithTheSDKProvider(t *testing.T) {
	iss := newOIDCIssuer(t)
	clk := newClock()
	s := newTestSTS(t, iss, clk)
	s.SetAssumeTrust(chainedRoleARN, testExternalID, testRoleARN)

	web, err := stsClient(s, nil).AssumeRoleWithWebIdentity(t.Context(), &sts.AssumeRoleWithWebIdentityInput{
		RoleArn:          aws.String(testRoleARN),
		RoleSessionName:  aws.String("irsa"),
		WebIdentityToken: aws.String(iss.sign(t, iss.claims(testSubject, clk.Now()), iss.key)),
	})
	if err != nil {
		t.Fatal(err)
	}
	source := awscreds.NewStaticCredentialsProvider(aws.ToString(web.Credentials.AccessKeyId),
		aws.ToString(web.Credentials.SecretAccessKey), aws.ToString(web.Credentials.SessionToken))

	provider := stscreds.NewAssumeRoleProvider(stsClient(s, source), chainedRoleARN, func(o *stscreds.AssumeRoleOptions) {
		o.RoleSessionName = "chained-session"
		o.ExternalID = aws.String(testExternalID)
		o.Duration = 30 * time.Minute
	})
	chained, err := provider.Retrieve(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(chained.AccessKeyID, "ASIA") || chained.SessionToken == "" || !chained.CanExpire {
		t.Errorf("chained credentials are not session credentials: %+v", chained.AccessKeyID)
	}
	if got := chained.Expires.Sub(clk.Now()); got < 29*time.Minute || got > 31*time.Minute {
		t.Errorf("chained credentials expire %s from now, want the 30m asked for", got)
	}

	wantARN := "arn:aws:sts::210987654321:assumed-role/" + chainedRoleName + "/chained-session"
	out, err := stsClient(s, aws.NewCredentialsCache(provider)).GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.Arn) != wantARN || aws.ToString(out.Account) != "210987654321" ||
		aws.ToString(out.UserId) != roleID(chainedRoleARN)+":chained-session" {
		t.Errorf("chained caller = %s (%s) in %s, want %s", aws.ToString(out.Arn), aws.ToString(out.UserId), aws.ToString(out.Account), wantARN)
	}

	// Artifactory's exchange verifies the identity by replaying a signed GetCallerIdentity: with the
	// chained credentials it is the target role, so only the target role's mapping counts.
	art, err := NewArtifactory(ArtifactoryOptions{STS: s, Mappings: map[string]string{testRoleARN: "source-user"}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(art.Close)
	f := &exchangeFixture{clk: clk, sts: s, art: art}
	signed := func() *http.Request {
		return signGetCallerIdentity(t, credsOf(chained), "sts.amazonaws.com", "*", time.Now())
	}
	if status, body := f.exchange(t, TokenExchangePath, signed(), `{"expires_in": 600}`); status != http.StatusUnauthorized ||
		!strings.Contains(body, "no user is mapped to IAM role "+chainedRoleARN) {
		t.Fatalf("exchange with only the source role mapped: %d %s, want 401 naming %s", status, body, chainedRoleARN)
	}
	art.SetMapping(chainedRoleARN, "reader-user")
	if status, body := f.exchange(t, TokenExchangePath, signed(), `{"expires_in": 600}`); status != http.StatusOK ||
		!strings.Contains(body, `"username":"reader-user"`) {
		t.Fatalf("exchange with the target role mapped: %d %s, want a token for reader-user", status, body)
	}
}

func TestAssumeRole(t *testing.T) {
	clk := newClock()
	s := newTestSTS(t, newOIDCIssuer(t), clk)
	const (
		noExternalIDRole = "arn:aws:iam::123456789012:role/open-reader"
		untrustingRole   = "arn:aws:iam::123456789012:role/trusts-someone-else"
		removedRole      = "arn:aws:iam::123456789012:role/removed"
		otherSourceRole  = "arn:aws:iam::123456789012:role/other-source"
		pathRole         = "arn:aws:iam::123456789012:role/service-role/with-path"
	)
	s.SetAssumeTrust(pathRole, "", testRoleARN)
	s.SetAssumeTrust(chainedRoleARN, testExternalID, testRoleARN)
	s.SetAssumeTrust(noExternalIDRole, "", testRoleARN, otherSourceRole)
	s.SetAssumeTrust(untrustingRole, "", otherSourceRole)
	s.SetAssumeTrust(removedRole, "", testRoleARN)
	s.SetAssumeTrust(removedRole, "")

	source := s.IssueCredentials(testRoleARN, "webhook", time.Hour)
	untrusted := s.IssueCredentials("arn:aws:iam::123456789012:role/stranger", "webhook", time.Hour)
	// Issued 20 minutes ago for 15: expired, though the SDK signs with the real (current) time.
	clk.Advance(-20 * time.Minute)
	expired := s.IssueCredentials(testRoleARN, "old", 15*time.Minute)
	clk.Advance(20 * time.Minute)

	forgedKey := source
	forgedKey.AccessKeyID = "ASIAUNKNOWNUNKNOWN00"
	wrongSecret := source
	wrongSecret.SecretAccessKey = randomBase64(30)
	wrongToken := source
	wrongToken.SessionToken = "forged"

	deniedMessage := func(caller Creds, target string) string {
		return "User: " + caller.AssumedRoleARN + " is not authorized to perform: sts:AssumeRole on resource: " + target
	}
	tests := []struct {
		name       string
		creds      aws.CredentialsProvider
		in         sts.AssumeRoleInput
		wantStatus int
		wantCode   string
		wantMsg    string
		wantTTL    time.Duration
	}{
		{"trusted source with the external ID gets the target role", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained"),
				ExternalId: aws.String(testExternalID), DurationSeconds: aws.Int32(900)},
			http.StatusOK, "", "", 15 * time.Minute},
		{"no DurationSeconds is an hour", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained"), ExternalId: aws.String(testExternalID)},
			http.StatusOK, "", "", time.Hour},
		{"an hour is the chaining maximum", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained"),
				ExternalId: aws.String(testExternalID), DurationSeconds: aws.Int32(3600)},
			http.StatusOK, "", "", time.Hour},
		{"an external ID the trust policy does not ask for is no obstacle", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(noExternalIDRole), RoleSessionName: aws.String("s@x.y=z,w+v-1"), ExternalId: aws.String("anything")},
			http.StatusOK, "", "", time.Hour},
		{"a role with a path", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(pathRole), RoleSessionName: aws.String("chained")},
			http.StatusOK, "", "", time.Hour},
		{"one of several trusted sources", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(noExternalIDRole), RoleSessionName: aws.String("chained")},
			http.StatusOK, "", "", time.Hour},

		{"untrusted source is denied", staticCreds(untrusted),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained"), ExternalId: aws.String(testExternalID)},
			http.StatusForbidden, "AccessDenied", deniedMessage(untrusted, chainedRoleARN), 0},
		{"a role trusting other sources only is denied", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(untrustingRole), RoleSessionName: aws.String("chained")},
			http.StatusForbidden, "AccessDenied", deniedMessage(source, untrustingRole), 0},
		{"a role whose trust was removed is denied", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(removedRole), RoleSessionName: aws.String("chained")},
			http.StatusForbidden, "AccessDenied", deniedMessage(source, removedRole), 0},
		{"a role with no trust policy is denied", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::123456789012:role/nobody"), RoleSessionName: aws.String("chained")},
			http.StatusForbidden, "AccessDenied", deniedMessage(source, "arn:aws:iam::123456789012:role/nobody"), 0},
		{"a role cannot assume itself unless trusted to", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(testRoleARN), RoleSessionName: aws.String("chained")},
			http.StatusForbidden, "AccessDenied", deniedMessage(source, testRoleARN), 0},
		{"wrong external ID is denied", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained"), ExternalId: aws.String("wrong-id")},
			http.StatusForbidden, "AccessDenied", deniedMessage(source, chainedRoleARN), 0},
		{"missing external ID is denied", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained")},
			http.StatusForbidden, "AccessDenied", deniedMessage(source, chainedRoleARN), 0},

		{"expired source credentials", staticCreds(expired),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained"), ExternalId: aws.String(testExternalID)},
			http.StatusForbidden, "ExpiredToken", "The security token included in the request is expired", 0},
		{"unknown access key", staticCreds(forgedKey),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained"), ExternalId: aws.String(testExternalID)},
			http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.", 0},
		{"wrong session token", staticCreds(wrongToken),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained"), ExternalId: aws.String(testExternalID)},
			http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.", 0},
		{"signature by the wrong secret", staticCreds(wrongSecret),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained"), ExternalId: aws.String(testExternalID)},
			http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match", 0},
		{"unsigned request", nil,
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained"), ExternalId: aws.String(testExternalID)},
			http.StatusForbidden, "MissingAuthenticationToken", "Request is missing Authentication Token", 0},

		{"more than an hour is refused for a chained role", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained"),
				ExternalId: aws.String(testExternalID), DurationSeconds: aws.Int32(3601)},
			http.StatusBadRequest, "ValidationError", "exceeds the 1 hour session limit for roles assumed by role chaining", 0},
		{"under 900 seconds is refused", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained"),
				ExternalId: aws.String(testExternalID), DurationSeconds: aws.Int32(899)},
			http.StatusBadRequest, "ValidationError", "Value '899' at 'durationSeconds'", 0},
		{"a one-character session name is refused", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("a"), ExternalId: aws.String(testExternalID)},
			http.StatusBadRequest, "ValidationError", "greater than or equal to 2", 0},
		{"a 65-character session name is refused", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String(strings.Repeat("s", 65)), ExternalId: aws.String(testExternalID)},
			http.StatusBadRequest, "ValidationError", "less than or equal to 64", 0},
		{"a session name with a space is refused", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("bad name"), ExternalId: aws.String(testExternalID)},
			http.StatusBadRequest, "ValidationError", "regular expression pattern", 0},
		{"a role ARN that is not one is refused", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::123456789012:user/someone"), RoleSessionName: aws.String("chained")},
			http.StatusBadRequest, "ValidationError", "is invalid", 0},
		{"a session policy is refused, not ignored", staticCreds(source),
			sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained"),
				ExternalId: aws.String(testExternalID), Policy: aws.String(`{"Version":"2012-10-17","Statement":[]}`)},
			http.StatusBadRequest, "ValidationError", "does not support the AssumeRole parameter Policy", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := stsClient(s, tc.creds).AssumeRole(t.Context(), &tc.in)
			if tc.wantCode != "" {
				if got := apiErrorCode(err); got != tc.wantCode || httpStatus(err) != tc.wantStatus || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("err = %v (code %q, status %d), want %d %s containing %q", err, got, httpStatus(err), tc.wantStatus, tc.wantCode, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := roleARNRE.FindStringSubmatch(aws.ToString(tc.in.RoleArn))
			session := aws.ToString(tc.in.RoleSessionName)
			if got, want := aws.ToString(out.AssumedRoleUser.Arn), "arn:aws:sts::"+m[2]+":assumed-role/"+m[3]+"/"+session; got != want {
				t.Errorf("assumed role ARN = %q, want %q", got, want)
			}
			if got, want := aws.ToString(out.AssumedRoleUser.AssumedRoleId), roleID(aws.ToString(tc.in.RoleArn))+":"+session; got != want {
				t.Errorf("assumed role id = %q, want %q", got, want)
			}
			if got := out.Credentials.Expiration.Sub(clk.Now()); got < tc.wantTTL-time.Second || got > tc.wantTTL+time.Second {
				t.Errorf("expiration is %s after now, want %s", got, tc.wantTTL)
			}
			chained := Creds{AccessKeyID: aws.ToString(out.Credentials.AccessKeyId), SecretAccessKey: aws.ToString(out.Credentials.SecretAccessKey),
				SessionToken: aws.ToString(out.Credentials.SessionToken)}
			who, err := stsClient(s, staticCreds(chained)).GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
			if err != nil {
				t.Fatal(err)
			}
			if aws.ToString(who.Arn) != aws.ToString(out.AssumedRoleUser.Arn) || aws.ToString(who.Account) != m[2] {
				t.Errorf("GetCallerIdentity with the chained credentials = %s in %s, want %s", aws.ToString(who.Arn), aws.ToString(who.Account), aws.ToString(out.AssumedRoleUser.Arn))
			}
		})
	}
}

// TestAssumeRoleChainsFurther: a chained session is itself a role session, trusted as its role.
func TestAssumeRoleChainsFurther(t *testing.T) {
	clk := newClock()
	s := newTestSTS(t, newOIDCIssuer(t), clk)
	const third = "arn:aws:iam::333333333333:role/third"
	s.SetAssumeTrust(chainedRoleARN, "", testRoleARN)
	s.SetAssumeTrust(third, "", chainedRoleARN)

	first := stscreds.NewAssumeRoleProvider(stsClient(s, staticCreds(s.IssueCredentials(testRoleARN, "one", time.Hour))), chainedRoleARN,
		func(o *stscreds.AssumeRoleOptions) { o.RoleSessionName = "two" })
	second := stscreds.NewAssumeRoleProvider(stsClient(s, aws.NewCredentialsCache(first)), third,
		func(o *stscreds.AssumeRoleOptions) { o.RoleSessionName = "three" })
	out, err := stsClient(s, aws.NewCredentialsCache(second)).GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := aws.ToString(out.Arn), "arn:aws:sts::333333333333:assumed-role/third/three"; got != want {
		t.Errorf("caller = %s, want %s", got, want)
	}

	// The source role's session is not trusted by the third role directly.
	_, err = stsClient(s, staticCreds(s.IssueCredentials(testRoleARN, "one", time.Hour))).AssumeRole(t.Context(),
		&sts.AssumeRoleInput{RoleArn: aws.String(third), RoleSessionName: aws.String("skip")})
	if apiErrorCode(err) != "AccessDenied" {
		t.Errorf("skipping a link of the chain: err = %v, want AccessDenied", err)
	}

	// The chained sessions are reported with the others.
	var chained int
	for _, c := range s.IssuedCredentials() {
		if c.RoleARN == chainedRoleARN || c.RoleARN == third {
			chained++
		}
	}
	if chained != 2 {
		t.Errorf("IssuedCredentials holds %d chained sessions, want 2", chained)
	}
}

// TestAssumeRoleSignatureScopeAndRawParameters covers what the SDK will not send: a scope for
// another region than the endpoint's, and requests missing required parameters or asking for an
// unsupported one (signed by hand).
func TestAssumeRoleSignatureScopeAndRawParameters(t *testing.T) {
	clk := newClock()
	s := newTestSTS(t, newOIDCIssuer(t), clk)
	s.SetAssumeTrust(chainedRoleARN, "", testRoleARN)
	source := s.IssueCredentials(testRoleARN, "webhook", time.Hour)

	regional := sts.New(sts.Options{Region: "eu-west-1", BaseEndpoint: aws.String(s.URL()), Credentials: staticCreds(source), RetryMaxAttempts: 1})
	_, err := regional.AssumeRole(t.Context(), &sts.AssumeRoleInput{RoleArn: aws.String(chainedRoleARN), RoleSessionName: aws.String("chained")})
	if apiErrorCode(err) != "SignatureDoesNotMatch" || !strings.Contains(err.Error(), "Credential should be scoped to a valid region, not 'eu-west-1'.") {
		t.Errorf("signed for eu-west-1 at the us-east-1 endpoint: err = %v, want SignatureDoesNotMatch on the region", err)
	}

	tests := []struct {
		name, body string
		wantStatus int
		wantCode   string
		wantMsg    string
	}{
		{"signed by hand", "Action=AssumeRole&Version=2011-06-15&RoleArn=" + url.QueryEscape(chainedRoleARN) + "&RoleSessionName=raw",
			http.StatusOK, "", ""},
		{"no RoleSessionName", "Action=AssumeRole&Version=2011-06-15&RoleArn=" + url.QueryEscape(chainedRoleARN),
			http.StatusBadRequest, "ValidationError", "Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null"},
		{"no RoleArn", "Action=AssumeRole&Version=2011-06-15&RoleSessionName=raw",
			http.StatusBadRequest, "ValidationError", "Value null at 'roleArn' failed to satisfy constraint: Member must not be null"},
		{"DurationSeconds not a number", "Action=AssumeRole&Version=2011-06-15&RoleArn=" + url.QueryEscape(chainedRoleARN) + "&RoleSessionName=raw&DurationSeconds=1h",
			http.StatusBadRequest, "ValidationError", "DurationSeconds"},
		{"a one-character ExternalId", "Action=AssumeRole&Version=2011-06-15&RoleArn=" + url.QueryEscape(chainedRoleARN) + "&RoleSessionName=raw&ExternalId=x",
			http.StatusBadRequest, "ValidationError", "at 'externalId'"},
		{"session tags", "Action=AssumeRole&Version=2011-06-15&RoleArn=" + url.QueryEscape(chainedRoleARN) + "&RoleSessionName=raw&Tags.member.1.Key=k&Tags.member.1.Value=v",
			http.StatusBadRequest, "ValidationError", "does not support the AssumeRole parameter Tags.member.1."},
		{"an MFA token code", "Action=AssumeRole&Version=2011-06-15&RoleArn=" + url.QueryEscape(chainedRoleARN) + "&RoleSessionName=raw&SerialNumber=arn:aws:iam::123456789012:mfa/u&TokenCode=123456",
			http.StatusBadRequest, "ValidationError", "does not support the AssumeRole parameter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, "https://sts.amazonaws.com/", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			hash := sha256.Sum256([]byte(tc.body))
			if err := sigv4.New().SignRequest(&sigv4.SignRequestInput{
				Request: req, PayloadHash: hash[:], Service: "sts", Region: "us-east-1", Time: time.Now(),
				Credentials: credentials.Credentials{AccessKeyID: source.AccessKeyID, SecretAccessKey: source.SecretAccessKey, SessionToken: source.SessionToken},
			}); err != nil {
				t.Fatal(err)
			}
			req.Body = io.NopCloser(strings.NewReader(tc.body))
			resp := sendTo(t, req, s.URL())
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, tc.wantStatus, body)
			}
			if tc.wantCode == "" {
				var ok assumeRoleResponse
				if err := xml.Unmarshal(body, &ok); err != nil || ok.Result.AssumedRoleUser.Arn != "arn:aws:sts::210987654321:assumed-role/artifactory-reader/raw" ||
					ok.Result.Credentials.AccessKeyID == "" {
					t.Fatalf("answer %s", body)
				}
				return
			}
			var e struct {
				Code    string `xml:"Error>Code"`
				Message string `xml:"Error>Message"`
			}
			if err := xml.Unmarshal(body, &e); err != nil || e.Code != tc.wantCode || !strings.Contains(e.Message, tc.wantMsg) {
				t.Fatalf("error %s, want %s containing %q", body, tc.wantCode, tc.wantMsg)
			}
		})
	}
}
