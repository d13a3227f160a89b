package pullsecret

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/tools/events"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

func TestCleanTextMakesWarningsTheAPIServerAccepts(t *testing.T) {
	raw := "exchange failed: HTTP 500: upstream \x1b[31mfailed\x1b[0m\x00\v\x7f\r\n tab\there \xff\xfe end"
	if _, err := utilnet.NewWarningHeader(299, "-", raw); err == nil {
		t.Fatal("precondition: the API server's warning header accepts control characters")
	}
	clean := CleanText(raw)
	if _, err := utilnet.NewWarningHeader(299, "-", clean); err != nil {
		t.Errorf("cleaned warning %q is still refused: %v", clean, err)
	}
	if !strings.Contains(clean, "upstream  [31mfailed") || !strings.HasSuffix(clean, " end") {
		t.Errorf("cleaned warning %q lost its text", clean)
	}
}

func TestFittingNotesCutsEventNotesToTheAPIServersLimit(t *testing.T) {
	fake := events.NewFakeRecorder(2)
	r := FittingNotes(fake)
	body := strings.Repeat("<p>upstream timeout ü</p>", 200) // 5 KiB, multi-byte runes
	ns := &corev1.Namespace{}
	r.Eventf(ns, nil, corev1.EventTypeWarning, ReasonTokenExchangeFailed, "Exchange", "instance %s: %s", "main", body)
	r.Eventf(ns, nil, corev1.EventTypeWarning, ReasonTokenExchangeFailed, "Exchange", "short %d\x00", 1)
	long, short := <-fake.Events, <-fake.Events
	note := strings.TrimPrefix(long, "Warning "+ReasonTokenExchangeFailed+" ")
	if len(note) > MaxEventNote || !utf8.ValidString(note) || !strings.HasPrefix(note, "instance main: <p>upstream") ||
		!strings.HasSuffix(note, "…") {
		t.Errorf("note of %d bytes (valid UTF-8 %v), want at most %d, cut on a rune with an ellipsis: %.80q…",
			len(note), utf8.ValidString(note), MaxEventNote, note)
	}
	if short != "Warning "+ReasonTokenExchangeFailed+" short 1 " {
		t.Errorf("short note = %q, want it whole, control character replaced", short)
	}
}

func TestWithFixKeepsTheFixWithinTheLimit(t *testing.T) {
	refused := &credentials.ExchangeError{Instance: "main", Host: "a.example", Status: 500, Body: strings.Repeat("x", 2000)}
	got := WithFix("could not refresh: "+refused.Error(), fmt.Errorf("wrapped: %w", refused), MaxEventNote)
	if len(got) > MaxEventNote {
		t.Fatalf("note of %d bytes, limit %d", len(got), MaxEventNote)
	}
	if !strings.HasSuffix(got, "; to fix: check the health of Artifactory's Access service and of any proxy on the way; "+
		"the webhook retries with backoff, and pods keep a still-valid Secret") || !strings.Contains(got, "…; to fix") {
		t.Errorf("WithFix cut the fix, or did not cut the text: %q", got)
	}
	if got := WithFix("plain \x1b[31m and more", errors.New("no hint"), 12); got != "plain  [3…" {
		t.Errorf("without a hint: %q", got)
	}
	// A fix as long as the limit (a role name Artifactory repeats at any
	// length) is cut too, never the whole note, and nothing panics.
	huge := &credentials.ExchangeError{Instance: "main", Host: "a.example", Status: 401, Exchange: credentials.ExchangeAWS,
		Body: "no user is mapped to IAM role arn:aws:iam::123456789012:role/" + strings.Repeat("r", 600)}
	for _, limit := range []int{MaxEventNote, 64, 2} {
		if got := WithFix("pods admitted without the pull secret: "+huge.Error(), huge, limit); len(got) > limit || (limit > 64 && !strings.HasPrefix(got, "pods admitted")) {
			t.Errorf("limit %d: %d bytes %q", limit, len(got), got)
		}
	}
	if got := Truncate("abcdef", 2); got != "" {
		t.Errorf("Truncate below the ellipsis = %q", got)
	}
}

func TestFixFirstPutsTheFixBeforeTheError(t *testing.T) {
	refused := &credentials.ExchangeError{Instance: "main", Host: "a.example", Status: 503, Body: strings.Repeat("y", 900)}
	got := FixFirst("artifactory-pull-webhook: no pull secret for instance main", fmt.Errorf("wrapped: %w", refused), 300)
	if !strings.HasPrefix(got, "artifactory-pull-webhook: no pull secret for instance main (to fix: check the health of Artifactory") || len(got) > 300 {
		t.Errorf("FixFirst = %q (%d bytes)", got, len(got))
	}
	if got := FixFirst("head", errors.New("plain \x00 error"), 100); got != "head: plain   error" {
		t.Errorf("without a hint: %q", got)
	}
}
