package awssig_test

import (
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/smithy-go/aws-http-auth/credentials"
	"github.com/aws/smithy-go/aws-http-auth/sigv4"
	"github.com/aws/smithy-go/aws-http-auth/sigv4a"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/awssig"
)

const (
	akid    = "ASIAEXAMPLEKEY123456"
	secret  = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	session = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN"
	stsURL  = "https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
)

var signedAt = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// global is what the global STS endpoint, sts.amazonaws.com, expects.
var global = awssig.Expect{Service: "sts", Region: "us-east-1"}

func secrets(id string) (string, string, bool) {
	if id != akid {
		return "", "", false
	}
	return secret, session, true
}

func creds() credentials.Credentials {
	return credentials.Credentials{AccessKeyID: akid, SecretAccessKey: secret, SessionToken: session}
}

func sha(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func newRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func signV4A(t *testing.T, r *http.Request, body []byte, c credentials.Credentials, regionSet string) {
	t.Helper()
	err := sigv4a.New().SignRequest(&sigv4a.SignRequestInput{
		Request: r, PayloadHash: sha(body), Credentials: c,
		Service: "sts", RegionSet: []string{regionSet}, Time: signedAt,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func signV4(t *testing.T, r *http.Request, body []byte, c credentials.Credentials, region string) {
	t.Helper()
	err := sigv4.New().SignRequest(&sigv4.SignRequestInput{
		Request: r, PayloadHash: sha(body), Credentials: c,
		Service: "sts", Region: region, Time: signedAt,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestVerifyAcceptsRequestsSignedBySmithySigners(t *testing.T) {
	body := []byte("Action=GetCallerIdentity&Version=2011-06-15")
	tests := []struct {
		name   string
		method string
		url    string
		body   []byte
		sign   func(*testing.T, *http.Request, []byte)
		expect awssig.Expect
	}{
		{"sigv4a global", "GET", stsURL, nil, func(t *testing.T, r *http.Request, b []byte) { signV4A(t, r, b, creds(), "*") }, global},
		{"sigv4a regional", "GET", "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15", nil,
			func(t *testing.T, r *http.Request, b []byte) { signV4A(t, r, b, creds(), "eu-west-1") }, awssig.Expect{Service: "sts", Region: "eu-west-1"}},
		{"sigv4a post with body", "POST", "https://sts.amazonaws.com/", body, func(t *testing.T, r *http.Request, b []byte) { signV4A(t, r, b, creds(), "*") }, global},
		{"sigv4a odd path and query", "GET", "https://example.com/a%20b/c~d?z=1&a=x%2Fy&a=x-y&sp=a%20b", nil,
			func(t *testing.T, r *http.Request, b []byte) { signV4A(t, r, b, creds(), "*") }, global},
		{"sigv4 regional", "GET", "https://sts.us-gov-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15", nil,
			func(t *testing.T, r *http.Request, b []byte) { signV4(t, r, b, creds(), "us-gov-west-1") }, awssig.Expect{Service: "sts", Region: "us-gov-west-1"}},
		{"sigv4 post with body", "POST", "https://sts.us-east-1.amazonaws.com/", body, func(t *testing.T, r *http.Request, b []byte) { signV4(t, r, b, creds(), "us-east-1") }, global},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRequest(t, tt.method, tt.url)
			tt.sign(t, r, tt.body)
			got, err := awssig.Verify(r, tt.body, tt.expect, secrets, signedAt.Add(time.Minute), 5*time.Minute)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got != akid {
				t.Fatalf("access key = %q, want %q", got, akid)
			}
		})
	}
}

func TestVerifyRejectsTamperedOrInvalidRequests(t *testing.T) {
	for _, alg := range []string{"sigv4a", "sigv4"} {
		sign := func(t *testing.T, r *http.Request, body []byte, c credentials.Credentials) {
			if alg == "sigv4a" {
				signV4A(t, r, body, c, "*")
			} else {
				signV4(t, r, body, c, "us-east-1")
			}
		}
		tests := []struct {
			name    string
			creds   credentials.Credentials
			tamper  func(r *http.Request) []byte // returns the body to verify
			now     time.Time
			secrets awssig.Secrets
			wantErr string
		}{
			{name: "host", tamper: func(r *http.Request) []byte { r.Host = "sts.evil.example"; return nil }, wantErr: "signature does not match"},
			{name: "query", tamper: func(r *http.Request) []byte { r.URL.RawQuery += "&Extra=1"; return nil }, wantErr: "signature does not match"},
			{name: "path", tamper: func(r *http.Request) []byte { r.URL.Path = "/other"; return nil }, wantErr: "signature does not match"},
			{name: "method", tamper: func(r *http.Request) []byte { r.Method = "POST"; return nil }, wantErr: "signature does not match"},
			{name: "signed header", tamper: func(r *http.Request) []byte {
				r.Header.Set("X-Amz-Date", signedAt.Add(time.Second).Format("20060102T150405Z"))
				return nil
			}, wantErr: "signature does not match"},
			{name: "date outside scope day", tamper: func(r *http.Request) []byte {
				r.Header.Set("X-Amz-Date", signedAt.Add(-24*time.Hour).Format("20060102T150405Z"))
				return nil
			}, now: signedAt.Add(-24 * time.Hour), wantErr: "does not match X-Amz-Date"},
			{name: "body", tamper: func(r *http.Request) []byte { return []byte("x") }, wantErr: "signature does not match"},
			{name: "wrong secret", creds: credentials.Credentials{AccessKeyID: akid, SecretAccessKey: "not-the-secret", SessionToken: session},
				wantErr: "signature does not match"},
			{name: "unknown key", creds: credentials.Credentials{AccessKeyID: "AKIDUNKNOWN", SecretAccessKey: secret, SessionToken: session},
				wantErr: "unknown"},
			{name: "stale date", now: signedAt.Add(16 * time.Minute), wantErr: "away from now"},
			{name: "future date", now: signedAt.Add(-16 * time.Minute), wantErr: "away from now"},
			{name: "missing session token", creds: credentials.Credentials{AccessKeyID: akid, SecretAccessKey: secret},
				wantErr: "X-Amz-Security-Token is missing"},
			{name: "mismatched session token", creds: credentials.Credentials{AccessKeyID: akid, SecretAccessKey: secret, SessionToken: "other"},
				wantErr: "does not match the session token"},
			{name: "unexpected session token", secrets: func(string) (string, string, bool) { return secret, "", true },
				wantErr: "has no session token"},
			{name: "no authorization", tamper: func(r *http.Request) []byte { r.Header.Del("Authorization"); return nil },
				wantErr: "authorization header is missing"},
			{name: "signature garbage", tamper: func(r *http.Request) []byte {
				a := r.Header.Get("Authorization")
				r.Header.Set("Authorization", a[:len(a)-4]+"abcd")
				return nil
			}, wantErr: "signature does not match"},
		}
		for _, tt := range tests {
			t.Run(alg+"/"+tt.name, func(t *testing.T) {
				c := tt.creds
				if c.AccessKeyID == "" {
					c = creds()
				}
				r := newRequest(t, "GET", stsURL)
				sign(t, r, nil, c)
				var body []byte
				if tt.tamper != nil {
					body = tt.tamper(r)
				}
				now := tt.now
				if now.IsZero() {
					now = signedAt
				}
				s := tt.secrets
				if s == nil {
					s = secrets
				}
				_, err := awssig.Verify(r, body, global, s, now, 15*time.Minute)
				if err == nil {
					t.Fatal("Verify accepted a request it must reject")
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %q does not contain %q", err, tt.wantErr)
				}
			})
		}
	}
}

func TestVerifyRequiresRegionSetSignedForSigV4A(t *testing.T) {
	r := newRequest(t, "GET", stsURL)
	signV4A(t, r, nil, creds(), "*")
	r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), ";x-amz-region-set", "", 1))
	_, err := awssig.Verify(r, nil, global, secrets, signedAt, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "x-amz-region-set is not signed") {
		t.Fatalf("err = %v, want region set not signed", err)
	}
}

func TestVerifyRejectsChangedRegionSet(t *testing.T) {
	r := newRequest(t, "GET", stsURL)
	signV4A(t, r, nil, creds(), "us-east-1")
	r.Header.Set("X-Amz-Region-Set", "*")
	if _, err := awssig.Verify(r, nil, global, secrets, signedAt, time.Minute); err == nil {
		t.Fatal("Verify accepted a widened region set")
	}
}

// signScoped signs GET host/?Action=GetCallerIdentity for service, with
// SigV4A and the region set regions or SigV4 and the region regions[0].
func signScoped(t *testing.T, alg, host, service string, regions ...string) *http.Request {
	t.Helper()
	r := newRequest(t, "GET", "https://"+host+"/?Action=GetCallerIdentity&Version=2011-06-15")
	var err error
	if alg == awssig.AlgorithmSigV4A {
		err = sigv4a.New().SignRequest(&sigv4a.SignRequestInput{
			Request: r, PayloadHash: sha(nil), Credentials: creds(),
			Service: service, RegionSet: regions, Time: signedAt,
		})
	} else {
		err = sigv4.New().SignRequest(&sigv4.SignRequestInput{
			Request: r, PayloadHash: sha(nil), Credentials: creds(),
			Service: service, Region: regions[0], Time: signedAt,
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestVerifyChecksCredentialScope(t *testing.T) {
	const (
		v4  = awssig.AlgorithmSigV4
		v4a = awssig.AlgorithmSigV4A
	)
	euCentral := awssig.Expect{Service: "sts", Region: "eu-central-1"}
	tests := []struct {
		name    string
		alg     string
		host    string
		service string
		regions []string
		expect  awssig.Expect
		wantErr string // empty: accepted
	}{
		{"sigv4a all regions at the global endpoint", v4a, "sts.amazonaws.com", "sts", []string{"*"}, global, ""},
		{"sigv4a all regions at a regional endpoint", v4a, "sts.eu-central-1.amazonaws.com", "sts", []string{"*"}, euCentral, ""},
		{"sigv4a the endpoint's region", v4a, "sts.eu-central-1.amazonaws.com", "sts", []string{"eu-central-1"}, euCentral, ""},
		{"sigv4a a set naming the endpoint's region", v4a, "sts.eu-central-1.amazonaws.com", "sts", []string{"us-east-1", "eu-central-1"}, euCentral, ""},
		{"sigv4a a wildcard covering the endpoint's region", v4a, "sts.eu-central-1.amazonaws.com", "sts", []string{"eu-*"}, euCentral, ""},
		{"sigv4 us-east-1 at the global endpoint", v4, "sts.amazonaws.com", "sts", []string{"us-east-1"}, global, ""},
		{"sigv4 the endpoint's region", v4, "sts.eu-central-1.amazonaws.com", "sts", []string{"eu-central-1"}, euCentral, ""},

		{"sigv4a for iam", v4a, "sts.amazonaws.com", "iam", []string{"*"}, global, "Credential should be scoped to correct service: 'sts'."},
		{"sigv4 for iam", v4, "sts.amazonaws.com", "iam", []string{"us-east-1"}, global, "Credential should be scoped to correct service: 'sts'."},
		{"sigv4 for s3", v4, "sts.eu-central-1.amazonaws.com", "s3", []string{"eu-central-1"}, euCentral, "Credential should be scoped to correct service: 'sts'."},
		{"sigv4 us-west-2 at eu-central-1", v4, "sts.eu-central-1.amazonaws.com", "sts", []string{"us-west-2"}, euCentral,
			"Credential should be scoped to a valid region, not 'us-west-2'."},
		{"sigv4 eu-west-1 at the global endpoint", v4, "sts.amazonaws.com", "sts", []string{"eu-west-1"}, global,
			"Credential should be scoped to a valid region, not 'eu-west-1'."},
		{"sigv4a region set us-east-1 at eu-central-1", v4a, "sts.eu-central-1.amazonaws.com", "sts", []string{"us-east-1"}, euCentral,
			"Credential should be scoped to a valid region, not 'us-east-1'."},
		{"sigv4a a wildcard missing the endpoint's region", v4a, "sts.eu-central-1.amazonaws.com", "sts", []string{"us-*"}, euCentral,
			"Credential should be scoped to a valid region, not 'us-*'."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := signScoped(t, tt.alg, tt.host, tt.service, tt.regions...)
			_, err := awssig.Verify(r, nil, tt.expect, secrets, signedAt, time.Minute)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			var se *awssig.ScopeError
			if !errors.As(err, &se) || se.Message != tt.wantErr {
				t.Fatalf("Verify = %v, want ScopeError %q", err, tt.wantErr)
			}
		})
	}
}
