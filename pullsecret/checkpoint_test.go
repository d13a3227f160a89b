package pullsecret

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

const webhookNS = "artifactory-pull-webhook"

var (
	acmeKey  = credentials.Key{Instance: "acme", Identity: credentials.WebhookIdentity}
	otherKey = credentials.Key{Instance: "other", Identity: credentials.WebhookIdentity}
)

// checkpointHarness is a Checkpoint on a fake API server that counts the
// writes (create, update) of the checkpoint Secret.
type checkpointHarness struct {
	cp     *Checkpoint
	api    client.WithWatch
	writes atomic.Int32
	now    time.Time
	logs   *strings.Builder
}

func newCheckpointHarness(t *testing.T, funcs interceptor.Funcs, objs ...client.Object) *checkpointHarness {
	t.Helper()
	h := &checkpointHarness{api: fake.NewClientBuilder().WithObjects(objs...).Build(), now: t0, logs: &strings.Builder{}}
	var mu sync.Mutex
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		h.logs.WriteString(args + "\n")
	}, funcr.Options{Verbosity: 1})
	writer := interceptor.NewClient(h.api, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			h.writes.Add(1)
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			h.writes.Add(1)
			if funcs.Update != nil {
				return funcs.Update(ctx, c, obj, opts...)
			}
			return c.Update(ctx, obj, opts...)
		},
	})
	cp, err := NewCheckpoint(CheckpointOptions{Client: writer, Namespace: webhookNS, Now: func() time.Time { return h.now }, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	h.cp = cp
	return h
}

func (h *checkpointHarness) secret(t *testing.T) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := h.api.Get(context.Background(), client.ObjectKey{Namespace: webhookNS, Name: DefaultCheckpointSecret}, &s); err != nil {
		t.Fatalf("reading the checkpoint: %v", err)
	}
	return &s
}

// checkpointWith is a checkpoint Secret holding creds, as the webhook
// writes it.
func checkpointWith(t *testing.T, creds map[credentials.Key]credentials.Credential) *corev1.Secret {
	t.Helper()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: DefaultCheckpointSecret, Namespace: webhookNS,
		Labels: map[string]string{CheckpointLabel: checkpointValue}}, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{}}
	for k, c := range creds {
		b, err := encodeEntry(k, c)
		if err != nil {
			t.Fatal(err)
		}
		sec.Data[entryKey(k)] = b
	}
	return sec
}

func TestSeedTrustsTheCheckpointAndNeverATenantSecret(t *testing.T) {
	real := credAt(t0.Add(-10*time.Minute), rawToken)
	// A tenant who may edit Secrets in an opted-in namespace plants a
	// managed Secret with its own token and a far expiry.
	planted := managedSecret(t, credentials.Credential{Username: "attacker", Token: credentials.NewToken("planted-token"),
		IssuedAt: t0.Add(-time.Minute), Expiry: t0.Add(10 * 365 * 24 * time.Hour)}, instance().RegistryHosts)
	expired := credAt(t0.Add(-2*time.Hour), "expired-token")
	h := newCheckpointHarness(t, interceptor.Funcs{},
		checkpointWith(t, map[credentials.Key]credentials.Credential{acmeKey: real, otherKey: expired}), planted)
	tokens := &fakeTokens{}

	if err := h.cp.Seed(context.Background(), tokens); err != nil {
		t.Fatal(err)
	}
	if len(tokens.seeded) != 1 {
		t.Fatalf("seeded %d credentials, want only the checkpoint's unexpired one", len(tokens.seeded))
	}
	got := tokens.seeded[acmeKey]
	if got.Token.Reveal() != rawToken || !got.Expiry.Equal(real.Expiry) || got.Username != user {
		t.Errorf("seeded %s token expiring %s, want the checkpoint's (expiring %s), not the planted one",
			got.Username, got.Expiry, real.Expiry)
	}
}

func TestSeedWithoutCheckpointSeedsNothing(t *testing.T) {
	planted := managedSecret(t, credAt(t0, "planted-token"), instance().RegistryHosts)
	h := newCheckpointHarness(t, interceptor.Funcs{}, planted)
	tokens := &fakeTokens{}
	if err := h.cp.Seed(context.Background(), tokens); err != nil {
		t.Fatal(err)
	}
	if len(tokens.seeded) != 0 {
		t.Errorf("seeded %v from managed Secrets; only the checkpoint may seed", tokens.seeded)
	}
}

func TestCheckpointIsWrittenOncePerMint(t *testing.T) {
	h := newCheckpointHarness(t, interceptor.Funcs{})
	var mints atomic.Int32
	cache := credentials.NewCache(func(context.Context, credentials.Key) (credentials.Credential, error) {
		n := mints.Add(1)
		return credAt(h.now, "token-"+string(rune('0'+n))), nil
	}, credentials.CacheOptions{Now: func() time.Time { return h.now }, OnMint: h.cp.Record})
	ctx := context.Background()
	get := func() {
		t.Helper()
		if _, err := cache.Get(ctx, acmeKey); err != nil {
			t.Fatal(err)
		}
		h.cp.flush(ctx) // what Start does when woken
	}

	get() // mint: creates the checkpoint
	get() // cache hit: nothing to write
	h.now = h.now.Add(50 * time.Minute)
	get() // due: mints again, one update

	if m, w := mints.Load(), h.writes.Load(); m != 2 || w != 2 {
		t.Errorf("mints = %d, checkpoint writes = %d; want one write per mint (2 and 2)", m, w)
	}
	got, err := h.cp.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := got[acmeKey]; c.Token.Reveal() != "token-2" || !c.Expiry.Equal(h.now.Add(time.Hour)) {
		t.Errorf("checkpoint holds a token expiring %s, want the latest mint's", c.Expiry)
	}
	if s := h.secret(t); s.Type != corev1.SecretTypeOpaque || s.Labels[CheckpointLabel] != checkpointValue ||
		s.Labels[ManagedByLabel] != "" {
		t.Errorf("checkpoint type %s labels %v: want Opaque, its own label and never the managed-by label", s.Type, s.Labels)
	}
}

func TestCheckpointCoalescesABurstOfMintsIntoOneWrite(t *testing.T) {
	h := newCheckpointHarness(t, interceptor.Funcs{})
	h.cp.Record(acmeKey, credAt(t0, "first"))
	h.cp.Record(otherKey, credAt(t0, "other"))
	h.cp.Record(acmeKey, credAt(t0.Add(time.Minute), "second"))
	h.cp.flush(context.Background())

	if w := h.writes.Load(); w != 1 {
		t.Errorf("checkpoint writes = %d, want 1 for the whole burst", w)
	}
	got, err := h.cp.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[acmeKey].Token.Reveal() != "second" || got[otherKey].Token.Reveal() != "other" {
		t.Errorf("checkpoint holds %d entries, want both keys with acme's latest token", len(got))
	}
}

func TestCheckpointMergesWithAnotherReplicaAfterAConflict(t *testing.T) {
	conflicts := 1
	theirs := credAt(t0.Add(5*time.Minute), "their-newer-token")
	h := newCheckpointHarness(t, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if conflicts > 0 { // the other replica wrote meanwhile
				conflicts--
				cur := checkpointWith(t, map[credentials.Key]credentials.Credential{acmeKey: theirs})
				if err := c.Get(ctx, client.ObjectKeyFromObject(cur), &corev1.Secret{}); err != nil {
					return err
				}
				if err := c.Update(ctx, cur); err != nil {
					return err
				}
				return apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, obj.GetName(), errors.New("changed"))
			}
			return c.Update(ctx, obj, opts...)
		},
	}, checkpointWith(t, map[credentials.Key]credentials.Credential{otherKey: credAt(t0, "other")}))
	h.cp.Record(acmeKey, credAt(t0, "our-older-token"))
	h.cp.flush(context.Background())

	got, err := h.cp.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got[acmeKey].Token.Reveal() != "their-newer-token" {
		t.Error("the retry replaced the other replica's later-expiring token with an older one")
	}
	if strings.Contains(h.logs.String(), "could not write") {
		t.Errorf("a conflict was not retried:\n%s", h.logs.String())
	}
}

func TestCheckpointStartFlushesWhatIsQueuedOnShutdown(t *testing.T) {
	h := newCheckpointHarness(t, interceptor.Funcs{})
	h.cp.Record(acmeKey, credAt(t0, rawToken))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.cp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := h.cp.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got[acmeKey].Token.Reveal() != rawToken {
		t.Error("the token recorded before shutdown was not written")
	}
}

func TestCheckpointIgnoresAndKeepsASecretItDoesNotOwn(t *testing.T) {
	foreign := checkpointWith(t, map[credentials.Key]credentials.Credential{acmeKey: credAt(t0, "foreign")})
	foreign.Labels = nil
	h := newCheckpointHarness(t, interceptor.Funcs{}, foreign)
	tokens := &fakeTokens{}
	if err := h.cp.Seed(context.Background(), tokens); err == nil || len(tokens.seeded) != 0 {
		t.Errorf("seeding from an unlabelled Secret: err %v, seeded %d; want an error and nothing seeded", err, len(tokens.seeded))
	}
	h.cp.Record(acmeKey, credAt(t0, rawToken))
	h.cp.flush(context.Background())
	if w := h.writes.Load(); w != 0 {
		t.Errorf("wrote %d times over a Secret without the checkpoint label", w)
	}
}

func TestCheckpointWriteFailureIsLoggedWithoutTokenAndRetriedWithTheNextMint(t *testing.T) {
	fail := true
	h := newCheckpointHarness(t, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if fail {
				sec := obj.(*corev1.Secret)
				return apierrors.NewInvalid(schema.GroupKind{Kind: "Secret"}, sec.Name,
					field.ErrorList{field.Invalid(field.NewPath("data"), string(sec.Data[entryKey(acmeKey)]), "refused")})
			}
			return c.Update(ctx, obj, opts...)
		},
	}, checkpointWith(t, nil))
	h.cp.Record(acmeKey, credAt(t0, rawToken))
	h.cp.flush(context.Background())
	if logs := h.logs.String(); !strings.Contains(logs, "could not write the token checkpoint") || strings.Contains(logs, rawToken) {
		t.Errorf("failure log missing or leaking the token:\n%s", logs)
	}

	fail = false
	h.cp.Record(otherKey, credAt(t0, "other"))
	h.cp.flush(context.Background())
	got, err := h.cp.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got[acmeKey].Token.Reveal() != rawToken || got[otherKey].Token.Reveal() != "other" {
		t.Errorf("after recovery the checkpoint holds %d entries, want the failed one and the new one", len(got))
	}
}

func TestAdoptReturnsTheCheckpointedTokenOfTheKeyOnly(t *testing.T) {
	minted := credAt(t0.Add(-10*time.Minute), rawToken)
	h := newCheckpointHarness(t, interceptor.Funcs{},
		checkpointWith(t, map[credentials.Key]credentials.Credential{acmeKey: minted}))
	got, ok := h.cp.Adopt(context.Background(), acmeKey)
	if !ok || got.Token.Reveal() != rawToken || !got.Expiry.Equal(minted.Expiry) {
		t.Fatalf("Adopt(acme) = %v, %v; want the checkpointed token", got.Expiry, ok)
	}
	if _, ok := h.cp.Adopt(context.Background(), otherKey); ok {
		t.Error("Adopt returned a token for a key the checkpoint does not hold")
	}

	failing, err := NewCheckpoint(CheckpointOptions{Namespace: webhookNS, Client: interceptor.NewClient(
		fake.NewClientBuilder().Build(), interceptor.Funcs{Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return apierrors.NewTooManyRequests("slow down", 1)
		}})})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := failing.Adopt(context.Background(), acmeKey); ok {
		t.Error("Adopt returned a token although the checkpoint could not be read")
	}
}

// An expired entry is never adopted, and Adopt logs nothing about entries
// of other keys or configurations (Load reports those once, at start).
func TestAdoptSkipsExpiredEntriesAndIsQuietAboutOthers(t *testing.T) {
	expired := credAt(t0.Add(-2*time.Hour), rawToken)
	other := credAt(t0, rawToken)
	h := newCheckpointHarness(t, interceptor.Funcs{},
		checkpointWith(t, map[credentials.Key]credentials.Credential{acmeKey: expired, otherKey: other}))
	if _, ok := h.cp.Adopt(context.Background(), acmeKey); ok {
		t.Error("Adopt returned an expired token")
	}
	// otherKey is of an earlier configuration for a Checkpoint of acme only.
	cp, err := NewCheckpoint(CheckpointOptions{Client: h.api, Namespace: webhookNS, Keys: []credentials.Key{acmeKey},
		Now: func() time.Time { return h.now }, Log: h.cp.log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Load(context.Background()); err != nil || !strings.Contains(h.logs.String(), "dropping") {
		t.Fatalf("Load: %v; it should log the entry of an earlier configuration, or this test proves nothing:\n%s", err, h.logs.String())
	}
	h.logs.Reset()
	if _, ok := cp.Adopt(context.Background(), acmeKey); ok {
		t.Error("Adopt returned an expired token")
	}
	if strings.Contains(h.logs.String(), "dropping") || strings.Contains(h.logs.String(), "skipping") {
		t.Errorf("Adopt logged about other entries:\n%s", h.logs.String())
	}
}

// The roles of ServiceAccounts are not known in advance: Roles says which
// keys beside Keys belong to the running configuration.
func TestCheckpointKeepsTheRoleKeysRolesAccepts(t *testing.T) {
	role := credentials.Identity{RoleARN: "arn:aws:iam::123456789012:role/team-a-puller", Namespace: ns, ServiceAccount: "api"}
	roleKey := role.Key(acmeKey.Instance, acmeKey.Fingerprint)
	other := role
	other.RoleARN = "arn:aws:iam::123456789012:role/team-b-puller"
	staleRole := other.Key(acmeKey.Instance, "old-fingerprint") // written under an earlier configuration
	cred := credAt(t0.Add(-10*time.Minute), rawToken)
	h := newCheckpointHarness(t, interceptor.Funcs{},
		checkpointWith(t, map[credentials.Key]credentials.Credential{acmeKey: cred, roleKey: cred, staleRole: cred}))
	cp, err := NewCheckpoint(CheckpointOptions{Client: h.api, Namespace: webhookNS, Now: func() time.Time { return h.now },
		Keys:  []credentials.Key{acmeKey},
		Roles: func(k credentials.Key) bool { return k.Fingerprint == acmeKey.Fingerprint },
	})
	if err != nil {
		t.Fatal(err)
	}
	tokens := &fakeTokens{}
	if err := cp.Seed(context.Background(), tokens); err != nil {
		t.Fatal(err)
	}
	if _, ok := tokens.seeded[roleKey]; !ok || len(tokens.seeded) != 2 {
		t.Errorf("seeded %v, want the instance's key and the role's of the current fingerprint", slices.Collect(maps.Keys(tokens.seeded)))
	}
}
