package credentials

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestCacheOnMintSeesEverySuccessfulMintOnly(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := &countingMint{clock: clock, lifetime: time.Hour}
	var mu sync.Mutex
	var minted []Credential
	c := NewCache(m.mint, CacheOptions{Now: clock.Now, OnMint: func(k Key, cred Credential) {
		mu.Lock()
		defer mu.Unlock()
		if k != cacheKey {
			t.Errorf("OnMint key = %v, want %v", k, cacheKey)
		}
		minted = append(minted, cred)
	}})
	ctx := context.Background()

	first, err := c.Get(ctx, cacheKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, cacheKey); err != nil { // a hit: no mint
		t.Fatal(err)
	}
	clock.Advance(50 * time.Minute) // due for refresh: mint again
	second, err := c.Get(ctx, cacheKey)
	if err != nil {
		t.Fatal(err)
	}
	m.fail.Store(true)
	// Due again; this mint fails and falls back to the valid credential.
	clock.Advance(50 * time.Minute)
	if _, err := c.Get(ctx, cacheKey); err != nil {
		t.Fatal(err)
	}
	c.Seed(Key{Instance: "other", Identity: WebhookIdentity}, Credential{Token: NewToken("seeded"),
		IssuedAt: clock.Now(), Expiry: clock.Now().Add(time.Hour)})

	if n := m.calls.Load(); n != 3 {
		t.Fatalf("mints = %d, want 3 (two successes, one failure)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(minted) != 2 || minted[0].Expiry != first.Expiry || minted[1].Expiry != second.Expiry {
		t.Errorf("OnMint saw %d credentials, want the 2 minted ones (no call for hits, failures or seeds)", len(minted))
	}
}
