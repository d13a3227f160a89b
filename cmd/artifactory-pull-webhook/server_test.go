package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// readBody answers 200 with the body's length once it has read all of it,
// or 400 when reading fails.
var readBody = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprint(w, len(b))
})

// giveUp bounds how long a test waits for what withDeadlines promises; it is
// far beyond the deadlines under test, so reaching it means the promise was
// broken, not that the machine was slow.
const giveUp = 20 * time.Second

func TestSlowBodyConnectionIsClosedAtTheReadDeadline(t *testing.T) {
	srv := httptest.NewServer(withDeadlines(readBody, 300*time.Millisecond, 5*time.Second))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Headers at once, then a 1 MB body one byte at a time: it would take
	// well over a day to arrive.
	if _, err := fmt.Fprintf(conn, "POST /mutate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte("{")); err != nil {
					return
				}
			}
		}
	}()

	if err := conn.SetReadDeadline(time.Now().Add(giveUp)); err != nil {
		t.Fatal(err)
	}
	answer, err := io.ReadAll(conn) // returns when the server closes the connection
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server still held the trickling connection after %s (read %q)", giveUp, answer)
	}
	if !strings.HasPrefix(string(answer), "HTTP/1.1 400") {
		t.Errorf("answer to the cut-off body = %q (err %v), want a 400 before the connection closed", answer, err)
	}
}

func TestNormalRequestPassesThroughWithItsBody(t *testing.T) {
	srv := httptest.NewServer(withDeadlines(readBody, 5*time.Second, 5*time.Second))
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL+"/mutate", "application/json", strings.NewReader(`{"kind":"AdmissionReview"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(b) != "26" {
		t.Errorf("answer = %d %q, want 200 \"26\"", resp.StatusCode, b)
	}
}

// Once the body has arrived, the review may take longer than the read
// deadline (up to the write deadline) without its context being cancelled:
// an expired deadline on the connection net/http watches for the client
// leaving would cancel it. This guards withDeadlines' reliance on net/http
// lifting the deadline at the body's EOF.
func TestReviewOutlastingTheReadDeadlineKeepsItsContext(t *testing.T) {
	const read = 200 * time.Millisecond
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-r.Context().Done():
			http.Error(w, "context ended: "+context.Cause(r.Context()).Error(), http.StatusServiceUnavailable)
		case <-time.After(5 * read):
			fmt.Fprint(w, "answered")
		}
	})
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run(proto, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(withDeadlines(slow, read, 10*time.Second))
			srv.EnableHTTP2 = proto == "HTTP/2.0"
			srv.StartTLS()
			defer srv.Close()
			resp, err := srv.Client().Post(srv.URL+"/mutate", "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.Proto != proto {
				t.Fatalf("served over %s, want %s", resp.Proto, proto)
			}
			if resp.StatusCode != http.StatusOK {
				t.Errorf("answer = %d %q, want 200: the review was cut short after its body arrived", resp.StatusCode, b)
			}
		})
	}
}

// Over HTTP/2 the deadline ends the trickling stream, not the connection:
// another review multiplexed on it is still answered.
func TestSlowBodyStreamIsResetAtTheReadDeadlineOverHTTP2(t *testing.T) {
	srv := httptest.NewUnstartedServer(withDeadlines(readBody, 300*time.Millisecond, 5*time.Second))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	c := srv.Client()

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			if _, err := pw.Write([]byte("{")); err != nil {
				return
			}
		}
	}()
	status := make(chan int, 1) // 0 when the stream was reset before an answer
	go func() {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/mutate", bufio.NewReader(pr))
		req.ContentLength = 1000000
		resp, err := c.Do(req)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()

	resp, err := c.Post(srv.URL+"/mutate", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatalf("a normal review beside the trickling one: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/2.0" {
		t.Errorf("normal review answered %d over %s, want 200 over HTTP/2.0", resp.StatusCode, resp.Proto)
	}
	select {
	case code := <-status:
		if code == http.StatusOK {
			t.Error("the trickled body was accepted")
		}
	case <-time.After(giveUp):
		t.Fatalf("the trickling stream was still open after %s", giveUp)
	}
}

func TestUnreadAnswerFailsItsWritesAtTheWriteDeadline(t *testing.T) {
	writeErr := make(chan error, 1)
	big := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for range 1024 { // 64 MiB, far more than the socket buffers hold
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	})
	srv := httptest.NewServer(withDeadlines(big, 5*time.Second, 300*time.Millisecond))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Ask, then never read the answer.
	if _, err := fmt.Fprintf(conn, "GET /mutate HTTP/1.1\r\nHost: webhook\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-writeErr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("writing to a client that does not read: err %v, want the write deadline", err)
		}
	case <-time.After(giveUp):
		t.Fatalf("the handler was still writing to a client that does not read after %s", giveUp)
	}
}

// The OIDC subject of each identity: the pod's ServiceAccount's token for
// a ServiceAccount, the webhook's own for the webhook's identity (identity
// webhook, or the fallback webhook of identity serviceAccount), and never
// one for an identity the instance does not mint as.
func TestSubjectTokensSendTheRightServiceAccountsToken(t *testing.T) {
	asked := []string{}
	src := tokenSources{
		serviceAccountTokens: func(audience string) credentials.ServiceAccountTokens {
			return func(_ context.Context, ns, name string) (string, error) {
				asked = append(asked, audience+" "+ns+"/"+name)
				return "jwt", nil
			}
		},
		self: types.NamespacedName{Namespace: "apw", Name: "apw-sa"},
	}
	inst := func(identity config.Identity, fallback config.Fallback) config.Instance {
		return config.Instance{Name: "o", URL: "https://a.example", Identity: identity, Fallback: fallback, Exchange: config.ExchangeOIDC,
			OIDC: &config.OIDC{ProviderName: "p", SubjectToken: config.SubjectToken{Source: config.SubjectServiceAccount}}}
	}
	pod := credentials.Identity{Namespace: "team-a", ServiceAccount: "api"}
	for _, tc := range []struct {
		name string
		in   config.Instance
		id   credentials.Identity
		want string // "" for an error
	}{
		{"per ServiceAccount", inst(config.IdentityServiceAccount, config.FallbackNone), pod, "https://a.example team-a/api"},
		{"per ServiceAccount, fallback webhook", inst(config.IdentityServiceAccount, config.FallbackWebhook), credentials.Identity{}, "https://a.example apw/apw-sa"},
		{"per ServiceAccount, fallback none", inst(config.IdentityServiceAccount, config.FallbackNone), credentials.Identity{}, ""},
		{"webhook identity", inst(config.IdentityWebhook, ""), credentials.Identity{}, "https://a.example apw/apw-sa"},
		{"webhook identity asked as a ServiceAccount", inst(config.IdentityWebhook, ""), pod, ""},
		{"a role", inst(config.IdentityServiceAccount, config.FallbackNone), credentials.Identity{RoleARN: "arn:aws:iam::111122223333:role/r", Namespace: "team-a", ServiceAccount: "api"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			asked = asked[:0]
			sub, err := subjectTokens(tc.in, src)
			if err != nil {
				t.Fatal(err)
			}
			_, err = sub(context.Background(), tc.id)
			switch {
			case tc.want == "" && (err == nil || len(asked) != 0):
				t.Errorf("asked %v, err %v; want an error and no token request", asked, err)
			case tc.want != "" && (err != nil || len(asked) != 1 || asked[0] != tc.want):
				t.Errorf("asked %v, err %v; want %q", asked, err, tc.want)
			}
		})
	}
	// Without its own ServiceAccount known, an instance that needs it fails at start.
	if _, err := subjectTokens(inst(config.IdentityWebhook, ""), tokenSources{serviceAccountTokens: src.serviceAccountTokens}); err == nil ||
		!strings.Contains(err.Error(), "--service-account-name") {
		t.Errorf("err = %v", err)
	}
}

// What an OIDC token depends on besides the instance: the webhook's own
// ServiceAccount (source serviceAccount) or the metadata server. Changing
// either retires the checkpointed token.
func TestOIDCFingerprintNamesTheSubjectsSource(t *testing.T) {
	cfg, err := config.Parse([]byte(`
instances:
- {name: own, url: "https://a.example", registryHosts: [a.example], exchange: oidc, oidc: {providerName: p}}
- {name: gke, url: "https://b.example", registryHosts: [b.example], secretName: gke, exchange: oidc, oidc: {providerName: p, subjectToken: {source: gcpMetadata}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	base, _ := fingerprints(cfg, credentials.AWSOptions{}, "apw/sa", "169.254.169.254")
	otherSA, _ := fingerprints(cfg, credentials.AWSOptions{}, "apw/other", "169.254.169.254")
	otherHost, _ := fingerprints(cfg, credentials.AWSOptions{}, "apw/sa", "metadata.internal")
	if base["own"] == otherSA["own"] || base["gke"] != otherSA["gke"] {
		t.Errorf("own ServiceAccount changed: own %s→%s, gke %s→%s; want only own's changed", base["own"], otherSA["own"], base["gke"], otherSA["gke"])
	}
	if base["gke"] == otherHost["gke"] || base["own"] != otherHost["own"] {
		t.Errorf("metadata host changed: gke %s→%s, own %s→%s; want only gke's changed", base["gke"], otherHost["gke"], base["own"], otherHost["own"])
	}
}
