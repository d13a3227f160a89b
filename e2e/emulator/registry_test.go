package emulator

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// pullSecret is a kubernetes.io/dockerconfigjson Secret holding user:pass for host.
func pullSecret(t *testing.T, host, user, pass string) corev1.Secret {
	t.Helper()
	cfg, err := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{
		"username": user,
		"password": pass,
		"auth":     base64.StdEncoding.EncodeToString([]byte(user + ":" + pass)),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return corev1.Secret{
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: cfg},
	}
}

func TestRegistryPullWithArtifactoryIssuedToken(t *testing.T) {
	env, err := Start(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)

	if _, err := env.Registry.PushRandomImage(t.Context(), "team/app", "v1", env.AdminUser, env.AdminPassword); err != nil {
		t.Fatalf("admin push: %v", err)
	}

	// Mint a pull token the way the webhook does: SigV4A-signed GetCallerIdentity through Artifactory.
	creds := env.STS.IssueCredentials(env.RoleARN, "webhook", time.Hour)
	f := &exchangeFixture{art: env.Artifactory}
	status, body := f.exchange(t, TokenExchangePath, signGetCallerIdentity(t, creds, "sts.amazonaws.com", "*", time.Now()), `{"expires_in": 600}`)
	if status != http.StatusOK {
		t.Fatalf("exchange: %d %s", status, body)
	}
	var tok tokenAnswer
	if err := json.Unmarshal([]byte(body), &tok); err != nil {
		t.Fatal(err)
	}
	if tok.Username != env.Username {
		t.Fatalf("token for %q, want %q", tok.Username, env.Username)
	}

	host := env.Registry.Host()
	ref := host + "/team/app:v1"
	tests := []struct {
		name    string
		secrets []corev1.Secret
		wantErr bool
	}{
		{"pull secret with the issued username:token pulls", []corev1.Secret{pullSecret(t, host, tok.Username, tok.AccessToken)}, false},
		{"pull secret with a wrong token fails", []corev1.Secret{pullSecret(t, host, tok.Username, "wrong-token")}, true},
		{"token presented for another user fails", []corev1.Secret{pullSecret(t, host, "someone-else", tok.AccessToken)}, true},
		{"pull secret for another host is not used", []corev1.Secret{pullSecret(t, "registry.example.com", tok.Username, tok.AccessToken)}, true},
		{"no pull secret fails", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := env.Registry.PullManifest(t.Context(), ref, tc.secrets)
			t.Logf("PullManifest: %v", err)
			if (err != nil) != tc.wantErr {
				t.Fatalf("PullManifest error = %v, want error %v", err, tc.wantErr)
			}
		})
	}

	t.Run("pull token cannot push", func(t *testing.T) {
		if _, err := env.Registry.PushRandomImage(t.Context(), "team/app", "v2", tok.Username, tok.AccessToken); err == nil {
			t.Fatal("push with a pull-only user token succeeded")
		}
	})
}
