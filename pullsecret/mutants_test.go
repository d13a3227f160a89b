package pullsecret

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
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
	log, logs := recordingLog()
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
	if got := logs(); !strings.Contains(got, "artifactory-pull") {
		t.Errorf("the given logger saw nothing of the deletion:\n%s", got)
	}
}

// At its refresh point exactly a Secret is looked at again by the retry
// schedule, not at once.
func TestNextLookAtTheRefreshPointWaitsForTheRetry(t *testing.T) {
	h := newRefresherHarness(t, true, namespaceWith(optedInLabels))
	h.retry.next = h.now.Add(40 * time.Second)
	if d := h.r.nextLook(newTarget(instance(), credentials.Identity{}), SyncResult{RefreshAt: h.now}); d != 40*time.Second {
		t.Errorf("nextLook at the refresh point = %s, want the retry's 40s", d)
	}
	if d := h.r.nextLook(newTarget(instance(), credentials.Identity{}), SyncResult{RefreshAt: h.now.Add(time.Minute)}); d != time.Minute+refreshSlack {
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

// carries is Sync's fast path: it must say yes to exactly the Secret Sync
// would write, and no to any difference a write would fix.
func TestCarriesIsExactlyWhatSyncWouldWrite(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{})
	cred := credAt(t0, rawToken)
	tg := newTarget(instance(), credentials.Identity{})
	exact := func() *corev1.Secret {
		s, err := h.store.build(ns, tg, cred)
		if err != nil {
			t.Fatal(err)
		}
		return asCached(t, s)
	}
	if !h.store.carries(exact(), tg, cred) {
		t.Fatal("carries refused the very Secret Sync would write")
	}
	for name, edit := range map[string]func(*corev1.Secret){
		"type":        func(s *corev1.Secret) { s.Type = corev1.SecretTypeOpaque },
		"not ours":    func(s *corev1.Secret) { s.Annotations[AnnotationInstallation] = "other-release" },
		"instance":    func(s *corev1.Secret) { s.Annotations[AnnotationInstance] = "other" },
		"identity":    func(s *corev1.Secret) { s.Annotations[AnnotationIdentity] = "role:x" },
		"fingerprint": func(s *corev1.Secret) { s.Annotations[AnnotationFingerprint] = "old" },
		"hosts":       func(s *corev1.Secret) { s.Annotations[AnnotationHosts] = "old.example" },
		"issued":      func(s *corev1.Secret) { s.Annotations[AnnotationIssuedAt] = formatTime(t0.Add(-time.Hour)) },
		"expires":     func(s *corev1.Secret) { s.Annotations[AnnotationExpiresAt] = formatTime(t0.Add(2 * time.Hour)) },
		"data":        func(s *corev1.Secret) { s.Annotations[AnnotationDataSHA256] = "edited" },
	} {
		s := exact()
		edit(s)
		if h.store.carries(s, tg, cred) {
			t.Errorf("carries accepted a Secret whose %s differs", name)
		}
	}
	// The memoized digest follows the hosts and the credential.
	pullOf := func(in config.Instance) target { return newTarget(in, credentials.Identity{}) }
	d1, _ := h.store.digestFor(pullOf(instance()), cred)
	other := instance()
	other.RegistryHosts = []string{"other.example"}
	d2, _ := h.store.digestFor(pullOf(other), cred)
	d3, _ := h.store.digestFor(pullOf(instance()), credAt(t0, "another-token"))
	d4, _ := h.store.digestFor(pullOf(instance()), cred)
	withToken := instance()
	withToken.TokenSecretName = "artifactory-token"
	d5, _ := h.store.digestFor(newTokenTarget(withToken), cred)
	if d6, _ := h.store.digestFor(pullOf(instance()), cred); d5 == d1 || d6 != d1 {
		t.Errorf("the token Secret's digest %q and the pull Secret's %q share a memo (again %q)", d5, d1, d6)
	}
	if d1 == d2 || d1 == d3 || d1 != d4 {
		t.Errorf("digests %s %s %s %s: want new hosts and a new token to change it, and the same input to keep it", d1, d2, d3, d4)
	}
}

func TestSameContentComparesTypeLabelAnnotationsAndData(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{})
	desired, err := h.store.build(ns, newTarget(instance(), credentials.Identity{}), credAt(t0, rawToken))
	if err != nil {
		t.Fatal(err)
	}
	if !sameContent(asCached(t, desired), desired) {
		t.Fatal("sameContent refused the Secret itself")
	}
	for name, edit := range map[string]func(*corev1.Secret){
		"type":       func(s *corev1.Secret) { s.Type = corev1.SecretTypeOpaque },
		"label":      func(s *corev1.Secret) { delete(s.Labels, ManagedByLabel) },
		"annotation": func(s *corev1.Secret) { s.Annotations[AnnotationExpiresAt] = "x" },
		"data":       func(s *corev1.Secret) { s.Annotations[AnnotationDataSHA256] = "edited" },
	} {
		cur := asCached(t, desired)
		edit(cur)
		if sameContent(cur, desired) {
			t.Errorf("sameContent accepted a Secret whose %s differs", name)
		}
	}
}

// withFallbackTime stops waiting a quarter of the time left before the
// deadline, at most 500ms before it.
func TestWithFallbackTimeLeavesAQuarterUpTo500ms(t *testing.T) {
	for _, left := range []time.Duration{time.Second, 10 * time.Second} {
		parent, cancel := context.WithTimeout(context.Background(), left)
		dl, _ := parent.Deadline()
		want := min(500*time.Millisecond, time.Until(dl)/4)
		ctx, cancel2 := withFallbackTime(parent)
		got, _ := ctx.Deadline()
		cancel2()
		cancel()
		// Time passing between the two reads only shrinks the margin.
		if m := dl.Sub(got); m > want || m < want-50*time.Millisecond {
			t.Errorf("%s left: margin %s, want about %s", left, m, want)
		}
	}
}

// The refresh threshold given is kept; only one outside (0, 1) is replaced
// by the default.
func TestStoreKeepsAValidRefreshThreshold(t *testing.T) {
	tg := newTarget(instance(), credentials.Identity{})
	sec := managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts) // 1h, issued at t0
	for _, tc := range []struct {
		threshold float64
		at        time.Duration
		fresh     bool
	}{
		{0.5, 29 * time.Minute, true}, {0.5, 31 * time.Minute, false}, // refresh at 30 min
		{0, 44 * time.Minute, true}, {0, 46 * time.Minute, false}, // default 0.25: at 45 min
		{1, 44 * time.Minute, true}, // 1 is out of range: the default, not "refresh at once"
	} {
		now := t0.Add(tc.at)
		s := NewStore(Options{Fingerprints: testPrints, RefreshThreshold: tc.threshold, Now: func() time.Time { return now }})
		if got := s.fresh(sec, tg); got != tc.fresh {
			t.Errorf("threshold %v at %s: fresh = %v, want %v", tc.threshold, tc.at, got, tc.fresh)
		}
	}
}

// asCached is s as the informer cache holds it: data reduced to its digest.
func asCached(t *testing.T, s *corev1.Secret) *corev1.Secret {
	t.Helper()
	r, err := SecretTransform()(s.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	return r.(*corev1.Secret).DeepCopy()
}

func TestSecretNameOfExactlyTheMaximumIsKept(t *testing.T) {
	inst := instance() // secretName artifactory-pull: 17 characters with the dash
	sa := strings.Repeat("s", 253-len(inst.SecretName)-1)
	if got := SecretName(inst, credentials.Identity{RoleARN: teamRole, Namespace: ns, ServiceAccount: sa}); got != inst.SecretName+"-"+sa {
		t.Errorf("a 253-character name was changed to %q", got)
	}
}

func TestStoreLogsToTheGivenLogger(t *testing.T) {
	log, logs := recordingLog()
	h := newHarness(t, interceptor.Funcs{})
	h.store = NewStore(Options{Reader: managedOnly{h.api}, Writer: h.api, Tokens: h.tokens, Fingerprints: testPrints, Log: log,
		Now: func() time.Time { return h.now }})
	if _, err := h.store.Ensure(context.Background(), ns, instance(), false); err != nil {
		t.Fatal(err)
	}
	if got := logs(); !strings.Contains(got, "wrote pull secret") {
		t.Errorf("the given logger saw nothing of the write:\n%s", got)
	}
}

func TestDigestMemoFollowsTheUsername(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{})
	cred := credAt(t0, rawToken)
	other := cred
	other.Username = "another-user"
	d1, _ := h.store.digestFor(newTarget(instance(), credentials.Identity{}), cred)
	d2, _ := h.store.digestFor(newTarget(instance(), credentials.Identity{}), other)
	if d1 == d2 {
		t.Error("the digest memo ignored a new username")
	}
}

// recordingLog is a logger that keeps every line, and what it kept so far.
func recordingLog() (logr.Logger, func() string) {
	var mu sync.Mutex
	var b strings.Builder
	log := funcr.New(func(_, args string) {
		mu.Lock()
		defer mu.Unlock()
		b.WriteString(args + "\n")
	}, funcr.Options{})
	return log, func() string {
		mu.Lock()
		defer mu.Unlock()
		return b.String()
	}
}
