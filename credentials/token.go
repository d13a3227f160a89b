package credentials

import (
	"time"
)

const redacted = "[redacted]"

// Token is an Artifactory access token. It prints as [redacted] in every
// format verb and in JSON so that it cannot leak through logs or errors by
// accident; Reveal is the one way to read it.
type Token struct{ value string }

// NewToken wraps a raw token value.
func NewToken(v string) Token { return Token{value: v} }

// Reveal returns the raw token. Call it only where the token is written to
// its destination (a dockerconfig, an HTTP header).
func (t Token) Reveal() string { return t.value }

// IsZero reports whether the token is empty.
func (t Token) IsZero() bool { return t.value == "" }

func (t Token) String() string   { return redacted }
func (t Token) GoString() string { return redacted }

// MarshalJSON keeps the token out of any JSON a caller might log.
func (t Token) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// Credential is what a successful exchange yields: the Artifactory user the
// AWS role is mapped to, its token, and the token's lifetime.
type Credential struct {
	Username string
	Token    Token
	IssuedAt time.Time
	Expiry   time.Time
}

// Lifetime is the token's full validity period.
func (c Credential) Lifetime() time.Duration { return c.Expiry.Sub(c.IssuedAt) }

// Key identifies one cached credential: an Artifactory instance, the AWS
// identity that is exchanged for it, and the fingerprint of everything else
// the token depends on (see Fingerprint). A token minted under another
// fingerprint is another key's: it is never handed out for this one.
type Key struct {
	Instance    string
	Identity    string
	Fingerprint string
}

// WebhookIdentity is the Identity of the process's own AWS credentials.
const WebhookIdentity = "webhook"
