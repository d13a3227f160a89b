package awssig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Algorithm names as they appear in the Authorization header.
const (
	AlgorithmSigV4  = "AWS4-HMAC-SHA256"
	AlgorithmSigV4A = "AWS4-ECDSA-P256-SHA256"
)

const (
	timeFormat      = "20060102T150405Z"
	shortTimeFormat = "20060102"
)

// Secrets looks up the secret half of an access key. ok is false for an
// unknown key. sessionToken is empty for long-term keys.
type Secrets func(accessKeyID string) (secretAccessKey, sessionToken string, ok bool)

// Expect is what the endpoint that received a request requires of its
// credential scope, as STS checks it before the signature.
type Expect struct {
	// Service is the service's signing name, such as "sts".
	Service string
	// Region is the region of the endpoint the request was sent to (us-east-1
	// for the global sts.amazonaws.com). A SigV4 scope must name it; a SigV4A
	// X-Amz-Region-Set must cover it.
	Region string
}

// ScopeError is a credential scope that does not fit the endpoint. Its
// message is the one STS answers with (code SignatureDoesNotMatch).
type ScopeError struct{ Message string }

func (e *ScopeError) Error() string { return e.Message }

// Verify checks r's SigV4A (AWS4-ECDSA-P256-SHA256) or SigV4 (AWS4-HMAC-SHA256)
// header signature as AWS would: the credential scope must name want.Service
// and, for SigV4, want.Region, and a SigV4A region set must cover want.Region
// (a *ScopeError otherwise); the canonical request is rebuilt from the
// method, path, query, signed headers (host taken from r.Host, else r.URL.Host)
// and the SHA-256 of body; the credential scope must match X-Amz-Date, which
// must be within maxSkew of now; X-Amz-Security-Token must equal the key's
// session token when it has one (and be absent when it has none). It returns
// the access key id.
func Verify(r *http.Request, body []byte, want Expect, secrets Secrets, now time.Time, maxSkew time.Duration) (string, error) {
	auth, err := parseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return "", err
	}
	if err := checkScope(auth, r.Header.Values("X-Amz-Region-Set"), want); err != nil {
		return "", err
	}

	amzDate := r.Header.Get("X-Amz-Date")
	if amzDate == "" {
		return "", errors.New("X-Amz-Date header is missing")
	}
	signedAt, err := time.Parse(timeFormat, amzDate)
	if err != nil {
		return "", fmt.Errorf("X-Amz-Date %q is not in %s format", amzDate, timeFormat)
	}
	if skew := now.Sub(signedAt).Abs(); skew > maxSkew {
		return "", fmt.Errorf("X-Amz-Date %s is %s away from now, more than the allowed %s", amzDate, skew, maxSkew)
	}
	if auth.date != signedAt.Format(shortTimeFormat) {
		return "", fmt.Errorf("credential scope date %s does not match X-Amz-Date %s", auth.date, amzDate)
	}

	for _, h := range []string{"host", "x-amz-date"} {
		if !auth.signs(h) {
			return "", fmt.Errorf("header %s is not signed", h)
		}
	}
	if auth.algorithm == AlgorithmSigV4A && !auth.signs("x-amz-region-set") {
		return "", errors.New("header x-amz-region-set is not signed")
	}

	secret, sessionToken, ok := secrets(auth.accessKeyID)
	if !ok {
		return "", fmt.Errorf("access key %s is unknown", auth.accessKeyID)
	}
	if err := checkSessionToken(r.Header.Values("X-Amz-Security-Token"), sessionToken, auth); err != nil {
		return "", err
	}

	toSign, err := stringToSign(r, body, auth)
	if err != nil {
		return "", err
	}
	switch auth.algorithm {
	case AlgorithmSigV4:
		err = verifyHMAC(toSign, auth, secret)
	case AlgorithmSigV4A:
		err = verifyECDSA(toSign, auth, secret)
	}
	if err != nil {
		return "", err
	}
	return auth.accessKeyID, nil
}

// checkScope is STS's scope check: the right service and, for SigV4, the
// endpoint's region; for SigV4A a region set that covers it. (AWS does not
// document STS's wording for a SigV4A region set that misses; the SigV4
// message stands in for it.)
func checkScope(a authorization, regionSet []string, want Expect) error {
	if a.service != want.Service {
		return &ScopeError{fmt.Sprintf("Credential should be scoped to correct service: '%s'.", want.Service)}
	}
	switch a.algorithm {
	case AlgorithmSigV4:
		if a.region != want.Region {
			return &ScopeError{fmt.Sprintf("Credential should be scoped to a valid region, not '%s'.", a.region)}
		}
	case AlgorithmSigV4A:
		set := strings.Join(regionSet, ",")
		if !regionSetCovers(set, want.Region) {
			return &ScopeError{fmt.Sprintf("Credential should be scoped to a valid region, not '%s'.", set)}
		}
	}
	return nil
}

// regionSetCovers reports whether a comma-separated X-Amz-Region-Set names
// region, each entry a region name in which '*' stands for any run of
// characters ("*", "us-*").
func regionSetCovers(set, region string) bool {
	if region == "" {
		return false
	}
	for _, pattern := range strings.Split(set, ",") {
		if wildcardMatch(strings.TrimSpace(pattern), region) {
			return true
		}
	}
	return false
}

// wildcardMatch matches s against pattern, where '*' is any run of characters.
func wildcardMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	last := len(parts) - 1
	if last == 0 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1:last] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[last])
}

func checkSessionToken(sent []string, want string, auth authorization) error {
	switch {
	case want == "" && len(sent) == 0:
		return nil
	case want == "":
		return fmt.Errorf("access key %s has no session token but X-Amz-Security-Token was sent", auth.accessKeyID)
	case len(sent) == 0:
		return fmt.Errorf("X-Amz-Security-Token is missing; access key %s requires a session token", auth.accessKeyID)
	case len(sent) > 1 || subtle.ConstantTimeCompare([]byte(sent[0]), []byte(want)) != 1:
		return fmt.Errorf("X-Amz-Security-Token does not match the session token of access key %s", auth.accessKeyID)
	case !auth.signs("x-amz-security-token"):
		return errors.New("header x-amz-security-token is not signed")
	}
	return nil
}

// authorization is a parsed Authorization header.
type authorization struct {
	algorithm     string
	accessKeyID   string
	scope         string // the credential after the access key id
	date          string
	region        string // SigV4 only
	service       string
	signedHeaders []string
	signature     []byte
}

func (a authorization) signs(header string) bool {
	for _, h := range a.signedHeaders {
		if h == header {
			return true
		}
	}
	return false
}

func parseAuthorization(h string) (authorization, error) {
	var a authorization
	if h == "" {
		return a, errors.New("authorization header is missing")
	}
	alg, rest, ok := strings.Cut(h, " ")
	if !ok || (alg != AlgorithmSigV4 && alg != AlgorithmSigV4A) {
		return a, fmt.Errorf("authorization algorithm %q is not %s or %s", alg, AlgorithmSigV4, AlgorithmSigV4A)
	}
	a.algorithm = alg

	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, fmt.Errorf("authorization component %q is not key=value", part)
		}
		if _, dup := fields[k]; dup {
			return a, fmt.Errorf("authorization component %s appears twice", k)
		}
		fields[k] = v
	}
	for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
		if fields[k] == "" {
			return a, fmt.Errorf("authorization component %s is missing", k)
		}
	}

	cred := strings.Split(fields["Credential"], "/")
	want := 5 // akid/date/region/service/aws4_request
	if alg == AlgorithmSigV4A {
		want = 4 // SigV4A scopes carry no region: akid/date/service/aws4_request
	}
	if len(cred) != want || cred[len(cred)-1] != "aws4_request" {
		return a, fmt.Errorf("credential %q is not a %s credential scope", fields["Credential"], alg)
	}
	a.accessKeyID, a.date, a.service = cred[0], cred[1], cred[len(cred)-2]
	if alg == AlgorithmSigV4 {
		a.region = cred[2]
	}
	a.scope = strings.Join(cred[1:], "/")

	a.signedHeaders = strings.Split(fields["SignedHeaders"], ";")
	if !sort.StringsAreSorted(a.signedHeaders) {
		return a, errors.New("SignedHeaders are not sorted")
	}
	for _, sh := range a.signedHeaders {
		if sh == "" || sh != strings.ToLower(sh) {
			return a, fmt.Errorf("signed header %q is not a lower-case name", sh)
		}
	}

	sig, err := hex.DecodeString(fields["Signature"])
	if err != nil {
		return a, errors.New("signature is not hex")
	}
	a.signature = sig
	return a, nil
}

// stringToSign is the algorithm, X-Amz-Date, credential scope and hash of the
// canonical request, one a line.
func stringToSign(r *http.Request, body []byte, a authorization) (string, error) {
	canonical, err := canonicalRequest(r, body, a.signedHeaders)
	if err != nil {
		return "", err
	}
	digest := sha256.Sum256([]byte(canonical))
	return strings.Join([]string{a.algorithm, r.Header.Get("X-Amz-Date"), a.scope, hex.EncodeToString(digest[:])}, "\n"), nil
}

func canonicalRequest(r *http.Request, body []byte, signedHeaders []string) (string, error) {
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}

	var headers strings.Builder
	for _, name := range signedHeaders {
		var values []string
		if name == "host" {
			host := r.Host
			if host == "" {
				host = r.URL.Host
			}
			values = []string{host}
		} else {
			values = r.Header.Values(name)
		}
		if len(values) == 0 || (len(values) == 1 && values[0] == "") {
			return "", fmt.Errorf("signed header %s is missing", name)
		}
		for i, v := range values {
			values[i] = strings.Join(strings.Fields(v), " ")
		}
		headers.WriteString(name + ":" + strings.Join(values, ",") + "\n")
	}

	payload := sha256.Sum256(body)
	return strings.Join([]string{
		r.Method,
		uriEncode(path, false), // services other than S3 double-encode the path
		canonicalQuery(r.URL.Query()),
		headers.String(),
		strings.Join(signedHeaders, ";"),
		hex.EncodeToString(payload[:]),
	}, "\n"), nil
}

// canonicalQuery encodes each name and value, then sorts by encoded name and,
// for a repeated name, by encoded value: AWS sorts after encoding, and by name
// first ("a=2" before "a-b=1", though '-' sorts before '=').
func canonicalQuery(q url.Values) string {
	type pair struct{ k, v string }
	var pairs []pair
	for k, vs := range q {
		for _, v := range vs {
			pairs = append(pairs, pair{uriEncode(k, true), uriEncode(v, true)})
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	encoded := make([]string, len(pairs))
	for i, p := range pairs {
		encoded[i] = p.k + "=" + p.v
	}
	return strings.Join(encoded, "&")
}

// uriEncode percent-encodes everything outside RFC 3986's unreserved set,
// keeping '/' when encoding a path.
func uriEncode(s string, encodeSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		unreserved := 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~'
		if unreserved || (c == '/' && !encodeSlash) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func verifyHMAC(stringToSign string, a authorization, secret string) error {
	key := []byte("AWS4" + secret)
	for _, part := range []string{a.date, a.region, a.service, "aws4_request"} {
		key = hmacSHA256(key, part)
	}
	if !hmac.Equal(hmacSHA256(key, stringToSign), a.signature) {
		return fmt.Errorf("%s signature does not match for access key %s", a.algorithm, a.accessKeyID)
	}
	return nil
}

func verifyECDSA(stringToSign string, a authorization, secret string) error {
	pub, err := DeriveSigV4APublicKey(a.accessKeyID, secret)
	if err != nil {
		return err
	}
	digest := sha256.Sum256([]byte(stringToSign))
	if !ecdsa.VerifyASN1(pub, digest[:], a.signature) {
		return fmt.Errorf("%s signature does not match for access key %s", a.algorithm, a.accessKeyID)
	}
	return nil
}

// DeriveSigV4APublicKey derives the P-256 key pair AWS associates with an
// access key (FIPS 186-4 B.4.2 "testing candidates", candidates drawn with the
// NIST SP 800-108 counter-mode KDF using HMAC-SHA256) and returns its public
// half.
func DeriveSigV4APublicKey(accessKeyID, secret string) (*ecdsa.PublicKey, error) {
	n := elliptic.P256().Params().N
	nMinus2 := new(big.Int).Sub(n, big.NewInt(2))
	inputKey := []byte("AWS4A" + secret)

	for counter := 1; counter <= 0xff; counter++ {
		kdfContext := append([]byte(accessKeyID), byte(counter))
		c := new(big.Int).SetBytes(kdfCounterMode(inputKey, []byte(AlgorithmSigV4A), kdfContext, 256))
		if c.Cmp(nMinus2) >= 0 {
			continue // candidate out of range; the next counter gives a new one
		}
		d := c.Add(c, big.NewInt(1)) // d in [1, n-2]
		priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d.FillBytes(make([]byte, 32)))
		if err != nil {
			return nil, fmt.Errorf("derive SigV4A key for access key %s: %w", accessKeyID, err)
		}
		return &priv.PublicKey, nil
	}
	return nil, fmt.Errorf("derive SigV4A key for access key %s: counter exhausted", accessKeyID)
}

// kdfCounterMode is NIST SP 800-108 KDF in counter mode with HMAC-SHA256 as
// PRF: K(i) = HMAC(key, [i]_32 || label || 0x00 || context || [L]_32).
func kdfCounterMode(key, label, context []byte, bits int) []byte {
	var fixed []byte
	fixed = append(fixed, label...)
	fixed = append(fixed, 0x00)
	fixed = append(fixed, context...)
	fixed = binary.BigEndian.AppendUint32(fixed, uint32(bits))

	var out []byte
	for i := uint32(1); len(out)*8 < bits; i++ {
		h := hmac.New(sha256.New, key)
		h.Write(binary.BigEndian.AppendUint32(nil, i))
		h.Write(fixed)
		out = h.Sum(out)
	}
	return out[:bits/8]
}
