package pullsecret

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// SyncResult is the outcome of Sync.
type SyncResult struct {
	// Action is ActionCreated, ActionUpdated or ActionReused (no write).
	Action Action
	// Restored is set when the write repaired the Secret (it was missing,
	// unreadable, or its token was replaced by hand) rather than rotating an
	// intact Secret to a new token or new hosts.
	Restored bool
	// ExpiresAt is when the token now in the Secret expires.
	ExpiresAt time.Time
	// RefreshAt is when that token becomes due for refresh: the token
	// source mints a new one from then on.
	RefreshAt time.Time
}

// Sync makes the Secret of inst in namespace carry exactly the token
// source's current credential for every host of inst, creating it when
// missing. Unlike Ensure, which trusts a Secret's annotations so that
// admissions stay cheap, Sync compares the content, so a Secret whose data
// was edited by hand is restored. It writes only when the content differs;
// the token source mints only when its credential is due, so many namespaces
// sharing one identity cost one exchange per rotation.
func (s *Store) Sync(ctx context.Context, namespace string, inst config.Instance) (SyncResult, error) {
	key := types.NamespacedName{Namespace: namespace, Name: inst.SecretName}
	var res SyncResult
	cur, err := s.cached(ctx, key)
	if err != nil {
		return res, fmt.Errorf("reading pull secret %s for instance %q from cache: %w", key, inst.Name, err)
	}
	if cur != nil && !isManaged(cur) {
		return res, fmt.Errorf("pull secret %s for instance %q: %w", key, inst.Name, ErrForeignSecret)
	}
	cred, err := s.tokens.Get(ctx, credentials.Key{Instance: inst.Name, Identity: s.identity})
	if err != nil {
		return res, fmt.Errorf("pull secret %s: %w for instance %q: %w", key, ErrNoToken, inst.Name, err)
	}
	res.ExpiresAt = cred.Expiry
	res.RefreshAt = cred.Expiry.Add(-time.Duration(s.threshold * float64(cred.Lifetime())))
	desired, err := s.build(namespace, inst, cred)
	if err != nil {
		return res, fmt.Errorf("pull secret %s for instance %q: %w", key, inst.Name, err)
	}
	stale := func(c *corev1.Secret) bool { return !sameContent(c, desired) }
	switch {
	case cur == nil:
		res.Restored = true
		res.Action, err = s.create(ctx, desired, stale)
	case !stale(cur):
		res.Action = ActionReused
	default:
		res.Restored = edited(cur, cred)
		res.Action, err = s.update(ctx, key, cur, desired, stale)
	}
	if err != nil {
		return res, fmt.Errorf("writing pull secret %s for instance %q: %w", key, inst.Name, err)
	}
	return res, nil
}

// Delete removes the managed Secret of inst in namespace, if the cache has
// one. The delete is conditioned on the cached object's UID and
// resourceVersion: a Secret that changed meanwhile (possibly replaced by one
// we do not manage) is left alone and reported as a conflict. It reports
// whether a Secret was deleted.
func (s *Store) Delete(ctx context.Context, namespace string, inst config.Instance) (bool, error) {
	key := types.NamespacedName{Namespace: namespace, Name: inst.SecretName}
	cur, err := s.cached(ctx, key)
	if err != nil {
		return false, fmt.Errorf("reading pull secret %s for instance %q from cache: %w", key, inst.Name, err)
	}
	if cur == nil || !isManaged(cur) {
		return false, nil
	}
	uid, rv := cur.UID, cur.ResourceVersion
	err = s.writer.Delete(ctx, cur, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	s.metrics.SecretWrite("delete", err)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("deleting pull secret %s for instance %q: %w", key, inst.Name, err)
	}
	return true, nil
}

// sameContent reports whether cur already is desired as far as the webhook
// cares: type, label, its annotations and exactly the one data key.
func sameContent(cur, desired *corev1.Secret) bool {
	if cur.Type != desired.Type || !isManaged(cur) || len(cur.Data) != len(desired.Data) || len(cur.StringData) > 0 {
		return false
	}
	for k, v := range desired.Annotations {
		if cur.Annotations[k] != v {
			return false
		}
	}
	for k, v := range desired.Data {
		if !bytes.Equal(cur.Data[k], v) {
			return false
		}
	}
	return true
}

// edited tells a repair from a routine refresh: a Secret is edited when its
// data is not what its own annotations describe, or when it claims the
// current token's lifetime but carries another token.
func edited(cur *corev1.Secret, cred credentials.Credential) bool {
	_, held, err := credentialOf(cur)
	if err != nil {
		return true
	}
	want, err := DockerConfigJSON(strings.Split(cur.Annotations[AnnotationHosts], ","), held.Username, held.Token)
	if err != nil || len(cur.Data) != 1 || !bytes.Equal(want, cur.Data[corev1.DockerConfigJsonKey]) {
		return true
	}
	return formatTime(held.Expiry) == formatTime(cred.Expiry) && held.Token.Reveal() != cred.Token.Reveal()
}
