package credentials

import (
	"fmt"
	"math/rand/v2"
	"time"
)

const defaultBackoffBase = time.Second

// Backoff spaces out the mints of a key that keeps failing, so that a
// permanent error (an unmapped role answering 401) costs Artifactory and STS
// a request every Cap at most instead of one per caller.
//
// The first failure is retried on the next call without waiting: one failure
// is often a blip (a reset connection), and an admission should not fail open
// because of it. From the second consecutive failure on the wait is Base,
// doubled per further failure up to Cap, each shortened by a random part of
// up to half (jitter) so that keys and replicas do not retry in step.
type Backoff struct {
	// Base is the wait after the second consecutive failure; 1s when zero.
	Base time.Duration
	// Cap is the longest wait. Zero disables backoff: every call may mint.
	Cap time.Duration
	// Rand returns a number in [0, 1) for the jitter; math/rand/v2 when nil.
	Rand func() float64
}

// Delay is the wait before the next mint after failures consecutive
// failures.
func (b Backoff) Delay(failures int) time.Duration {
	if b.Cap <= 0 || failures < 2 {
		return 0
	}
	base := b.Base
	if base <= 0 {
		base = defaultBackoffBase
	}
	d := min(base, b.Cap)
	for i := 2; i < failures && d < b.Cap; i++ {
		d = min(2*d, b.Cap)
	}
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	// Equal jitter: never below half the nominal wait, so the number of
	// attempts in a window stays bounded whatever the random draw.
	return d/2 + time.Duration(r()*float64(d/2))
}

// BackoffError is what Get returns, without minting, while a key backs off
// after failed mints. It wraps the latest mint error, so errors.Is and
// errors.As see the original cause.
type BackoffError struct {
	Err      error     // the latest mint error
	Failures int       // consecutive failed mints
	RetryAt  time.Time // no mint is attempted before this time
}

func (e *BackoffError) Error() string {
	return fmt.Sprintf("%v (%d consecutive failures; next attempt after %s)",
		e.Err, e.Failures, e.RetryAt.UTC().Format(time.RFC3339))
}

func (e *BackoffError) Unwrap() error { return e.Err }
