package credentials

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
)

const (
	defaultRefreshThreshold = 0.25
	defaultMintTimeout      = 30 * time.Second
)

// MintFunc obtains a new credential for key, typically through an Exchanger.
type MintFunc func(ctx context.Context, key Key) (Credential, error)

// CacheOptions configures a Cache.
type CacheOptions struct {
	// RefreshThreshold is the fraction of a credential's lifetime left below
	// which Get mints a new one; 0.25 when zero.
	RefreshThreshold float64
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Metrics records lookups; nil records nothing.
	Metrics *metrics.Metrics
	// MintAs mints key's token as id, a ServiceAccount's identity (GetAs).
	MintAs func(ctx context.Context, key Key, id Identity) (Credential, error)
	// Prove checks that id's ServiceAccount may assume id's role before
	// GetAs hands it the role's token (RoleCredentials.Prove).
	Prove func(ctx context.Context, id Identity) error
	// MintTimeout bounds one shared mint; 30s when zero.
	MintTimeout time.Duration
	// Backoff spaces out the mints of a key that keeps failing; the zero
	// value disables it (every Get may mint).
	Backoff Backoff
	// OnMint, when set, is called after every successful mint with the new
	// credential, e.g. to checkpoint it so that a restart need not mint
	// again. It runs inside the shared mint, before waiting callers get the
	// credential: it must not block.
	OnMint func(Key, Credential)
	// MinRemaining is the least lifetime a cached credential must have left
	// to be returned in place of a failed mint (or while backing off): a
	// token that expires during the pull it is for is no fallback. It is
	// capped at half the credential's refresh window (RefreshThreshold of
	// its lifetime), so short-lived tokens still fall back early in that
	// window. Zero accepts any unexpired credential.
	MinRemaining time.Duration
	// Adopt, when set, is asked inside the shared mint, before minting,
	// for a credential of key that another process minted (the
	// checkpoint another replica wrote). One that is not due for refresh
	// is taken instead of minting, so replicas converge on one token per
	// rotation. It is asked once per mint, never per lookup; it must
	// honour ctx.
	Adopt func(ctx context.Context, key Key) (Credential, bool)
}

// Cache holds one credential per Key and mints a new one, once per key at a
// time, when it is missing or nearing expiry. It is safe for concurrent use.
type Cache struct {
	mint    MintFunc
	o       CacheOptions
	flights singleflight.Group

	mu      sync.Mutex
	entries map[Key]*cacheEntry
}

type cacheEntry struct {
	cred     Credential // zero until the first success or Seed
	lastErr  error
	failures int       // consecutive failed mints
	retryAt  time.Time // no mint before this time while failures > 0
}

// NewCache returns a Cache that mints with mint.
func NewCache(mint MintFunc, o CacheOptions) *Cache {
	if o.RefreshThreshold <= 0 {
		o.RefreshThreshold = defaultRefreshThreshold
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MintTimeout <= 0 {
		o.MintTimeout = defaultMintTimeout
	}
	return &Cache{mint: mint, o: o, entries: map[Key]*cacheEntry{}}
}

// Get returns the cached credential for key unless it is missing or has less
// than RefreshThreshold of its lifetime left; then it mints a new one.
//
// If that mint fails while the cached credential has at least MinRemaining
// left, Get returns the cached credential and a nil error: callers only need
// a usable token. LastError reports the failure so that they can warn. With
// less left, Get returns a *NearExpiryError wrapping the mint error.
//
// While the key backs off after failed mints (see Backoff), Get mints
// nothing: it returns the cached credential on the same terms, else a
// *BackoffError wrapping the latest mint error (inside a *NearExpiryError
// when the cached credential is too close to expiry).
//
// Concurrent calls for one key share a single mint. The mint runs detached
// from ctx (bounded by MintTimeout) so that one caller giving up does not fail
// the others; each caller still returns as soon as its own ctx is done.
func (c *Cache) Get(ctx context.Context, key Key) (Credential, error) {
	return c.get(ctx, key, nil)
}

// GetAs is Get for id's key (id.Key): a ServiceAccount's identity mints
// with CacheOptions.MintAs, which is given the ServiceAccount whose token
// assumes the role (the key holds only the role: ServiceAccounts of one
// role share its token). Concurrent calls for one key share the first
// caller's mint.
//
// A role's token is shared by every ServiceAccount that names the role
// (Identity.Shared), so before it is handed to one, CacheOptions.Prove must
// show that this
// ServiceAccount may assume the role. A failed proof is that
// ServiceAccount's alone: it is returned, never recorded against the
// role's key (no backoff, no fallback for the others).
func (c *Cache) GetAs(ctx context.Context, id Identity, key Key) (Credential, error) {
	if id.IsWebhook() {
		return c.get(ctx, key, nil)
	}
	if c.o.MintAs == nil || (id.Shared() && c.o.Prove == nil) {
		// Never mint a ServiceAccount's token with the webhook's own
		// credentials, nor hand a role's out unproven.
		return Credential{}, fmt.Errorf("cannot get a token as %s: the token cache has no MintAs or Prove", id)
	}
	if id.Shared() {
		if err := c.o.Prove(ctx, id); err != nil {
			return Credential{}, err
		}
	}
	return c.get(ctx, key, func(ctx context.Context, key Key) (Credential, error) { return c.o.MintAs(ctx, key, id) })
}

func (c *Cache) get(ctx context.Context, key Key, mint MintFunc) (Credential, error) {
	cached, ok := c.lookup(key)
	now := c.o.Now()
	if ok && !c.needsRefresh(cached, now) {
		c.o.Metrics.CacheLookup(key.Instance, true)
		return cached, nil
	}
	c.o.Metrics.CacheLookup(key.Instance, false)
	if berr := c.backingOff(key, now); berr != nil {
		c.o.Metrics.BackoffSkip(key.Instance)
		return c.fallback(key, berr)
	}

	ch := c.flights.DoChan(flightKey(key), func() (any, error) {
		// A flight that ended between our lookup and now may have refreshed
		// the entry already, or failed and started a backoff; minting again
		// would waste an exchange.
		if cur, ok := c.lookup(key); ok && !c.needsRefresh(cur, c.o.Now()) {
			return cur, nil
		}
		if berr := c.backingOff(key, c.o.Now()); berr != nil {
			return Credential{}, berr
		}
		mintCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.o.MintTimeout)
		defer cancel()
		if cred, ok := c.adopt(mintCtx, key); ok {
			return cred, nil
		}
		if mint == nil {
			mint = c.mint
		}
		cred, err := mint(mintCtx, key)
		c.record(key, cred, err)
		if err == nil && c.o.OnMint != nil {
			c.o.OnMint(key, cred)
		}
		return cred, err
	})
	select {
	case <-ctx.Done():
		return Credential{}, ctx.Err()
	case res := <-ch:
		if res.Err == nil {
			return res.Val.(Credential), nil
		}
		return c.fallback(key, res.Err)
	}
}

// adopt takes a credential for key from Adopt if it is not due for refresh
// and expires later than the cached one, and reports whether it did.
func (c *Cache) adopt(ctx context.Context, key Key) (Credential, bool) {
	if c.o.Adopt == nil {
		return Credential{}, false
	}
	cred, ok := c.o.Adopt(ctx, key)
	if !ok || cred.Token.IsZero() || c.needsRefresh(cred, c.o.Now()) || !c.Seed(key, cred) {
		return Credential{}, false
	}
	c.record(key, cred, nil) // a usable token ends a backoff like a mint does
	c.o.Metrics.TokenAdopted(key.Instance)
	return cred, true
}

// fallback answers a Get whose mint failed (or was skipped) with err: the
// cached credential if it has at least MinRemaining left, else err, saying
// when the cached credential is unexpired but too close to its expiry.
func (c *Cache) fallback(key Key, err error) (Credential, error) {
	cred, ok := c.lookup(key)
	if !ok {
		return Credential{}, err
	}
	remaining := cred.Expiry.Sub(c.o.Now())
	if remaining <= 0 {
		return Credential{}, err
	}
	if min := c.minRemaining(cred); remaining < min {
		return Credential{}, &NearExpiryError{Err: err, Remaining: remaining, Minimum: min}
	}
	return cred, nil
}

// minRemaining is MinRemaining capped at half of cred's refresh window.
func (c *Cache) minRemaining(cred Credential) time.Duration {
	return min(c.o.MinRemaining, time.Duration(c.o.RefreshThreshold*float64(cred.Lifetime())/2))
}

// Peek returns the cached credential for key if it has not expired, without
// minting.
func (c *Cache) Peek(key Key) (Credential, bool) {
	cred, ok := c.lookup(key)
	if !ok || !c.o.Now().Before(cred.Expiry) {
		return Credential{}, false
	}
	return cred, true
}

// Seed offers a credential obtained elsewhere (e.g. read back from the
// webhook's own checkpoint at start). It is kept if it has not expired and expires later than
// the cached one; Seed reports whether it was kept.
func (c *Cache) Seed(key Key, cred Credential) bool {
	if cred.Token.IsZero() || !c.o.Now().Before(cred.Expiry) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entry(key)
	if !e.cred.Token.IsZero() && !cred.Expiry.After(e.cred.Expiry) {
		return false
	}
	e.cred = cred
	return true
}

// NextAttempt is the time before which Get mints nothing for key because its
// latest mints failed; zero when key is not backing off.
func (c *Cache) NextAttempt(key Key) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok && e.failures > 0 && e.retryAt.After(c.o.Now()) {
		return e.retryAt
	}
	return time.Time{}
}

// backingOff returns the error to answer instead of minting while key backs
// off, or nil when a mint may be attempted.
func (c *Cache) backingOff(key Key, now time.Time) *BackoffError {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || e.failures == 0 || !now.Before(e.retryAt) {
		return nil
	}
	return &BackoffError{Err: e.lastErr, Failures: e.failures, RetryAt: e.retryAt}
}

// LastError is the error of key's latest mint, nil after a success.
func (c *Cache) LastError(key Key) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		return e.lastErr
	}
	return nil
}

func (c *Cache) needsRefresh(cred Credential, now time.Time) bool {
	remaining := cred.Expiry.Sub(now)
	if remaining <= 0 {
		return true
	}
	return float64(remaining) < c.o.RefreshThreshold*float64(cred.Lifetime())
}

func (c *Cache) lookup(key Key) (Credential, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || e.cred.Token.IsZero() {
		return Credential{}, false
	}
	return e.cred, true
}

// record stores a mint's outcome. A fresh credential replaces the cached one
// unless a Seed meanwhile brought a later-expiring one. A failure extends the
// key's backoff, a success ends it.
func (c *Cache) record(key Key, cred Credential, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entry(key)
	e.lastErr = err
	if err != nil {
		e.failures++
		e.retryAt = c.o.Now().Add(c.o.Backoff.Delay(e.failures))
	} else {
		e.failures, e.retryAt = 0, time.Time{}
		if e.cred.Token.IsZero() || !cred.Expiry.Before(e.cred.Expiry) {
			e.cred = cred
		}
	}
	c.o.Metrics.TokenBackoff(key.Instance, e.failures, retryDelay(e, c.o.Now()))
}

// retryDelay is how long e still waits before the next mint.
func retryDelay(e *cacheEntry, now time.Time) time.Duration {
	if e.failures == 0 {
		return 0
	}
	return max(0, e.retryAt.Sub(now))
}

// entry returns key's entry, creating it; c.mu must be held.
func (c *Cache) entry(key Key) *cacheEntry {
	e, ok := c.entries[key]
	if !ok {
		e = &cacheEntry{}
		c.entries[key] = e
	}
	return e
}

// flightKey joins the key's parts with a byte neither can contain.
func flightKey(k Key) string { return k.Instance + "\x00" + k.Identity }

// NearExpiryError is Get's error when a mint failed and the cached credential,
// though unexpired, has less than the minimum lifetime left to be handed out.
type NearExpiryError struct {
	Err       error         // why no new credential was minted
	Remaining time.Duration // the cached credential's remaining lifetime
	Minimum   time.Duration // the least lifetime a fallback must have
}

func (e *NearExpiryError) Error() string {
	return fmt.Sprintf("%v; the cached token expires in %s, less than the %s a fallback must have left",
		e.Err, e.Remaining.Round(time.Second), e.Minimum.Round(time.Second))
}

func (e *NearExpiryError) Unwrap() error { return e.Err }
