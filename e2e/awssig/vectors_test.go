package awssig

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// suiteDir holds vectors copied from AWS's signing test suite (see its README).
const suiteDir = "testdata/aws-signing-test-suite"

// vectorContext is a vector's context.json.
type vectorContext struct {
	Credentials struct {
		AccessKeyID     string `json:"access_key_id"`
		SecretAccessKey string `json:"secret_access_key"`
		Token           string `json:"token"`
	} `json:"credentials"`
	Region           string    `json:"region"`
	Service          string    `json:"service"`
	Timestamp        time.Time `json:"timestamp"`
	OmitSessionToken bool      `json:"omit_session_token"`
}

func readVectorFile(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAWSSigningTestSuite checks the verifier against AWS's own vectors: it
// rebuilds each vector's canonical request and string to sign from the signed
// request, accepts the signature AWS's signer made with the vector's
// credentials, and refuses it for another service or region.
func TestAWSSigningTestSuite(t *testing.T) {
	for _, alg := range []string{"v4", "v4a"} {
		cases, err := os.ReadDir(filepath.Join(suiteDir, alg))
		if err != nil {
			t.Fatal(err)
		}
		if len(cases) < 20 {
			t.Fatalf("%s: only %d vectors found", alg, len(cases))
		}
		for _, c := range cases {
			dir := filepath.Join(suiteDir, alg, c.Name())
			t.Run(alg+"/"+c.Name(), func(t *testing.T) { checkVector(t, dir) })
		}
	}
}

func checkVector(t *testing.T, dir string) {
	var vc vectorContext
	if err := json.Unmarshal(readVectorFile(t, dir, "context.json"), &vc); err != nil {
		t.Fatal(err)
	}
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(readVectorFile(t, dir, "header-signed-request.txt"))))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}

	auth, err := parseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		t.Fatal(err)
	}
	canonical, err := canonicalRequest(r, body, auth.signedHeaders)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSuffix(string(readVectorFile(t, dir, "header-canonical-request.txt")), "\n"); canonical != want {
		t.Errorf("canonical request:\n%s\nwant:\n%s", canonical, want)
	}
	toSign, err := stringToSign(r, body, auth)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSuffix(string(readVectorFile(t, dir, "header-string-to-sign.txt")), "\n"); toSign != want {
		t.Errorf("string to sign:\n%s\nwant:\n%s", toSign, want)
	}

	if auth.algorithm == AlgorithmSigV4A {
		checkPublicKey(t, dir, vc)
	}

	secrets := func(id string) (string, string, bool) {
		return vc.Credentials.SecretAccessKey, vc.Credentials.Token, id == vc.Credentials.AccessKeyID
	}
	want := Expect{Service: vc.Service, Region: vc.Region}
	_, err = Verify(r, body, want, secrets, vc.Timestamp, time.Minute)
	switch {
	case vc.OmitSessionToken:
		// Deliberate: the verifier requires the session token to be signed,
		// as the webhook signs it.
		if err == nil || !strings.Contains(err.Error(), "x-amz-security-token is not signed") {
			t.Errorf("Verify = %v, want the unsigned session token refused", err)
		}
		return
	case err != nil:
		t.Fatalf("Verify: %v", err)
	}

	for _, other := range []Expect{{Service: "sts", Region: vc.Region}, {Service: vc.Service, Region: "eu-central-1"}} {
		var se *ScopeError
		if _, err := Verify(r, body, other, secrets, vc.Timestamp, time.Minute); !errors.As(err, &se) {
			t.Errorf("Verify expecting %+v = %v, want a ScopeError", other, err)
		}
	}
}

// checkPublicKey compares the key DeriveSigV4APublicKey derives from the
// vector's credentials with the one the suite publishes for them.
func checkPublicKey(t *testing.T, dir string, vc vectorContext) {
	t.Helper()
	var published struct{ X, Y string }
	if err := json.Unmarshal(readVectorFile(t, dir, "public-key.json"), &published); err != nil {
		t.Fatal(err)
	}
	pub, err := DeriveSigV4APublicKey(vc.Credentials.AccessKeyID, vc.Credentials.SecretAccessKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		got  *big.Int
		want string
	}{{"X", pub.X, published.X}, {"Y", pub.Y, published.Y}} {
		if got := hex.EncodeToString(c.got.FillBytes(make([]byte, 32))); got != c.want {
			t.Errorf("derived public key %s = %s, suite publishes %s", c.name, got, c.want)
		}
	}
}
