package credentials

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// awsEnv is every variable AWSCredentials or the default chain may read;
// each test starts from all of them unset.
var awsEnv = []string{
	envRoleARN, envWebIdentityFile, envRoleSessionName, envContainerURI, envContainerTokenFile,
	"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
}

func clearAWSEnv(t *testing.T) {
	t.Helper()
	for _, k := range awsEnv {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	// Keep the default chain away from the host's files and IMDS.
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAWSCredentialsExplicitAuthTypeNamesMissingVariable(t *testing.T) {
	tests := []struct {
		name     string
		authType AuthType
		env      map[string]string
		wantErr  string
	}{
		{"webIdentity without role", AuthWebIdentity, map[string]string{envWebIdentityFile: "/t"},
			"authType webIdentity: AWS_ROLE_ARN is not set"},
		{"webIdentity without token file", AuthWebIdentity, map[string]string{envRoleARN: "arn:aws:iam::1:role/r"},
			"authType webIdentity: AWS_WEB_IDENTITY_TOKEN_FILE is not set"},
		{"webIdentity ignores pod identity env", AuthWebIdentity, map[string]string{envContainerURI: "http://127.0.0.1/", envContainerTokenFile: "/t"},
			"authType webIdentity: AWS_ROLE_ARN is not set"},
		{"podIdentity without uri", AuthPodIdentity, map[string]string{envContainerTokenFile: "/t"},
			"authType podIdentity: AWS_CONTAINER_CREDENTIALS_FULL_URI is not set"},
		{"podIdentity without token file", AuthPodIdentity, map[string]string{envContainerURI: "http://127.0.0.1/"},
			"authType podIdentity: AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE is not set"},
		{"podIdentity over clear http to a remote host", AuthPodIdentity,
			map[string]string{envContainerURI: "http://10.1.2.3/creds", envContainerTokenFile: "/t"},
			"plain http is allowed only to loopback"},
		{"unknown auth type", "irsa", nil, `unknown authType "irsa"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearAWSEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := AWSCredentials(context.Background(), AWSOptions{AuthType: tt.authType})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// fakeAWS serves a Pod Identity agent and an STS AssumeRoleWithWebIdentity,
// each answering with its own access key id, and records what it was sent.
type fakeAWS struct {
	agent, sts *httptest.Server

	mu          sync.Mutex
	agentAuth   []string
	stsRequests []map[string]string
}

func newFakeAWS(t *testing.T) *fakeAWS {
	f := &fakeAWS{}
	f.agent = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.agentAuth = append(f.agentAuth, r.Header.Get("Authorization"))
		f.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]string{
			"AccessKeyId": "ASIAPODIDENTITY", "SecretAccessKey": "pod-secret", "Token": "pod-session",
			"Expiration": "2099-01-01T00:00:00Z",
		})
	}))
	f.sts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got := map[string]string{}
		for k := range r.PostForm {
			got[k] = r.PostForm.Get(k)
		}
		f.mu.Lock()
		f.stsRequests = append(f.stsRequests, got)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprint(w, `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>ASIAWEBIDENTITY</AccessKeyId>
      <SecretAccessKey>irsa-secret</SecretAccessKey>
      <SessionToken>irsa-session</SessionToken>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/puller/s</Arn>
      <AssumedRoleId>AROAEXAMPLE:s</AssumedRoleId>
    </AssumedRoleUser>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>`)
	}))
	t.Cleanup(f.agent.Close)
	t.Cleanup(f.sts.Close)
	return f
}

func (f *fakeAWS) seen() (agentAuth []string, stsRequests []map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.agentAuth...), append([]map[string]string(nil), f.stsRequests...)
}

func TestAWSCredentialsSelectsSource(t *testing.T) {
	const (
		pod    = "ASIAPODIDENTITY"
		irsa   = "ASIAWEBIDENTITY"
		static = "AKIASTATICENV"
	)
	tests := []struct {
		name            string
		authType        AuthType
		podEnv, irsaEnv bool
		want            string
	}{
		{"auto prefers pod identity", AuthAuto, true, true, pod},
		{"auto falls back to web identity", AuthAuto, false, true, irsa},
		{"auto falls back to the default chain", AuthAuto, false, false, static},
		{"empty auth type is auto", "", false, true, irsa},
		{"webIdentity forced over pod identity", AuthWebIdentity, true, true, irsa},
		{"podIdentity forced", AuthPodIdentity, true, true, pod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearAWSEnv(t)
			f := newFakeAWS(t)
			t.Setenv("AWS_ACCESS_KEY_ID", static)
			t.Setenv("AWS_SECRET_ACCESS_KEY", "static-secret")
			if tt.podEnv {
				t.Setenv(envContainerURI, f.agent.URL+"/v1/credentials")
				t.Setenv(envContainerTokenFile, writeFile(t, "pod-token"))
			}
			if tt.irsaEnv {
				t.Setenv(envRoleARN, "arn:aws:iam::123456789012:role/puller")
				t.Setenv(envWebIdentityFile, writeFile(t, "sa-jwt"))
			}
			p, err := AWSCredentials(context.Background(), AWSOptions{AuthType: tt.authType, STSEndpoint: f.sts.URL})
			if err != nil {
				t.Fatal(err)
			}
			creds, err := p.Retrieve(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if creds.AccessKeyID != tt.want {
				t.Fatalf("access key = %s, want %s", creds.AccessKeyID, tt.want)
			}
		})
	}
}

func TestAWSCredentialsWebIdentitySendsRoleTokenAndSessionName(t *testing.T) {
	clearAWSEnv(t)
	f := newFakeAWS(t)
	t.Setenv(envRoleARN, "arn:aws:iam::123456789012:role/puller")
	t.Setenv(envWebIdentityFile, writeFile(t, "sa-jwt"))
	t.Setenv(envRoleSessionName, "my-session")
	p, err := AWSCredentials(context.Background(), AWSOptions{AuthType: AuthWebIdentity, STSEndpoint: f.sts.URL, Region: "eu-west-1"})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := p.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if creds.SessionToken != "irsa-session" {
		t.Fatalf("session token not taken from STS response")
	}
	_, reqs := f.seen()
	if len(reqs) != 1 {
		t.Fatalf("%d STS requests, want 1", len(reqs))
	}
	got := reqs[0]
	want := map[string]string{
		"Action": "AssumeRoleWithWebIdentity", "RoleArn": "arn:aws:iam::123456789012:role/puller",
		"WebIdentityToken": "sa-jwt", "RoleSessionName": "my-session",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("STS %s = %q, want %q", k, got[k], v)
		}
	}
}

func TestAWSCredentialsPodIdentityRereadsRotatedTokenFile(t *testing.T) {
	clearAWSEnv(t)
	f := newFakeAWS(t)
	tokenFile := writeFile(t, "token-one\n")
	t.Setenv(envContainerURI, f.agent.URL+"/v1/credentials")
	t.Setenv(envContainerTokenFile, tokenFile)
	p, err := AWSCredentials(context.Background(), AWSOptions{AuthType: AuthPodIdentity})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Retrieve(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("token-two"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.(*aws.CredentialsCache).Invalidate()
	if _, err := p.Retrieve(context.Background()); err != nil {
		t.Fatal(err)
	}
	auth, _ := f.seen()
	if want := []string{"token-one", "token-two"}; strings.Join(auth, ",") != strings.Join(want, ",") {
		t.Fatalf("agent saw Authorization %q, want %q", auth, want)
	}
}
