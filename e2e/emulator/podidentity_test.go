package emulator

import (
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

func TestPodIdentityAgentServesVerifiableCredentials(t *testing.T) {
	s := newTestSTS(t, newOIDCIssuer(t), newClock())
	agent := NewPodIdentityAgent(s, testRoleARN, "projected-token")
	t.Cleanup(agent.Close)

	provider := endpointcreds.New(agent.URL(), func(o *endpointcreds.Options) { o.AuthorizationToken = "projected-token" })
	creds, err := provider.Retrieve(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if creds.SessionToken == "" || creds.Expires.Before(time.Now().Add(5*time.Hour)) {
		t.Errorf("credentials lack a session token or a 6h expiry: expires %s", creds.Expires)
	}
	out, err := stsClient(s, aws.NewCredentialsCache(provider)).GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(out.Arn); len(got) == 0 || got[:len("arn:aws:sts::123456789012:assumed-role/artifactory-puller/")] != "arn:aws:sts::123456789012:assumed-role/artifactory-puller/" {
		t.Errorf("caller ARN = %q", got)
	}
}

func TestPodIdentityAgentRejectsBadCallers(t *testing.T) {
	s := newTestSTS(t, newOIDCIssuer(t), newClock())
	agent := NewPodIdentityAgent(s, testRoleARN, "projected-token")
	t.Cleanup(agent.Close)

	tests := []struct {
		name       string
		auth       string
		down       bool
		wantStatus int
	}{
		{"missing token is unauthorized", "", false, http.StatusUnauthorized},
		{"wrong token is forbidden", "other-token", false, http.StatusForbidden},
		{"token with a Bearer prefix is forbidden", "Bearer projected-token", false, http.StatusForbidden},
		{"agent down answers 503", "projected-token", true, http.StatusServiceUnavailable},
		{"exact token is served", "projected-token", false, http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			agent.SetDown(tc.down)
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, agent.URL(), nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.wantStatus)
			}
		})
	}
}
