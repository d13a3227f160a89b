package credentials

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
)

func TestBackoffDelayWaitsFromSecondFailureDoublingUpToCapWithJitter(t *testing.T) {
	low := Backoff{Base: time.Second, Cap: 8 * time.Second, Rand: func() float64 { return 0 }}
	high := low
	high.Rand = func() float64 { return 0.999999 }
	tests := []struct {
		failures int
		nominal  time.Duration
	}{
		{0, 0}, {1, 0}, {2, time.Second}, {3, 2 * time.Second}, {4, 4 * time.Second},
		{5, 8 * time.Second}, {6, 8 * time.Second}, {500, 8 * time.Second},
	}
	for _, tt := range tests {
		if got := low.Delay(tt.failures); got != tt.nominal/2 {
			t.Errorf("Delay(%d) with the lowest jitter = %s, want %s", tt.failures, got, tt.nominal/2)
		}
		if got := high.Delay(tt.failures); got > tt.nominal || got < tt.nominal-time.Millisecond {
			t.Errorf("Delay(%d) with the highest jitter = %s, want about %s", tt.failures, got, tt.nominal)
		}
	}
	if d := (Backoff{}).Delay(10); d != 0 {
		t.Errorf("zero Backoff waits %s, want 0 (disabled)", d)
	}
}

func TestCacheBackingOffAnswersLastErrorWithoutMintingThenRecovers(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := &countingMint{clock: clock, lifetime: time.Hour}
	m.fail.Store(true)
	reg := prometheus.NewRegistry()
	c := NewCache(m.mint, CacheOptions{Now: clock.Now, Metrics: metrics.New(reg),
		Backoff: Backoff{Base: time.Second, Cap: time.Minute, Rand: func() float64 { return 0.5 }}})
	ctx := context.Background()

	// The first failure is retried at once; the second starts the backoff.
	for range 2 {
		if _, err := c.Get(ctx, cacheKey); err == nil {
			t.Fatal("Get succeeded while minting fails")
		}
	}
	if v := gaugeValue(t, reg, "artifactory_pull_token_backoff_seconds", "main"); v != 0.75 {
		t.Errorf("token_backoff_seconds = %v after the second failure, want 0.75", v)
	}
	_, err := c.Get(ctx, cacheKey)
	var berr *BackoffError
	if !errors.As(err, &berr) {
		t.Fatalf("third Get = %v, want a *BackoffError", err)
	}
	if v := counterValue(t, reg, "artifactory_pull_token_backoff_skips_total", "main", ""); v != 1 {
		t.Errorf("token_backoff_skips_total = %v, want 1 (the third Get)", v)
	}
	if n := m.calls.Load(); n != 2 {
		t.Fatalf("%d mints, want 2: a backing-off Get must not mint", n)
	}
	if berr.Failures != 2 || !berr.RetryAt.Equal(clock.Now().Add(750*time.Millisecond)) || !berr.RetryAt.Equal(c.NextAttempt(cacheKey)) {
		t.Errorf("BackoffError = %+v, NextAttempt %s", berr, c.NextAttempt(cacheKey))
	}
	if berr.Err == nil || berr.Err.Error() != "artifactory down" || c.LastError(cacheKey) != berr.Err {
		t.Errorf("BackoffError does not carry the last mint error: %v", berr.Err)
	}

	clock.Advance(750 * time.Millisecond)
	if _, err := c.Get(ctx, cacheKey); err == nil || errors.As(err, &berr) {
		t.Fatalf("Get at RetryAt = %v, want a new mint's error", err)
	}
	if n := m.calls.Load(); n != 3 {
		t.Fatalf("%d mints, want 3", n)
	}

	m.fail.Store(false)
	clock.Advance(time.Minute)
	if _, err := c.Get(ctx, cacheKey); err != nil {
		t.Fatalf("Get after recovery: %v", err)
	}
	if !c.NextAttempt(cacheKey).IsZero() || c.LastError(cacheKey) != nil {
		t.Errorf("after a success NextAttempt = %s, LastError = %v; want zero, nil", c.NextAttempt(cacheKey), c.LastError(cacheKey))
	}
	if v := gaugeValue(t, reg, "artifactory_pull_token_backoff_seconds", "main"); v != 0 {
		t.Errorf("token_backoff_seconds = %v after a success, want 0", v)
	}
}

// gaugeValue reads gauge name{instance} from reg; -1 when absent.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name, instance string) float64 {
	t.Helper()
	if m := findMetric(t, reg, name, map[string]string{"instance": instance}); m != nil {
		return m.GetGauge().GetValue()
	}
	return -1
}
