package credentials

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
)

// fakeOIDCArtifactory answers the OIDC token exchange and records the
// forms it got.
type fakeOIDCArtifactory struct {
	mu     sync.Mutex
	forms  []url.Values
	status int
	body   string
}

func (f *fakeOIDCArtifactory) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(b))
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path != OIDCTokenPath || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		http.Error(w, "not the OIDC exchange", http.StatusNotFound)
		return
	}
	f.forms = append(f.forms, form)
	if f.status != 0 {
		w.WriteHeader(f.status)
		fmt.Fprint(w, f.body)
		return
	}
	fmt.Fprintf(w, `{"access_token":"%s","token_type":"Bearer","expires_in":1800,"issued_token_type":"urn:ietf:params:oauth:token-type:access_token","username":"team-a-puller"}`, testRawToken)
}

func newOIDCTest(t *testing.T, o OIDCOptions) (*OIDCExchanger, *fakeOIDCArtifactory, *prometheus.Registry) {
	t.Helper()
	fake := &fakeOIDCArtifactory{}
	srv := httptest.NewTLSServer(fake)
	t.Cleanup(srv.Close)
	reg := prometheus.NewRegistry()
	o.Instance, o.URL, o.HTTPClient, o.Metrics = "main", srv.URL, srv.Client(), metrics.New(reg)
	if o.TTL == 0 {
		o.TTL = time.Hour
	}
	ex, err := NewOIDCExchanger(o)
	if err != nil {
		t.Fatal(err)
	}
	return ex, fake, reg
}

func TestOIDCExchangeSendsTheRFC8693FormAndReadsTheToken(t *testing.T) {
	var asked []Identity
	ex, fake, reg := newOIDCTest(t, OIDCOptions{ProviderName: "k8s-cluster", IdentityMappingName: "pull", ProjectKey: "team",
		Subject: func(_ context.Context, id Identity) (string, error) {
			asked = append(asked, id)
			return "subject-jwt-of-" + id.Name(), nil
		}})
	api := Identity{Namespace: "team-a", ServiceAccount: "api"}
	cred, err := ex.ExchangeAs(context.Background(), api)
	if err != nil {
		t.Fatal(err)
	}
	if cred.Username != "team-a-puller" || cred.Token.Reveal() != testRawToken || cred.Lifetime() != 30*time.Minute {
		t.Errorf("credential %s, lifetime %s; want team-a-puller's token for expires_in", cred.Username, cred.Lifetime())
	}
	if len(asked) != 1 || asked[0] != api {
		t.Errorf("subject tokens asked for %v, want the ServiceAccount's", asked)
	}
	f := fake.forms[0]
	for k, want := range map[string]string{
		"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
		"subject_token": "subject-jwt-of-sa:team-a/api", "provider_name": "k8s-cluster", "identity_mapping_name": "pull", "project_key": "team",
	} {
		if f.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, f.Get(k), want)
		}
	}
	if _, sent := f["audience"]; sent {
		t.Error("audience sent though none is configured")
	}
	if m := findMetric(t, reg, "artifactory_pull_token_exchanges_total", map[string]string{"instance": "main", "exchange": "oidc", "result": "success"}); m == nil || m.GetCounter().GetValue() != 1 {
		t.Error("the exchange is not counted with exchange=oidc")
	}
}

func TestOIDCExchangeFailuresCarryArtifactorysReasonRedacted(t *testing.T) {
	ex, fake, reg := newOIDCTest(t, OIDCOptions{ProviderName: "k8s-cluster",
		Subject: func(context.Context, Identity) (string, error) {
			return "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", nil
		}})
	fake.status, fake.body = 401, `{"errors":[{"code":"UNAUTHORIZED","message":"no identity mapping matched the token (sub system:serviceaccount:team-a:api)"}],"token":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"}`
	_, err := ex.ExchangeAs(context.Background(), Identity{})
	var xe *ExchangeError
	if !errors.As(err, &xe) || xe.Status != 401 || !strings.Contains(err.Error(), "no identity mapping matched") {
		t.Fatalf("error %v, want a 401 with Artifactory's reason", err)
	}
	if strings.Contains(err.Error(), "c2lnbmF0dXJl") {
		t.Errorf("the subject token reached the error: %v", err)
	}
	if m := findMetric(t, reg, "artifactory_pull_token_exchanges_total", map[string]string{"exchange": "oidc", "result": "unauthorized"}); m == nil {
		t.Error("no unauthorized oidc exchange counted")
	}
	// A subject token that cannot be had is the credentials class, before any request.
	ex2, fake2, _ := newOIDCTest(t, OIDCOptions{ProviderName: "p", Subject: func(context.Context, Identity) (string, error) {
		return "", errors.New("token file missing")
	}})
	if _, err := ex2.ExchangeAs(context.Background(), Identity{}); FailureClass(err) != "credentials" || len(fake2.forms) != 0 ||
		!strings.Contains(err.Error(), "OIDC subject token") || strings.Contains(err.Error(), "AWS") {
		t.Errorf("no subject token: %v (class %s), %d requests; want the subject token named, not AWS", err, FailureClass(err), len(fake2.forms))
	}
	// The anonymous answer is refused, as for the AWS exchange.
	fake.status, fake.body = 200, `{"access_token":"x","username":"anonymous"}`
	if _, err := ex.ExchangeAs(context.Background(), Identity{}); err == nil || !strings.Contains(err.Error(), "not a mapped user") {
		t.Errorf("anonymous answer: %v", err)
	}
}

func TestNewOIDCExchangerRejectsIncompleteOptions(t *testing.T) {
	subject := func(context.Context, Identity) (string, error) { return "x", nil }
	for name, o := range map[string]OIDCOptions{
		"no provider": {URL: "https://a.example", TTL: time.Hour, Subject: subject},
		"no subject":  {URL: "https://a.example", TTL: time.Hour, ProviderName: "p"},
		"http":        {URL: "http://a.example", TTL: time.Hour, ProviderName: "p", Subject: subject},
		"no TTL":      {URL: "https://a.example", ProviderName: "p", Subject: subject},
	} {
		if _, err := NewOIDCExchanger(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFileSubjectReadsTheFileOnEveryExchange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	src := FileSubject(path)
	if _, err := src(context.Background(), Identity{}); err == nil {
		t.Error("a missing file gave a token")
	}
	for _, want := range []string{"first-token", "rotated-token"} {
		if err := os.WriteFile(path, []byte(want+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := src(context.Background(), Identity{}); err != nil || got != want {
			t.Errorf("token %q, %v; want %q", got, err, want)
		}
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := src(context.Background(), Identity{}); err == nil {
		t.Error("an empty file gave a token")
	}
}

func TestGCPMetadataSubjectAsksForTheAudienceWithTheMetadataHeader(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata-Flavor") != "Google" {
			http.Error(w, "missing Metadata-Flavor", http.StatusForbidden)
			return
		}
		if r.URL.Path != "/computeMetadata/v1/instance/service-accounts/default/identity" || r.URL.Query().Get("format") != "full" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, "id-token-for-"+r.URL.Query().Get("audience"))
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	got, err := GCPMetadataSubject(host, "https://example.jfrog.io", nil)(context.Background(), Identity{})
	if err != nil || got != "id-token-for-https://example.jfrog.io" {
		t.Errorf("token %q, %v", got, err)
	}
}

// The metadata server is never asked through a proxy, whatever the
// environment says.
func TestGCPMetadataClientIgnoresTheProxyEnvironment(t *testing.T) {
	tr, ok := metadataClient().Transport.(*http.Transport)
	if !ok {
		t.Fatal("not an *http.Transport")
	}
	// Any proxy function may proxy (ProxyFromEnvironment reads the
	// environment once per process, so asking it proves nothing): none.
	if tr.Proxy != nil {
		t.Error("the metadata client has a proxy function")
	}
}
