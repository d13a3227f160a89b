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
}
