package pullsecret

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
)

// HeldExpiries returns, for each instance of cfg with at least one managed
// pull Secret (a ServiceAccount's included) in an opted-in namespace, the
// earliest expiry among the tokens those Secrets hold (their expires-at
// annotation). This is what pods pull with, whichever replica minted it:
// it is the source of the token expiry gauge (metrics.SetTokenExpirySource).
// A Secret whose refresh keeps failing lowers it, as it should; Secrets
// left behind in namespaces that opted out (cleanup off) do not count; a
// namespace that cannot be read counts. It reads the informer caches only.
// When the Secret cache cannot be listed (at start, before it syncs) it
// returns nil: the gauge has no sample rather than a wrong one.
func (s *Store) HeldExpiries(ctx context.Context, cfg *config.Config) map[string]time.Time {
	sv, err := s.Survey(ctx, cfg)
	if err != nil {
		s.log.V(1).Info("could not list managed pull secrets for the token expiry gauge", "error", err.Error())
		return nil
	}
	return sv.Held
}

// Survey is what the scrape-time gauges read of the managed Secrets, in
// one pass over the informer caches: HeldExpiries' Held and
// ManagedSecrets' Managed.
type Survey struct {
	Held    map[string]time.Time
	Managed int
}

// Survey lists the managed Secrets once for both HeldExpiries and
// ManagedSecrets: a scrape pays one pass over them, not two.
func (s *Store) Survey(ctx context.Context, cfg *config.Config) (Survey, error) {
	nsKey, nsValue, err := config.SplitLabel(cfg.NamespaceLabel)
	if err != nil {
		return Survey{}, err
	}
	ts := newTargets(cfg.Instances)
	var list corev1.SecretList
	if err := s.reader.List(ctx, &list, client.MatchingLabels{ManagedByLabel: ManagedByValue}); err != nil {
		return Survey{}, err
	}
	optedIn := s.optedIn(ctx, nsKey, nsValue)
	sv := Survey{Held: map[string]time.Time{}}
	// A Secret with the per-ServiceAccount label and a configured name is
	// in two of the caches the list merges: counted once.
	perSA := map[types.NamespacedName]bool{}
	for i := range list.Items {
		sec := &list.Items[i]
		t, ok := ts.of(sec)
		if !ok || !s.owns(sec) || !optedIn(sec.Namespace) {
			continue
		}
		if sec.Labels[LabelPerServiceAccount] == "true" {
			key := types.NamespacedName{Namespace: sec.Namespace, Name: sec.Name}
			if perSA[key] {
				continue
			}
			perSA[key] = true
		}
		sv.Managed++ // a rotation rewrites it
		if t.token { // what pods pull with: pull Secrets only
			continue
		}
		_, expires, ok := s.lifetime(sec, t)
		if !ok {
			continue
		}
		if cur, ok := sv.Held[t.inst.Name]; !ok || expires.Before(cur) {
			sv.Held[t.inst.Name] = expires
		}
	}
	return sv, nil
}

// optedIn returns a function that tells, from the informer cache, whether a
// namespace opts in and is not being deleted: whether the refresher keeps
// its Secrets. Each namespace is read once per returned function. A
// namespace that cannot be read counts as opted in: a Secret that may be
// lagging must not be left out.
func (s *Store) optedIn(ctx context.Context, nsKey, nsValue string) func(namespace string) bool {
	seen := map[string]bool{}
	return func(namespace string) bool {
		in, ok := seen[namespace]
		if ok {
			return in
		}
		ns := namespaceObject()
		switch err := s.reader.Get(ctx, client.ObjectKey{Name: namespace}, ns); {
		case apierrors.IsNotFound(err):
			in = false
		case err != nil:
			in = true
		default:
			in = ns.DeletionTimestamp == nil && ns.Labels[nsKey] == nsValue
		}
		seen[namespace] = in
		return in
	}
}
