package pullsecret

import (
	"context"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
)

// ManagedSecrets counts the managed Secrets of this installation that the
// refresher rewrites at a rotation: pull Secrets (a ServiceAccount's
// included) and generic token Secrets of cfg's instances, in the informer
// caches, in namespaces that opt in and are not being deleted (Secrets
// left behind where a namespace opted out with cleanupOnOptOut off are not
// rewritten, so they do not count).
// Divided by refresh.writesPerSecond it is the projected duration of a
// rotation (config.CheckRotation). It reads the caches only: callers are
// the start check and the metrics' scrape, never an admission.
func (s *Store) ManagedSecrets(ctx context.Context, cfg *config.Config) (int, error) {
	sv, err := s.Survey(ctx, cfg)
	return sv.Managed, err
}
