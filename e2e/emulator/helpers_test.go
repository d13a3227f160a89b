package emulator

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go/aws-http-auth/credentials"
	"github.com/aws/smithy-go/aws-http-auth/sigv4"
	"github.com/aws/smithy-go/aws-http-auth/sigv4a"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/awssig"
)

const testRoleARN = "arn:aws:iam::123456789012:role/artifactory-puller"

// clock is a settable test clock shared by the emulators under test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// oidcIssuer is a local OIDC provider: discovery document, JWKS, and a signing key.
type oidcIssuer struct {
	srv *httptest.Server
	key *rsa.PrivateKey
	kid string
}

func newOIDCIssuer(t *testing.T) *oidcIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	iss := &oidcIssuer{key: key, kid: "test-key"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": iss.srv.URL, "jwks_uri": iss.srv.URL + "/openid/v1/jwks"})
	})
	mux.HandleFunc("GET /openid/v1/jwks", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: iss.kid, Algorithm: "RS256", Use: "sig"}}})
	})
	iss.srv = httptest.NewServer(mux)
	t.Cleanup(iss.srv.Close)
	return iss
}

// claims are valid service-account token claims for sub, as kube-apiserver issues them.
func (i *oidcIssuer) claims(sub string, now time.Time) jwt.Claims {
	return jwt.Claims{
		Issuer:    i.srv.URL,
		Subject:   sub,
		Audience:  jwt.Audience{"sts.amazonaws.com"},
		Expiry:    jwt.NewNumericDate(now.Add(time.Hour)),
		NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		IssuedAt:  jwt.NewNumericDate(now.Add(-time.Minute)),
	}
}

// sign signs claims with key under the issuer's kid (pass another key to forge a signature).
func (i *oidcIssuer) sign(t *testing.T, c jwt.Claims, key *rsa.PrivateKey) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: i.kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signGetCallerIdentity signs GET https://<host>/?Action=GetCallerIdentity with SigV4A, as the webhook does.
func signGetCallerIdentity(t *testing.T, c Creds, host, regionSet string, at time.Time) *http.Request {
	t.Helper()
	return signScoped(t, c, awssig.AlgorithmSigV4A, host, "sts", regionSet, at)
}

// signScoped signs GET https://<host>/?Action=GetCallerIdentity for service with alg: SigV4A with region
// set region, or SigV4 scoped to region.
func signScoped(t *testing.T, c Creds, alg, host, service, region string, at time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+host+"/?Action=GetCallerIdentity&Version=2011-06-15", nil)
	if err != nil {
		t.Fatal(err)
	}
	empty := sha256.Sum256(nil)
	creds := credentials.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
	if alg == awssig.AlgorithmSigV4A {
		err = sigv4a.New().SignRequest(&sigv4a.SignRequestInput{
			Request: req, PayloadHash: empty[:], Credentials: creds, Service: service, RegionSet: []string{region}, Time: at,
		})
	} else {
		err = sigv4.New().SignRequest(&sigv4.SignRequestInput{
			Request: req, PayloadHash: empty[:], Credentials: creds, Service: service, Region: region, Time: at,
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// sendTo sends a request signed for an AWS host to an emulator at base, keeping the signed Host.
func sendTo(t *testing.T, signed *http.Request, base string) *http.Response {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	req := signed.Clone(t.Context())
	req.Host = signed.URL.Host
	req.URL.Scheme, req.URL.Host = u.Scheme, u.Host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}
