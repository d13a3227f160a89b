package pullsecret

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
	nsKey, nsValue, err := config.SplitLabel(cfg.NamespaceLabel)
	if err != nil {
		return 0, err
	}
	ts := newTargets(cfg.Instances)
	optedIn := s.optedIn(ctx, nsKey, nsValue)
	var list corev1.SecretList
	if err := s.reader.List(ctx, &list, client.MatchingLabels{ManagedByLabel: ManagedByValue}); err != nil {
		return 0, err
	}
	n := 0
	for i := range list.Items {
		sec := &list.Items[i]
		if _, ok := ts.of(sec); ok && s.owns(sec) && optedIn(sec.Namespace) {
			n++
		}
	}
	return n, nil
}
