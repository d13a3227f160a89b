package emulator

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"
)

// podIdentityTTL is how long the real agent's credentials last.
const podIdentityTTL = 6 * time.Hour

// PodIdentityAgent emulates the EKS Pod Identity agent's credentials endpoint for one association
// (one role, one projected token).
type PodIdentityAgent struct {
	sts     *STS
	roleArn string
	token   string
	srv     *httptest.Server

	mu   sync.Mutex
	down bool
}

// NewPodIdentityAgent starts an agent that answers GET /v1/credentials for callers presenting
// exactly token in the Authorization header, with credentials for roleArn minted by sts.
func NewPodIdentityAgent(sts *STS, roleArn, token string) *PodIdentityAgent {
	a := &PodIdentityAgent{sts: sts, roleArn: roleArn, token: token}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/credentials", a.credentials)
	a.srv = httptest.NewServer(mux)
	return a
}

// URL is the full credentials URI, the value of AWS_CONTAINER_CREDENTIALS_FULL_URI.
func (a *PodIdentityAgent) URL() string { return a.srv.URL + "/v1/credentials" }

// Close stops the agent.
func (a *PodIdentityAgent) Close() { a.srv.Close() }

// SetDown makes the agent answer 503 while on.
func (a *PodIdentityAgent) SetDown(down bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down = down
}

func (a *PodIdentityAgent) credentials(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	down := a.down
	a.mu.Unlock()
	auth := r.Header.Get("Authorization")
	switch {
	case down:
		writeAgentError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "pod identity agent is down")
		return
	case auth == "":
		writeAgentError(w, http.StatusUnauthorized, "AccessDeniedException", "Authorization header is missing")
		return
	case auth != a.token:
		writeAgentError(w, http.StatusForbidden, "AccessDeniedException", "service account token is not valid for this association")
		return
	}
	c := a.sts.IssueCredentials(a.roleArn, "eks-emulator-"+randomHex(8), podIdentityTTL)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{
		"AccessKeyId":     c.AccessKeyID,
		"SecretAccessKey": c.SecretAccessKey,
		"Token":           c.SessionToken,
		"AccountId":       c.Account,
		"Expiration":      c.Expiration.Format(time.RFC3339),
	})
}

// writeAgentError answers in the shape aws-sdk-go-v2's endpoint credentials provider decodes.
func writeAgentError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": code, "message": message})
}
