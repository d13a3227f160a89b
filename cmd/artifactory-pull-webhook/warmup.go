package main

import (
	"context"
	"errors"
	"net/http"

	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// warmup starts the Namespace and per-name Secret informers, waits for them to sync
// and seeds the token cache from the checkpoint (never from the managed
// Secrets, which tenants can write). Every replica runs it (no leader
// election): each serves admissions from its own caches.
type warmup struct {
	mgr        manager.Manager
	secrets    *secretCaches
	checkpoint *pullsecret.Checkpoint // nil: nothing to seed from
	tokens     pullsecret.Seeder
	done       chan struct{}
	// serviceAccounts: the ServiceAccount metadata informer is started too.
	serviceAccounts bool
	// rotation, when set, checks the synced caches before ready (see
	// rotationCheck); its error stops the process.
	rotation func(context.Context) error
}

func (w *warmup) Start(ctx context.Context) error {
	c := w.mgr.GetCache()
	if _, err := c.GetInformer(ctx, namespaceObject()); err != nil {
		return err
	}
	if w.serviceAccounts {
		if _, err := c.GetInformer(ctx, pullsecret.ServiceAccountObject()); err != nil {
			return err
		}
	}
	if !c.WaitForCacheSync(ctx) {
		return errors.New("caches did not sync")
	}
	if err := w.secrets.WaitForSync(ctx); err != nil {
		return err
	}
	if w.rotation != nil {
		if err := w.rotation(ctx); err != nil {
			return err
		}
	}
	if w.checkpoint != nil {
		if err := w.checkpoint.Seed(ctx, w.tokens); err != nil {
			// Not fatal: without seeding the first admissions mint new tokens.
			w.mgr.GetLogger().Error(err, "seeding the token cache from the checkpoint")
		}
	}
	close(w.done)
	<-ctx.Done()
	return nil
}

func (w *warmup) NeedLeaderElection() bool { return false }

// Checker is a readiness check that passes once the caches are warm.
func (w *warmup) Checker(_ *http.Request) error {
	select {
	case <-w.done:
		return nil
	default:
		return errors.New("caches not synced yet")
	}
}
