// Package leaktest finds secrets in what a test collects from the code under
// test — logs, metrics, Events, admission warnings, command output — in
// every form a log line can carry them, not only verbatim.
//
// A secret rarely leaks as itself. A logged Secret's Data (a
// map[string][]byte) is written base64-encoded by every JSON logger (zap,
// encoding/json), so the token sits inside the base64 of the whole
// dockerconfig, at whatever byte alignment its offset gives it; the
// dockerconfig's own auth field is base64("user:token"), and logging that
// encodes it twice. fmt prints bytes in hex or as decimal lists, funcr as a
// JSON array of numbers, URLs query-escape, JSON escapes. Forms lists these
// encodings of one secret; Find searches a text for all of them.
//
// The package is meant for tests only; it lives outside _test files so
// that the unit tests of several packages and the end-to-end tests share
// it.
package leaktest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// MinLen is the length, in bytes, of the shortest secret searched for, and
// of the shortest form. The inner base64 of a short secret at an alignment
// is a few characters, which occur by chance in any large base64 blob (a
// certificate, another token), and a short plain secret occurs in ordinary
// words. Twelve characters are 72 bits of base64 or 48 of hex, beyond
// chance matches in megabytes of text, while every token, key and password
// the tests handle is longer; and every form of a secret of at least
// MinLen bytes is at least MinLen long (the shortest, an inner base64, has
// 15 characters). A shorter secret has no forms and is
// never found: a caller that must search it checks len(Forms(s)) > 0.
const MinLen = 12

// Form is one encoding of a secret as it can appear in a log.
type Form struct {
	// Name says how the secret is encoded, e.g. "base64url at byte
	// alignment 1". It never contains the secret.
	Name string
	// Text is the secret so encoded: the substring any text holding the
	// secret in this form contains.
	Text string
}

// alphabet is a base64 alphabet, without padding.
type alphabet struct {
	name string
	enc  *base64.Encoding
}

var alphabets = []alphabet{
	{"base64", base64.RawStdEncoding},
	{"base64url", base64.RawURLEncoding},
}

// Forms returns every form of secret that a log, a metric, an Event or a
// command's output can carry, most specific first, without duplicates; none
// when secret is shorter than MinLen. The secret takes one of these shapes
// inside a document:
//
//   - plain, Go-quoted (%q, %+q), JSON-escaped (json.Marshal's HTML-safe
//     escaping of <, > and &, without it, and escaped twice, as a JSON log
//     of a JSON document holds it), URL query- and path-escaped;
//   - base64, standard and URL alphabet, padded and not, of the secret
//     alone;
//   - the inner base64 of the secret inside any larger encoded blob, at
//     each of the three byte alignments (see Base64Core), in both
//     alphabets, of the secret itself and of its JSON-escaped forms (a
//     dockerconfig holds the token JSON-escaped, and its auth field holds
//     base64("user:token"));
//   - the inner base64 of those inner base64 forms: a base64-encoded blob
//     (a Secret's Data in a JSON log) holding a base64 field (the
//     dockerconfig's auth) holds the secret encoded twice.
//
// Each shape also appears byte-wise, as a logger prints a []byte holding
// the document: hex, lower and upper case (%x, %X), the decimal byte lists
// of %v and of a JSON array (funcr), and %#v's 0x.. byte list.
//
// These are forms of the whole secret only: a secret cut short (a
// truncated message) is not searched for.
func Forms(secret string) []Form {
	if len(secret) < MinLen {
		return nil
	}
	var fs formSet
	fs.add("plain", secret)
	fs.add("Go-quoted (%q)", unquote(strconv.Quote(secret)))
	fs.add("Go-quoted, ASCII only (%+q)", unquote(strconv.QuoteToASCII(secret)))
	jsonSafe := jsonEscape(secret, true)
	jsonRaw := jsonEscape(secret, false)
	fs.add("JSON-escaped", jsonSafe)
	fs.add("JSON-escaped without HTML escaping", jsonRaw)
	fs.add("JSON-escaped twice", jsonEscape(jsonSafe, true))
	fs.add("URL query-escaped", url.QueryEscape(secret))
	fs.add("URL path-escaped", url.PathEscape(secret))

	b := []byte(secret)
	for _, a := range alphabets {
		fs.add(a.name+" of the secret alone, padded", a.enc.WithPadding(base64.StdPadding).EncodeToString(b))
		fs.add(a.name+" of the secret alone", a.enc.EncodeToString(b))
	}
	for _, in := range []struct{ what, text string }{
		{"", secret},
		{" of the JSON-escaped secret", jsonSafe},
		{" of the JSON-escaped secret without HTML escaping", jsonRaw},
	} {
		for _, a := range alphabets {
			for k := range 3 {
				fs.add(fmt.Sprintf("%s at byte alignment %d%s", a.name, k, in.what), Base64Core(a.enc, in.text, k))
			}
		}
	}
	for _, inner := range alphabets {
		for ki := range 3 {
			core := Base64Core(inner.enc, secret, ki)
			for _, outer := range alphabets {
				for ko := range 3 {
					fs.add(fmt.Sprintf("%s at byte alignment %d of %s at byte alignment %d", outer.name, ko, inner.name, ki),
						Base64Core(outer.enc, core, ko))
				}
			}
		}
	}

	// The same shapes in the bytes of a document a logger prints.
	shapes := fs.forms
	for _, f := range shapes {
		b := []byte(f.Text)
		fs.add("hex (%x) of "+f.Name, hex.EncodeToString(b))
		fs.add("upper-case hex (%X) of "+f.Name, strings.ToUpper(hex.EncodeToString(b)))
		fs.add("decimal bytes (%v of a []byte) of "+f.Name, byteList(b, " ", "%d"))
		fs.add("comma-separated decimal bytes (a JSON array, funcr) of "+f.Name, byteList(b, ",", "%d"))
		fs.add("hex bytes (%#v of a []byte) of "+f.Name, byteList(b, ", ", "0x%02x"))
	}
	return fs.forms
}

// Base64Core returns the characters that every encoding, with enc's
// alphabet, of a byte string holding s at an offset ≡ alignment (mod 3)
// contains, whatever the bytes around s: the encoding of s with the
// characters that mix in the neighbouring bytes trimmed at both ends.
//
// Base64 maps each group of 3 bytes to 4 characters. With s starting at
// byte 1 of a group, the group's first character is the byte before s
// alone, its second mixes that byte with s; with s starting at byte 2 the
// group's third character mixes too. So 0, 2 or 3 leading characters go.
// At the end, a character is kept only when all 6 of its bits come from s:
// the first ⌊8n/6⌋ characters of the n bytes (alignment + len(s)).
func Base64Core(enc *base64.Encoding, s string, alignment int) string {
	k := alignment % 3
	buf := make([]byte, k+len(s))
	copy(buf[k:], s)
	encoded := enc.WithPadding(base64.NoPadding).EncodeToString(buf)
	start, end := [3]int{0, 2, 3}[k], 8*len(buf)/6
	if end <= start {
		return ""
	}
	return encoded[start:end]
}

// formSet collects forms, dropping duplicates and short ones.
type formSet struct {
	forms []Form
	seen  map[string]bool
}

func (fs *formSet) add(name, text string) {
	if len(text) < MinLen || fs.seen[text] {
		return
	}
	if fs.seen == nil {
		fs.seen = map[string]bool{}
	}
	fs.seen[text] = true
	fs.forms = append(fs.forms, Form{Name: name, Text: text})
}

// jsonEscape is s as a JSON string holds it, without the quotes.
func jsonEscape(s string, htmlSafe bool) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(htmlSafe)
	if err := enc.Encode(s); err != nil {
		return s // a string always encodes
	}
	return unquote(strings.TrimSuffix(buf.String(), "\n"))
}

// unquote drops the quotes around a quoted string (not its escapes).
func unquote(q string) string {
	if len(q) >= 2 {
		return q[1 : len(q)-1]
	}
	return q
}

func byteList(b []byte, sep, format string) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf(format, c)
	}
	return strings.Join(parts, sep)
}

// Finding is a secret found in a text, in one form.
type Finding struct {
	// Secret is the index of the secret among Find's arguments.
	Secret int
	// Form is the name of the form it was found in (Form.Name).
	Form string
	// Offset and Line (1-based) place its first occurrence in the text.
	Offset, Line int
	// Count is the number of its occurrences in this form.
	Count int
	// Hint is the secret redacted (see Redact), to tell secrets apart.
	Hint string
}

// String describes the finding without the secret or its encoded form.
func (f Finding) String() string {
	return fmt.Sprintf("secret #%d (%s) %s at line %d, byte %d (%d occurrences)",
		f.Secret, f.Hint, f.Form, f.Line, f.Offset, f.Count)
}

// Find searches text for every form of each secret and reports each form
// found, by secret in argument order and, for one secret, in the order of
// Forms. An occurrence inside a longer one already reported for the same
// secret (the inner base64 inside the full encoding) is not reported
// again. Secrets shorter than MinLen are not searched for.
//
// The text is read once whatever the number of forms: each position is
// looked up by its next MinLen bytes among the forms' first MinLen bytes.
func Find(text string, secrets ...string) []Finding {
	type pattern struct{ secret, form int }
	forms := make([][]Form, len(secrets))
	byHead := map[string][]pattern{}
	for i, secret := range secrets {
		forms[i] = Forms(secret)
		for j, f := range forms[i] {
			head := f.Text[:MinLen]
			byHead[head] = append(byHead[head], pattern{i, j})
		}
	}
	// found[secret][form] are the offsets of that form of that secret.
	found := make([]map[int][]int, len(secrets))
	for at := 0; at+MinLen <= len(text); at++ {
		for _, p := range byHead[text[at:at+MinLen]] {
			if strings.HasPrefix(text[at:], forms[p.secret][p.form].Text) {
				if found[p.secret] == nil {
					found[p.secret] = map[int][]int{}
				}
				found[p.secret][p.form] = append(found[p.secret][p.form], at)
			}
		}
	}
	var out []Finding
	for i, byForm := range found {
		var spans [][2]int // reported occurrences of this secret
		for j, form := range forms[i] {
			f := Finding{Secret: i, Form: form.Name, Hint: Redact(secrets[i])}
			for _, start := range byForm[j] {
				end := start + len(form.Text)
				if within(spans, start, end) {
					continue
				}
				spans = append(spans, [2]int{start, end})
				if f.Count == 0 {
					f.Offset, f.Line = start, 1+strings.Count(text[:start], "\n")
				}
				f.Count++
			}
			if f.Count > 0 {
				out = append(out, f)
			}
		}
	}
	return out
}

// within reports whether [start, end) lies inside one of spans.
func within(spans [][2]int, start, end int) bool {
	for _, s := range spans {
		if s[0] <= start && end <= s[1] {
			return true
		}
	}
	return false
}

// Redact shows a secret's first few characters (at most 4, a sixth of it)
// and its length, enough to tell the secrets of a test apart.
func Redact(secret string) string {
	n := min(4, len(secret)/6)
	return fmt.Sprintf("%q… %d bytes", secret[:n], len(secret))
}
