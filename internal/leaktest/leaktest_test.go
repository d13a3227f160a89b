package leaktest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// Tokens of both kinds the tests meet: an Artifactory-like JWT, and a
// password whose characters every escaping changes.
var testSecrets = []string{
	"eyJ2ZXIiOiIyIiwidHlwIjoiSldUIiwiYWxnIjoiUlMyNTYifQ.eyJzdWIiOiJqZmFjQDAxZ3Rlc3QifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg",
	`p@ss+w/rd=&<tok>"quoted"\-0123456789`,
}

// dockerconfig is a .dockerconfigjson as the webhook writes it; authOnly
// leaves out the password, so the token is only in the base64 auth field.
func dockerconfig(t *testing.T, user, token string, authOnly bool) []byte {
	t.Helper()
	entry := map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + token))}
	if !authOnly {
		entry["username"], entry["password"] = user, token
	}
	b, err := json.Marshal(map[string]any{"auths": map[string]any{"acme.jfrog.io": entry, "*.acme.jfrog.io": entry}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// zapLog is what the webhook's logger (controller-runtime's zap, JSON)
// writes for one line logging kv.
func zapLog(kv ...any) string {
	var buf bytes.Buffer
	crzap.New(crzap.WriteTo(&buf), crzap.JSONEncoder()).Info("wrote pull secret", kv...)
	return buf.String()
}

// funcrLog is what funcr's JSON logger writes for one line logging kv.
func funcrLog(kv ...any) string {
	var out string
	funcr.NewJSON(func(obj string) { out = obj }, funcr.Options{}).Info("wrote pull secret", kv...)
	return out
}

func TestFindSeesTheSecretInEveryFormALogCarriesIt(t *testing.T) {
	type leak struct {
		name string
		text func(user, token string) string
	}
	leaks := []leak{
		{"plain in a sentence", func(_, tok string) string { return "exchange answered " + tok + " for the role" }},
		{"zap JSON of a Secret's Data", func(user, tok string) string {
			return zapLog("data", map[string][]byte{".dockerconfigjson": dockerconfig(t, user, tok, false)})
		}},
		{"zap JSON of the auth-only dockerconfig bytes", func(user, tok string) string {
			return zapLog("dockerconfig", dockerconfig(t, user, tok, true))
		}},
		{"encoding/json of a Secret's Data", func(user, tok string) string {
			b, _ := json.Marshal(map[string]any{"data": map[string][]byte{".dockerconfigjson": dockerconfig(t, user, tok, false)}})
			return string(b)
		}},
		{"funcr JSON of a Secret's Data", func(user, tok string) string {
			return funcrLog("data", map[string][]byte{".dockerconfigjson": dockerconfig(t, user, tok, true)})
		}},
		{"%v of a Secret's Data", func(user, tok string) string {
			return fmt.Sprintf("data %v", map[string][]byte{".dockerconfigjson": dockerconfig(t, user, tok, true)})
		}},
		{"%#v of a Secret's Data", func(user, tok string) string {
			return fmt.Sprintf("data %#v", map[string][]byte{".dockerconfigjson": dockerconfig(t, user, tok, true)})
		}},
		{"%x", func(_, tok string) string { return fmt.Sprintf("body %x", "{"+tok+"}") }},
		{"%X", func(_, tok string) string { return fmt.Sprintf("body %X", tok) }},
		{"%q", func(_, tok string) string { return fmt.Sprintf("token %q", tok) }},
		{"url.QueryEscape", func(_, tok string) string { return "GET /api?token=" + url.QueryEscape(tok) + "&x=1" }},
		{"url.PathEscape", func(_, tok string) string { return "GET /api/" + url.PathEscape(tok) + "/x" }},
		{"json.Marshal of a struct", func(_, tok string) string {
			b, _ := json.Marshal(struct{ AccessToken string }{tok})
			return string(b)
		}},
		{"a JSON body in a JSON log", func(_, tok string) string {
			b, _ := json.Marshal(map[string]string{"access_token": tok})
			return zapLog("body", string(b))
		}},
		{"base64 of the token", func(_, tok string) string { return base64.StdEncoding.EncodeToString([]byte(tok)) }},
		{"unpadded base64url of the token", func(_, tok string) string { return base64.RawURLEncoding.EncodeToString([]byte(tok)) }},
		{"the dockerconfig auth", func(user, tok string) string {
			return `"auth":"` + base64.StdEncoding.EncodeToString([]byte(user+":"+tok)) + `"`
		}},
	}
	// Users of three lengths put the token at each alignment in the auth.
	for _, user := range []string{"svc", "svc-", "svc-p"} {
		for si, tok := range testSecrets {
			for _, l := range leaks {
				t.Run(fmt.Sprintf("%s/secret %d/user %s", l.name, si, user), func(t *testing.T) {
					text := l.text(user, tok)
					got := Find(text, "an-unrelated-secret-value", tok)
					if len(got) == 0 {
						t.Fatalf("not found in %d bytes of text", len(text))
					}
					for _, f := range got {
						if f.Secret != 1 {
							t.Errorf("reported secret %d, which is not in the text: %v", f.Secret, f)
						}
						if s := f.String(); strings.Contains(s, tok) {
							t.Errorf("the finding prints the secret: %s", s)
						}
					}
				})
			}
		}
	}
}

func TestBase64CoreIsInEveryEncodingOfABlobHoldingTheSecret(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	junk := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	encodings := map[string]*base64.Encoding{"std": base64.StdEncoding, "raw std": base64.RawStdEncoding,
		"url": base64.URLEncoding, "raw url": base64.RawURLEncoding}
	for _, secret := range testSecrets {
		for before := range 7 {
			for after := range 4 {
				blob := append(append(junk(before), secret...), junk(after)...)
				for name, enc := range encodings {
					if got := Find(enc.EncodeToString(blob), secret); len(got) == 0 {
						t.Errorf("%s of a blob with the secret at byte %d, %d bytes after it: not found", name, before, after)
					}
				}
			}
		}
		// The core keeps every character that depends on the secret alone.
		for k := range 3 {
			if got, want := len(Base64Core(base64.RawStdEncoding, secret, k)), (8*(k+len(secret)))/6-[3]int{0, 2, 3}[k]; got != want {
				t.Errorf("alignment %d: core of %d characters, want %d", k, got, want)
			}
		}
	}
}

func TestFindReportsNothingInTextWithoutTheSecret(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	noise := make([]byte, 1<<19)
	for i := range noise {
		noise[i] = byte(rng.UintN(256))
	}
	var text strings.Builder
	text.WriteString(zapLog("data", map[string][]byte{".dockerconfigjson": dockerconfig(t, "svc-puller", "another-token-of-another-namespace", false)}))
	text.WriteString(base64.StdEncoding.EncodeToString(noise) + "\n")
	text.WriteString(base64.RawURLEncoding.EncodeToString(noise[:1<<17]) + "\n")
	text.WriteString(hex.EncodeToString(noise[:1<<17]) + "\n")
	text.WriteString(fmt.Sprintf("%v\n", noise[:1<<14]))
	text.WriteString(`{"level":"info","msg":"wrote pull secret","namespace":"team-a","instance":"acme","secret":"artifactory-pull","action":"created","expiresAt":"2026-05-01T13:00:00Z"}`)
	if got := Find(text.String(), testSecrets...); len(got) != 0 {
		t.Errorf("findings in text without the secrets: %v", got)
	}
}

func TestFindReportsAnOccurrenceOnceInItsMostSpecificForm(t *testing.T) {
	secret := testSecrets[0]
	text := "line one\nkey=" + base64.StdEncoding.EncodeToString([]byte(secret)) + " and " + secret + "\n"
	got := Find(text, secret)
	want := []string{"plain", "base64 of the secret alone, padded"}
	if len(got) != len(want) {
		t.Fatalf("findings = %v, want %v", got, want)
	}
	for i, f := range got {
		if f.Form != want[i] || f.Count != 1 || f.Line != 2 {
			t.Errorf("finding %d = %v, want %s once on line 2", i, f, want[i])
		}
	}
	if got[1].Offset != len("line one\nkey=") {
		t.Errorf("offset = %d", got[1].Offset)
	}
}

func TestFormsAreLongEnoughAndNeverEmpty(t *testing.T) {
	if fs := Forms("short-key"); len(fs) != 0 {
		t.Errorf("a %d-byte secret has %d forms, want none (shorter than MinLen)", len("short-key"), len(fs))
	}
	if got := Find("short-key", "short-key"); got != nil {
		t.Errorf("Find of a short secret = %v", got)
	}
	for _, secret := range testSecrets {
		seen := map[string]bool{}
		for _, f := range Forms(secret) {
			if len(f.Text) < MinLen || seen[f.Text] || strings.Contains(f.Name, secret) {
				t.Errorf("form %q: %d bytes, duplicate %v", f.Name, len(f.Text), seen[f.Text])
			}
			seen[f.Text] = true
		}
	}
}
