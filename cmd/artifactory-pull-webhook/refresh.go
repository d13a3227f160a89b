package main

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// refreshBurst is the refresher's write burst: a rotation is long, so a
// burst buys it nothing, and with 1 the API server sees the configured
// rate from the first write on.
const refreshBurst = 1

// refresherUserAgent tells the refresher's requests apart from admission's
// in the API server's audit log. (API Priority and Fairness classifies by
// subject, not user agent: both clients share the webhook's ServiceAccount
// and its flow.)
const refresherUserAgent = name + "/refresher"

// refresherClient is the refresher's own client to the API server: its
// writes (and the reads of a Secret each update makes) never go through
// the client that admission writes with, so nothing of a rotation's, not
// even a client-side limit, is shared with admission.
//
// The client itself has no client-side limiter (QPS -1, as
// controller-runtime's default): the pace, refresh.writesPerSecond, is
// taken once per write of a Secret by the Store (refreshPace), not per
// request, because
//   - a request limiter would count the GET each update makes first, so
//     Secrets would be written at half the configured rate, and
//   - it would wait inside the Store's shared write, and an admission that
//     joins a write of the same Secret the refresher started would wait in
//     the refresher's queue. The Store takes the pace before the write is
//     shared.
//
// 429s (API Priority and Fairness) need no code here: client-go's rest
// client retries a response of 429 (or 5xx) carrying Retry-After after
// that many seconds, up to 10 times (rest.Request's maxRetries, checkWait
// in k8s.io/client-go/rest/with_retry.go), and the API server's APF always
// sets Retry-After. A write still failing after that is the Store's failed
// write, backed off per Secret (WriteBackoff). TestRefresherClientRetries429
// proves the retry.
func refresherClient(restCfg *rest.Config, scheme *runtime.Scheme, mapper meta.RESTMapper) (client.Client, error) {
	c := rest.CopyConfig(restCfg)
	c.QPS, c.Burst, c.RateLimiter = -1, 0, nil
	c.UserAgent = refresherUserAgent
	hc, err := rest.HTTPClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("creating the refresher's HTTP client: %w", err)
	}
	return client.New(c, client.Options{Scheme: scheme, Mapper: mapper, HTTPClient: hc})
}

// refreshPace is the refresher's write pace: a token bucket of
// refresh.writesPerSecond, one token per write of a Secret.
func refreshPace(cfg *config.Config) flowcontrol.RateLimiter {
	return flowcontrol.NewTokenBucketRateLimiter(float32(cfg.Refresh.WritesPerSecond), refreshBurst)
}

// rotationCheck counts the managed Secrets in the synced caches and logs
// the projected duration of a rotation at refresh.writesPerSecond; a rate
// that cannot rewrite them within a quarter of the smallest refresh window
// (config.CheckRotation) is logged as an error naming the rate needed.
//
// It does not stop the process. The count is not the operator's alone:
// tenants add ServiceAccounts (each with its Secret) and opted-in
// namespaces' Secrets, so a start that failed on it would let a tenant
// turn any routine restart into a crash loop of every replica, leaving no
// refresher and no webhook. What the configuration alone decides (one
// write per quarter window) is refused by config validation; the count is
// watched through the gauges (artifactory_pull_rotation_projected_seconds
// against artifactory_pull_rotation_budget_seconds) and this log line,
// which every replica writes at start.
func rotationCheck(log logr.Logger, cfg *config.Config, store *pullsecret.Store) func(context.Context) error {
	return func(ctx context.Context) error {
		n, err := store.ManagedSecrets(ctx, cfg)
		if err != nil {
			return fmt.Errorf("counting the managed Secrets: %w", err)
		}
		budget, window := cfg.RotationBudget()
		log.Info("rotation projection", "managedSecrets", n, "writesPerSecond", cfg.Refresh.WritesPerSecond,
			"projected", config.Seconds(cfg.RotationDuration(n)), "budget", config.Seconds(budget),
			"refreshWindow", config.ShortDuration(window))
		if err := cfg.CheckRotation(n); err != nil {
			log.Error(err, "The refresher's write pace is too low for the managed Secrets: a rotation may not reach every Secret before its old token expires")
		}
		return nil
	}
}
