package pullsecret

import (
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr/funcr"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// Tests that pin behaviour the mutation run (make mutation) found unpinned.

func TestTruncateAtItsBounds(t *testing.T) {
	if got := Truncate("abcd", 4); got != "abcd" {
		t.Errorf("Truncate at the limit = %q", got)
	}
	if got := Truncate("abcdefgh", 6); got != "abc…" {
		t.Errorf("Truncate past the limit = %q", got)
	}
	// "…" is 3 bytes: a cut at byte 3 of "aaé…" would split the é.
	if got := Truncate("aaéééé", 6); !utf8.ValidString(got) || len(got) > 6 {
		t.Errorf("Truncate split a rune or overran: %q", got)
	}
}

// The README documents one checkpoint entry per "<instance>.<identity>";
// identities a Secret key cannot hold (a role ARN) get a stable digest.
func TestCheckpointEntryNames(t *testing.T) {
	if got := entryKey(credentials.Key{Instance: "acme", Identity: credentials.WebhookIdentity, Fingerprint: "fp"}); got != "acme.webhook" {
		t.Errorf("webhook entry = %q, want acme.webhook", got)
	}
	roleA := credentials.Identity{RoleARN: "arn:aws:iam::123456789012:role/a"}.Key("acme", "fp")
	roleB := credentials.Identity{RoleARN: "arn:aws:iam::123456789012:role/b"}.Key("acme", "fp")
	a, b := entryKey(roleA), entryKey(roleB)
	if !regexp.MustCompile(`^acme\.[0-9a-f]{16}$`).MatchString(a) || a == b || a != entryKey(roleA) {
		t.Errorf("role entries %q, %q: want acme.<16 hex>, distinct and stable", a, b)
	}
}

// A refresher given a logger logs to it.
func TestRefresherLogsToTheGivenLogger(t *testing.T) {
	var mu sync.Mutex
	var logs strings.Builder
	log := funcr.New(func(_, args string) {
		mu.Lock()
		defer mu.Unlock()
		logs.WriteString(args + "\n")
	}, funcr.Options{})
	h := newHarness(t, interceptor.Funcs{}, namespaceWith(nil), managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts))
	cleanup := true
	r, err := NewRefresher(RefresherOptions{
		Config: &config.Config{Instances: []config.Instance{instance()}, NamespaceLabel: config.DefaultNamespaceLabel, CleanupOnOptOut: &cleanup},
		Store:  h.store, Reader: informerCache{h.api}, Retry: &fakeRetry{}, Log: log, Now: func() time.Time { return h.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	rh := &refresherHarness{harness: h, r: r}
	rh.reconcile(t) // the namespace opted out: the Secret is deleted, and that is logged
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "artifactory-pull") {
		t.Errorf("the given logger saw nothing of the deletion:\n%s", logs.String())
	}
}

// At its refresh point exactly a Secret is looked at again by the retry
// schedule, not at once.
func TestNextLookAtTheRefreshPointWaitsForTheRetry(t *testing.T) {
	h := newRefresherHarness(t, true, namespaceWith(optedInLabels))
	h.retry.next = h.now.Add(40 * time.Second)
	if d := h.r.nextLook(instance(), SyncResult{RefreshAt: h.now}); d != 40*time.Second {
		t.Errorf("nextLook at the refresh point = %s, want the retry's 40s", d)
	}
	if d := h.r.nextLook(instance(), SyncResult{RefreshAt: h.now.Add(time.Minute)}); d != time.Minute+refreshSlack {
		t.Errorf("nextLook a minute before = %s, want a minute and the slack", d)
	}
}

func TestInstanceNamedFindsOnlyThatInstance(t *testing.T) {
	h := newRefresherHarness(t, true)
	if in, ok := h.r.instanceNamed(instance().Name); !ok || in.Name != instance().Name {
		t.Errorf("instanceNamed(%q) = %q, %v", instance().Name, in.Name, ok)
	}
	if _, ok := h.r.instanceNamed("gone"); ok {
		t.Error("instanceNamed found an instance that is not configured")
	}
}
