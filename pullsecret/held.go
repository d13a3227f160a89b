package pullsecret

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
)

// HeldExpiries returns, for each instance of cfg with at least one managed
// pull Secret in an opted-in namespace, the earliest expiry among the
// tokens those Secrets hold (their expires-at annotation). This is what
// pods pull with, whichever replica minted it: it is the source of the
// token expiry gauge (metrics.SetTokenExpirySource). A Secret whose
// refresh keeps failing lowers it, as it should; Secrets left behind in
// namespaces that opted out (cleanup off) do not count. It reads the
// informer caches only; on a read error it returns what it has.
func (s *Store) HeldExpiries(ctx context.Context, cfg *config.Config) map[string]time.Time {
	nsKey, nsValue, err := config.SplitLabel(cfg.NamespaceLabel)
	if err != nil {
		return nil
	}
	byName := make(map[string]config.Instance, len(cfg.Instances))
	for _, in := range cfg.Instances {
		byName[in.SecretName] = in
	}
	var list corev1.SecretList
	if err := s.reader.List(ctx, &list, client.MatchingLabels{ManagedByLabel: ManagedByValue}); err != nil {
		s.log.V(1).Info("could not list managed pull secrets for the token expiry gauge", "error", err.Error())
		return nil
	}
	optedIn := map[string]bool{} // by namespace, read once per call
	out := map[string]time.Time{}
	for i := range list.Items {
		sec := &list.Items[i]
		inst, ok := byName[sec.Name]
		if !ok {
			continue
		}
		_, expires, ok := s.lifetime(sec, inst)
		if !ok {
			continue
		}
		in, seen := optedIn[sec.Namespace]
		if !seen {
			ns := namespaceObject()
			in = s.reader.Get(ctx, client.ObjectKey{Name: sec.Namespace}, ns) == nil &&
				ns.DeletionTimestamp == nil && ns.Labels[nsKey] == nsValue
			optedIn[sec.Namespace] = in
		}
		if !in {
			continue
		}
		if cur, ok := out[inst.Name]; !ok || expires.Before(cur) {
			out[inst.Name] = expires
		}
	}
	return out
}
