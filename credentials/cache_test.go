package credentials

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var errMintDown = errors.New("artifactory down")

var cacheKey = Key{Instance: "main", Identity: WebhookIdentity}

// countingMint mints credentials valid for lifetime from the clock's now.
type countingMint struct {
	clock    *fakeClock
	lifetime time.Duration
	calls    atomic.Int32
	fail     atomic.Bool
}

func (m *countingMint) mint(ctx context.Context, key Key) (Credential, error) {
	m.calls.Add(1)
	if m.fail.Load() {
		return Credential{}, errMintDown
	}
	now := m.clock.Now()
	return Credential{Username: key.Identity, Token: NewToken("tok"), IssuedAt: now, Expiry: now.Add(m.lifetime)}, nil
}

func newTestCache(lifetime time.Duration) (*Cache, *countingMint, *fakeClock) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := &countingMint{clock: clock, lifetime: lifetime}
	return NewCache(m.mint, CacheOptions{Now: clock.Now}), m, clock
}

func TestCacheConcurrentColdGetsMintOnce(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	c := NewCache(func(ctx context.Context, key Key) (Credential, error) {
		calls.Add(1)
		<-release
		return Credential{Token: NewToken("tok"), IssuedAt: time.Now(), Expiry: time.Now().Add(time.Hour)}, nil
	}, CacheOptions{})

	const callers = 1000
	var started, done sync.WaitGroup
	started.Add(callers)
	done.Add(callers)
	errs := make(chan error, callers)
	for range callers {
		go func() {
			defer done.Done()
			started.Done()
			if _, err := c.Get(context.Background(), cacheKey); err != nil {
				errs <- err
			}
		}()
	}
	started.Wait()
	close(release)
	done.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d mints for one cold key, want 1", n)
	}
}

func TestCacheRefreshesOnlyBelowThreshold(t *testing.T) {
	c, m, clock := newTestCache(100 * time.Minute)
	ctx := context.Background()
	if _, err := c.Get(ctx, cacheKey); err != nil {
		t.Fatal(err)
	}
	clock.Advance(74 * time.Minute) // 26m of 100m left: above the 25% threshold
	if _, err := c.Get(ctx, cacheKey); err != nil {
		t.Fatal(err)
	}
	if n := m.calls.Load(); n != 1 {
		t.Fatalf("%d mints before the threshold, want 1", n)
	}
	clock.Advance(2 * time.Minute) // 24m left
	cred, err := c.Get(ctx, cacheKey)
	if err != nil {
		t.Fatal(err)
	}
	if n := m.calls.Load(); n != 2 {
		t.Fatalf("%d mints after the threshold, want 2", n)
	}
	if !cred.IssuedAt.Equal(clock.Now()) {
		t.Fatal("Get returned the old credential after refreshing")
	}
}

func TestCacheSeedServesWithoutMinting(t *testing.T) {
	c, m, clock := newTestCache(time.Hour)
	reg := prometheus.NewRegistry()
	c.o.Metrics = metrics.New(reg)
	seed := Credential{Username: "seeded", Token: NewToken("s"), IssuedAt: clock.Now(), Expiry: clock.Now().Add(time.Hour)}
	if !c.Seed(cacheKey, seed) {
		t.Fatal("fresh seed rejected")
	}
	got, err := c.Get(context.Background(), cacheKey)
	if err != nil || got.Username != "seeded" {
		t.Fatalf("Get = %v, %v; want the seed", got, err)
	}
	if n := m.calls.Load(); n != 0 {
		t.Fatalf("%d mints after Seed, want 0", n)
	}
	if got := counterValue(t, reg, "artifactory_pull_token_cache_lookups_total", "main", "hit"); got != 1 {
		t.Fatalf("cache hits = %v, want 1", got)
	}
}

func TestCacheSeedIgnoresExpiredAndEarlierCredentials(t *testing.T) {
	c, m, clock := newTestCache(time.Hour)
	now := clock.Now()
	if c.Seed(cacheKey, Credential{Token: NewToken("old"), IssuedAt: now.Add(-2 * time.Hour), Expiry: now.Add(-time.Minute)}) {
		t.Fatal("expired seed kept")
	}
	if _, ok := c.Peek(cacheKey); ok {
		t.Fatal("Peek found an expired seed")
	}
	later := Credential{Username: "later", Token: NewToken("l"), IssuedAt: now, Expiry: now.Add(2 * time.Hour)}
	earlier := Credential{Username: "earlier", Token: NewToken("e"), IssuedAt: now, Expiry: now.Add(time.Hour)}
	if !c.Seed(cacheKey, later) || c.Seed(cacheKey, earlier) {
		t.Fatal("Seed did not keep the later-expiring credential")
	}
	if got, _ := c.Peek(cacheKey); got.Username != "later" {
		t.Fatalf("Peek = %s, want later", got.Username)
	}
	if n := m.calls.Load(); n != 0 {
		t.Fatalf("%d mints, want 0", n)
	}
}

func TestCacheFailedRefreshFallsBackToValidCredential(t *testing.T) {
	c, m, clock := newTestCache(100 * time.Minute)
	ctx := context.Background()
	first, err := c.Get(ctx, cacheKey)
	if err != nil {
		t.Fatal(err)
	}
	m.fail.Store(true)
	clock.Advance(90 * time.Minute)
	got, err := c.Get(ctx, cacheKey)
	if err != nil || !got.Expiry.Equal(first.Expiry) {
		t.Fatalf("Get = %v, %v; want the still-valid credential and no error", got, err)
	}
	if c.LastError(cacheKey) == nil {
		t.Fatal("LastError does not report the failed refresh")
	}
	clock.Advance(11 * time.Minute) // now expired
	if _, err := c.Get(ctx, cacheKey); err == nil {
		t.Fatal("Get returned an expired credential instead of the mint error")
	}
	m.fail.Store(false)
	if _, err := c.Get(ctx, cacheKey); err != nil || c.LastError(cacheKey) != nil {
		t.Fatalf("Get after recovery = %v, LastError %v; want both nil", err, c.LastError(cacheKey))
	}
}

func TestCacheCallerCancelDoesNotCancelSharedMint(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	mintErr := make(chan error, 1)
	var hasDeadline atomic.Bool
	c := NewCache(func(ctx context.Context, key Key) (Credential, error) {
		_, ok := ctx.Deadline()
		hasDeadline.Store(ok)
		close(started)
		<-release
		mintErr <- ctx.Err()
		return Credential{Token: NewToken("tok"), IssuedAt: time.Now(), Expiry: time.Now().Add(time.Hour)}, nil
	}, CacheOptions{MintTimeout: time.Minute})

	ctx, cancel := context.WithCancel(context.Background())
	aDone := make(chan error)
	go func() { _, err := c.Get(ctx, cacheKey); aDone <- err }()
	<-started
	cancel()
	if err := <-aDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller got %v, want context.Canceled", err)
	}
	close(release)
	if _, err := c.Get(context.Background(), cacheKey); err != nil {
		t.Fatal(err)
	}
	if err := <-mintErr; err != nil {
		t.Fatalf("shared mint saw %v after one caller cancelled", err)
	}
	if !hasDeadline.Load() {
		t.Fatal("shared mint is not bounded by MintTimeout")
	}
}

func TestCacheDoesNotFallBackToANearlyExpiredCredential(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := &countingMint{clock: clock, lifetime: 100 * time.Minute}
	c := NewCache(m.mint, CacheOptions{Now: clock.Now, MinRemaining: 2 * time.Minute})
	ctx := context.Background()
	if _, err := c.Get(ctx, cacheKey); err != nil {
		t.Fatal(err)
	}
	m.fail.Store(true)
	clock.Advance(97 * time.Minute) // 3 minutes left: still a fallback
	if _, err := c.Get(ctx, cacheKey); err != nil {
		t.Fatalf("Get with 3m left = %v; want the cached credential", err)
	}
	clock.Advance(90 * time.Second) // 90 seconds left: too little
	_, err := c.Get(ctx, cacheKey)
	var near *NearExpiryError
	if !errors.As(err, &near) || near.Minimum != 2*time.Minute || near.Remaining != 90*time.Second {
		t.Fatalf("Get with 90s left = %v; want a NearExpiryError (90s left of a 2m minimum)", err)
	}
	if !errors.Is(err, errMintDown) {
		t.Fatalf("NearExpiryError %v does not wrap the mint error", err)
	}
}

func TestCacheMinRemainingIsCappedByTheRefreshWindow(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := &countingMint{clock: clock, lifetime: 40 * time.Second} // refresh window 10s
	c := NewCache(m.mint, CacheOptions{Now: clock.Now, MinRemaining: time.Minute})
	ctx := context.Background()
	if _, err := c.Get(ctx, cacheKey); err != nil {
		t.Fatal(err)
	}
	m.fail.Store(true)
	clock.Advance(34 * time.Second) // 6s left, above half the window
	if _, err := c.Get(ctx, cacheKey); err != nil {
		t.Fatalf("Get with 6s of a 40s token left = %v; want the cached credential", err)
	}
	clock.Advance(2 * time.Second) // 4s left, below half the window
	if _, err := c.Get(ctx, cacheKey); err == nil {
		t.Fatal("Get with 4s of a 40s token left returned it")
	}
}

// A replica that needs a token first takes one another replica minted, if
// it is not due for refresh; otherwise it mints.
func TestCacheAdoptsAnotherReplicasTokenInsteadOfMinting(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := &countingMint{clock: clock, lifetime: time.Hour}
	var offered Credential
	var asked, minted atomic.Int32
	reg := prometheus.NewRegistry()
	c := NewCache(m.mint, CacheOptions{Now: clock.Now, Metrics: metrics.New(reg),
		Adopt: func(_ context.Context, key Key) (Credential, bool) {
			asked.Add(1)
			return offered, !offered.Token.IsZero()
		},
		OnMint: func(Key, Credential) { minted.Add(1) },
	})
	ctx := context.Background()

	// Nothing to adopt: the first Get mints.
	if _, err := c.Get(ctx, cacheKey); err != nil || m.calls.Load() != 1 || asked.Load() != 1 {
		t.Fatalf("cold Get: err %v, mints %d, adopt asked %d; want nil, 1, 1", err, m.calls.Load(), asked.Load())
	}
	// A cached token that is not due asks nothing.
	clock.Advance(30 * time.Minute)
	if _, err := c.Get(ctx, cacheKey); err != nil || asked.Load() != 1 {
		t.Fatalf("warm Get asked Adopt (%d times, err %v): it must cost nothing", asked.Load(), err)
	}
	// Due for refresh; another replica minted at 40 min: adopt it, mint nothing.
	clock.Advance(10 * time.Minute)
	offered = Credential{Username: "u", Token: NewToken("other"), IssuedAt: clock.Now(), Expiry: clock.Now().Add(time.Hour)}
	clock.Advance(6 * time.Minute)
	got, err := c.Get(ctx, cacheKey)
	if err != nil || got.Token.Reveal() != "other" || m.calls.Load() != 1 || minted.Load() != 1 {
		t.Fatalf("due Get: token %q err %v mints %d OnMint %d; want the adopted token and no mint", got.Token.Reveal(), err, m.calls.Load(), minted.Load())
	}
	if v := counterValue(t, reg, "artifactory_pull_token_adoptions_total", "main", ""); v != 1 {
		t.Errorf("adoptions_total = %v, want 1", v)
	}
	// The adopted token is cached like a minted one.
	if _, err := c.Get(ctx, cacheKey); err != nil || asked.Load() != 2 || m.calls.Load() != 1 {
		t.Fatalf("Get after adopting: adopt asked %d, mints %d; want 2, 1", asked.Load(), m.calls.Load())
	}
	// Due again, and what the checkpoint offers is due too: mint.
	clock.Advance(50 * time.Minute)
	if got, err := c.Get(ctx, cacheKey); err != nil || got.Token.Reveal() != "tok" || m.calls.Load() != 2 {
		t.Fatalf("Get when the offered token is due: token %q err %v mints %d; want a new mint", got.Token.Reveal(), err, m.calls.Load())
	}
}

// An offer that is not newer than the cached token, or is due itself, is
// refused: the cache mints.
func TestCacheRefusesAnOfferThatIsNotNewerOrIsDue(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := &countingMint{clock: clock, lifetime: time.Hour}
	var offered Credential
	reg := prometheus.NewRegistry()
	c := NewCache(m.mint, CacheOptions{Now: clock.Now, Metrics: metrics.New(reg),
		Adopt: func(context.Context, Key) (Credential, bool) { return offered, true }})
	ctx := context.Background()
	first, err := c.Get(ctx, cacheKey) // offered is empty: mint
	if err != nil || m.calls.Load() != 1 {
		t.Fatalf("cold Get: err %v, mints %d", err, m.calls.Load())
	}
	clock.Advance(46 * time.Minute) // due
	for i, o := range []Credential{
		// Not due (14 min lifetime, 1 min old) but expiring before the cached token.
		{Username: "u", Token: NewToken("older"), IssuedAt: clock.Now().Add(-time.Minute), Expiry: first.Expiry.Add(-time.Minute)},
		// Newer, but due already.
		{Username: "u", Token: NewToken("due"), IssuedAt: clock.Now().Add(-55 * time.Minute), Expiry: first.Expiry.Add(time.Minute)},
	} {
		offered = o
		got, err := c.Get(ctx, cacheKey)
		if err != nil || got.Token.Reveal() != "tok" || m.calls.Load() != int32(2+i) {
			t.Fatalf("offer %q: got %q, err %v, mints %d; want a mint", o.Token.Reveal(), got.Token.Reveal(), err, m.calls.Load())
		}
		clock.Advance(46 * time.Minute)
	}
	if v := counterValue(t, reg, "artifactory_pull_token_adoptions_total", "main", ""); v != 0 {
		t.Errorf("adoptions_total = %v, want 0", v)
	}
}
