package credentials

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// awsEnv is every variable AWSCredentials or the default chain may read;
// each test starts from all of them unset.
var awsEnv = []string{
	envRoleARN, envWebIdentityFile, envRoleSessionName, envContainerURI, envContainerTokenFile,
	"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", envAWSRegion, envDefaultRegion,
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN", envKubernetesHost,
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
		{"unknown auth type", "irsa", nil, `unknown authType "irsa" (want auto, webIdentity, podIdentity or default)`},
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
		{"default uses the SDK's chain", AuthDefault, false, false, static},
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

// staticEnvKeys are what the SDK's default chain would find first: with them
// set, a fallback to that chain would succeed, so only an explicit refusal
// makes auto fail.
func setStaticEnvKeys(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIASTATICENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "static-secret")
}

func TestAWSCredentialsAutoWithoutIRSAOrPodIdentityFailsInsteadOfUsingTheDefaultChain(t *testing.T) {
	bothPairs := []string{
		"neither EKS Pod Identity (AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
		"nor IRSA (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE",
	}
	inClusterAdvice := []string{"eks.amazonaws.com/role-arn", "Pod Identity association", "node's instance role", "IMDS",
		"set authType default only if that is intended"}
	tests := []struct {
		name      string
		authType  AuthType
		inCluster func() bool
		env       map[string]string
		want      []string
	}{
		{name: "in a cluster", authType: AuthAuto, inCluster: func() bool { return true },
			want: append(bothPairs, inClusterAdvice...)},
		{name: "empty auth type in a cluster", authType: "", inCluster: func() bool { return true },
			want: append(bothPairs, inClusterAdvice...)},
		{name: "in a cluster, detected from KUBERNETES_SERVICE_HOST", authType: AuthAuto,
			env: map[string]string{envKubernetesHost: "10.96.0.1"}, want: append(bothPairs, inClusterAdvice...)},
		{name: "outside a cluster", authType: AuthAuto, inCluster: func() bool { return false },
			want: append(bothPairs, "outside a cluster set authType default", "AWS SDK default chain")},
		{name: "outside a cluster, detected", authType: AuthAuto,
			want: append(bothPairs, "outside a cluster set authType default")},
		{name: "half of IRSA", authType: AuthAuto, inCluster: func() bool { return true },
			env:  map[string]string{envRoleARN: "arn:aws:iam::123456789012:role/puller"},
			want: []string{"AWS_WEB_IDENTITY_TOKEN_FILE (only AWS_ROLE_ARN is set)", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)"}},
		{name: "half of Pod Identity", authType: AuthAuto, inCluster: func() bool { return true },
			env:  map[string]string{envContainerTokenFile: "/t"},
			want: []string{"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (only AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE is set)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearAWSEnv(t)
			setStaticEnvKeys(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			p, err := AWSCredentials(context.Background(), AWSOptions{AuthType: tt.authType, InCluster: tt.inCluster})
			if err == nil {
				creds, _ := p.Retrieve(context.Background())
				t.Fatalf("auto succeeded with access key %q; want it to refuse the default chain", creds.AccessKeyID)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestAWSCredentialsDefaultIsTheSDKChainEvenInACluster(t *testing.T) {
	clearAWSEnv(t)
	setStaticEnvKeys(t)
	p, err := AWSCredentials(context.Background(), AWSOptions{AuthType: AuthDefault, InCluster: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := p.Retrieve(context.Background())
	if err != nil || creds.AccessKeyID != "AKIASTATICENV" {
		t.Fatalf("Retrieve = %q, %v; want the environment's static key", creds.AccessKeyID, err)
	}
}

// hostRecorder answers every request as STS's AssumeRoleWithWebIdentity
// would and records the host it was sent to: the SDK derives that host from
// the client's region, so the host shows which region the client was built
// with.
type hostRecorder struct {
	mu    sync.Mutex
	hosts []string
}

func (h *hostRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.hosts = append(h.hosts, r.URL.Host)
	h.mu.Unlock()
	if r.Body != nil {
		r.Body.Close()
	}
	const body = `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIAWEBIDENTITY</AccessKeyId>
  <SecretAccessKey>irsa-secret</SecretAccessKey><SessionToken>irsa-session</SessionToken>
  <Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>`
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{"Content-Type": {"text/xml"}},
		Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

func TestAWSCredentialsWebIdentityCallsSTSInTheEnvironmentsRegion(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		region   string // AWSOptions.Region (config aws.region)
		endpoint string // AWSOptions.STSEndpoint (config aws.stsEndpoint)
		wantHost string
	}{
		{name: "AWS_REGION", env: map[string]string{envAWSRegion: "eu-west-1"}, wantHost: "sts.eu-west-1.amazonaws.com"},
		{name: "AWS_DEFAULT_REGION", env: map[string]string{envDefaultRegion: "ap-southeast-2"},
			wantHost: "sts.ap-southeast-2.amazonaws.com"},
		{name: "AWS_REGION before AWS_DEFAULT_REGION", env: map[string]string{envAWSRegion: "eu-central-1", envDefaultRegion: "us-west-2"},
			wantHost: "sts.eu-central-1.amazonaws.com"},
		{name: "aws-cn partition from the environment", env: map[string]string{envAWSRegion: "cn-north-1"},
			wantHost: "sts.cn-north-1.amazonaws.com.cn"},
		{name: "aws-us-gov partition from the environment", env: map[string]string{envDefaultRegion: "us-gov-west-1"},
			wantHost: "sts.us-gov-west-1.amazonaws.com"},
		{name: "environment before the configured region", env: map[string]string{envAWSRegion: "us-gov-east-1"},
			region: "us-gov-west-1", wantHost: "sts.us-gov-east-1.amazonaws.com"},
		{name: "configured region when the environment names none", region: "eu-north-1", wantHost: "sts.eu-north-1.amazonaws.com"},
		{name: "us-east-1 when nothing names a region", wantHost: "sts.us-east-1.amazonaws.com"},
		{name: "stsEndpoint still overrides the host", env: map[string]string{envAWSRegion: "eu-west-1"},
			endpoint: "https://sts.vpce.example.internal", wantHost: "sts.vpce.example.internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearAWSEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			t.Setenv(envRoleARN, "arn:aws:iam::123456789012:role/puller")
			t.Setenv(envWebIdentityFile, writeFile(t, "sa-jwt"))
			rec := &hostRecorder{}
			p, err := AWSCredentials(context.Background(), AWSOptions{AuthType: AuthWebIdentity, Region: tt.region,
				STSEndpoint: tt.endpoint, HTTPClient: &http.Client{Transport: rec}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Retrieve(context.Background()); err != nil {
				t.Fatal(err)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.hosts) != 1 || rec.hosts[0] != tt.wantHost {
				t.Fatalf("STS called at %q, want %q", rec.hosts, tt.wantHost)
			}
		})
	}
}

func TestFingerprintChangesWithURLTTLAndSigningIdentity(t *testing.T) {
	base := Fingerprint("https://a.jfrog.io", time.Hour, "webIdentity:arn:aws:iam::1:role/puller")
	for name, fp := range map[string]string{
		"url":      Fingerprint("https://b.jfrog.io", time.Hour, "webIdentity:arn:aws:iam::1:role/puller"),
		"ttl":      Fingerprint("https://a.jfrog.io", 3*time.Hour, "webIdentity:arn:aws:iam::1:role/puller"),
		"identity": Fingerprint("https://a.jfrog.io", time.Hour, "webIdentity:arn:aws:iam::1:role/reader"),
	} {
		if fp == base {
			t.Errorf("a change of %s keeps the fingerprint %s", name, fp)
		}
	}
	if again := Fingerprint("https://a.jfrog.io", time.Hour, "webIdentity:arn:aws:iam::1:role/puller"); again != base {
		t.Errorf("fingerprint not stable: %s then %s", base, again)
	}
}

func TestSigningIdentityNamesTheIRSARole(t *testing.T) {
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
	t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "")
	t.Setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/puller")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/token")
	if got := SigningIdentity(AWSOptions{AuthType: AuthAuto}); got != "webIdentity:arn:aws:iam::123456789012:role/puller" {
		t.Errorf("auto with IRSA: %q", got)
	}
	t.Setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/reader")
	if got := SigningIdentity(AWSOptions{AuthType: AuthWebIdentity}); got != "webIdentity:arn:aws:iam::123456789012:role/reader" {
		t.Errorf("webIdentity after a role change: %q", got)
	}
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials")
	t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/var/run/secrets/pod-identity/token")
	if got := SigningIdentity(AWSOptions{AuthType: AuthAuto}); got != "podIdentity" {
		t.Errorf("auto with Pod Identity: %q", got)
	}
}
