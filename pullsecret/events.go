package pullsecret

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// MaxEventNote is the longest note the API server accepts in an Event
// (events.k8s.io/v1 validation: 1 KiB); a longer one is rejected whole, and
// the Event with it.
const MaxEventNote = 1024

// CleanText makes s safe for an admission warning or an Event: invalid
// UTF-8 and every control character (the API server drops a warning that
// holds one) become spaces.
func CleanText(s string) string {
	s = strings.ToValidUTF8(s, " ")
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// Truncate shortens s to at most n bytes on a rune boundary, ending in "…"
// when it cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	if n < len(ellipsis) {
		return ""
	}
	cut := n - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// WithFix is text (a warning, an Event note) followed by the short fix
// credentials.Explain gives for err, if any. text is cut, not the fix, so
// that the fix survives an Event note's limit: text ends with the error
// body, the least needed part.
func WithFix(text string, err error, limit int) string {
	text = CleanText(text)
	h, ok := credentials.Explain(err, "")
	if !ok {
		return Truncate(text, limit)
	}
	fix := Truncate("; "+CleanText(h.ShortFix()), limit/2) // never all of it
	return Truncate(text, limit-len(fix)) + fix
}

// FixFirst is an admission warning: head, the short fix credentials.Explain
// gives for err in parentheses, then err; cut at limit from the end. The
// API server cuts every warning of a response to 256 characters once they
// add up to more than 4 KiB (other webhooks' and Pod Security's count
// too): the fix must come before the error body.
func FixFirst(head string, err error, limit int) string {
	if h, ok := credentials.Explain(err, ""); ok {
		head += " (" + h.ShortFix() + ")"
	}
	return Truncate(CleanText(head+": "+err.Error()), limit)
}

// FittingNotes wraps an Event recorder so that every note is cleaned and
// cut to MaxEventNote: an error body from Artifactory or a proxy (1 KiB on
// its own, plus the wrapping) then still arrives as an Event.
func FittingNotes(r events.EventRecorder) events.EventRecorder {
	if r == nil {
		return nil
	}
	return fittingNotes{r}
}

type fittingNotes struct{ events.EventRecorder }

func (f fittingNotes) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	f.EventRecorder.Eventf(regarding, related, eventtype, reason, action, "%s",
		Truncate(CleanText(fmt.Sprintf(note, args...)), MaxEventNote))
}
