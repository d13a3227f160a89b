package pullsecret

import (
	"encoding/base64"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// FuzzDockerConfigJSON checks both directions of the dockerconfig codec.
// Any document the store reads back (Seed reads Secrets anyone with write
// access to the namespace could have edited) must parse without panicking
// and its errors must not quote the token or the auth value. Any
// username/token the store writes must read back unchanged for every host.
func FuzzDockerConfigJSON(f *testing.F) {
	const host = "artifactory.example.com"
	for _, s := range []struct{ doc, user, token string }{
		{`{"auths":{"artifactory.example.com":{"username":"u","password":"p","auth":"dTpw"}}}`, "k8s-puller", "tok"},
		{`{"auths":{"artifactory.example.com":{"auth":"dTpw"}}}`, "u", "p:with:colons"},
		{`{"auths":{"artifactory.example.com":{"auth":"!!notbase64"}}}`, "ünï", "☃"},
		{`{"auths":{"artifactory.example.com":{"auth":"bm9jb2xvbg=="}}}`, "u", "t"},
		{`{"auths":{"*.example.com":{}}}`, "u", "t"},
		{`{"auths":null}`, "", ""},
		{`[]`, "a", "b"},
		{"\xff", "a\x00", "b\n"},
	} {
		f.Add([]byte(s.doc), s.user, s.token)
	}
	f.Fuzz(func(t *testing.T, doc []byte, user, token string) {
		if _, tok, err := ParseDockerConfigJSON(doc, host); err != nil {
			if !tok.IsZero() {
				t.Fatal("a token returned with an error")
			}
			if leaksAuth(err.Error(), doc) {
				t.Fatalf("error quotes the document's secrets: %v", err)
			}
		}

		if !utf8.ValidString(user) || !utf8.ValidString(token) {
			// Exchange decodes both from JSON, which yields valid UTF-8;
			// JSON cannot carry other bytes unchanged.
			return
		}
		b, err := DockerConfigJSON([]string{host, "*.example.com"}, user, credentials.NewToken(token))
		if err != nil {
			if user != "" && token != "" {
				t.Fatalf("building for user %q: %v", user, err)
			}
			return
		}
		for _, h := range []string{host, "*.example.com"} {
			gotUser, gotToken, err := ParseDockerConfigJSON(b, h)
			if err != nil || gotUser != user || gotToken.Reveal() != token {
				t.Fatalf("round trip for %s: user %q (want %q), token matches %v, err %v",
					h, gotUser, user, gotToken.Reveal() == token, err)
			}
		}
	})
}

// fixedMessages holds every constant part an error of ParseDockerConfigJSON
// can have for the fuzzed host: a value found in them is not a leak.
const fixedMessages = `parsing dockerconfigjson: not valid JSON of the expected shape
parsing dockerconfigjson: no entry for host "artifactory.example.com"
parsing dockerconfigjson: auth of host "artifactory.example.com" is not base64
parsing dockerconfigjson: auth of host "artifactory.example.com" is not user:token
parsing dockerconfigjson: host "artifactory.example.com" has no username or token`

// leaksAuth reports whether msg contains a password or auth value of doc
// (found by a plain search for the quoted JSON values, good enough for
// the fuzzer's documents), or the decoded auth.
func leaksAuth(msg string, doc []byte) bool {
	for _, key := range []string{`"password":"`, `"auth":"`} {
		rest := string(doc)
		for {
			i := strings.Index(rest, key)
			if i < 0 {
				break
			}
			rest = rest[i+len(key):]
			v, _, _ := strings.Cut(rest, `"`)
			if len(v) >= 4 && strings.Contains(msg, v) && !strings.Contains(fixedMessages, v) {
				return true
			}
			if raw, err := base64.StdEncoding.DecodeString(v); err == nil {
				if _, pass, ok := strings.Cut(string(raw), ":"); ok && len(pass) >= 4 && strings.Contains(msg, pass) {
					return true
				}
			}
		}
	}
	return false
}
