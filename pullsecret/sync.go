package pullsecret

import (
	"context"
	"fmt"
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
	return s.SyncAs(ctx, namespace, inst, credentials.Identity{})
}

// SyncAs is Sync for id's Secret of inst (SecretName).
func (s *Store) SyncAs(ctx context.Context, namespace string, inst config.Instance, id credentials.Identity) (SyncResult, error) {
	return s.sync(ctx, namespace, newTarget(inst, id))
}

func (s *Store) sync(ctx context.Context, namespace string, t target) (SyncResult, error) {
	inst, id := t.inst, t.id
	key := types.NamespacedName{Namespace: namespace, Name: t.name}
	var res SyncResult
	cur, err := s.cached(ctx, key)
	if err != nil {
		return res, fmt.Errorf("reading pull secret %s for instance %q from cache: %w", key, inst.Name, err)
	}
	if cur != nil && !s.owns(cur) {
		return res, fmt.Errorf("pull secret %s for instance %q: %w", key, inst.Name, s.foreign(cur))
	}
	cred, err := s.tokens.GetAs(ctx, id, s.key(t))
	if err != nil {
		return res, fmt.Errorf("pull secret %s: %w for instance %q: %w", key, ErrNoToken, inst.Name, err)
	}
	res.ExpiresAt = cred.Expiry
	res.RefreshAt = cred.Expiry.Add(-time.Duration(s.threshold * float64(cred.Lifetime())))
	if cur != nil && s.carries(cur, t, cred) {
		res.Action = ActionReused // the common case, e.g. every Secret when a leader starts: nothing built
		return res, nil
	}
	desired, err := s.build(namespace, t, cred)
	if err != nil {
		return res, fmt.Errorf("pull secret %s for instance %q: %w", key, inst.Name, err)
	}
	stale := func(c *corev1.Secret) bool { return !sameContent(c, desired) }
	switch {
	case cur == nil:
		res.Restored = true
		res.Action, err = s.write(ctx, refresherWriter, key, false, desired, stale)
	case !stale(cur):
		res.Action = ActionReused
	default:
		res.Restored = edited(cur, desired)
		res.Action, err = s.write(ctx, refresherWriter, key, true, desired, stale)
	}
	if err != nil {
		return res, fmt.Errorf("writing pull secret %s for instance %q: %w", key, inst.Name, err)
	}
	if res.Action == ActionReused {
		res.Restored = false // written meanwhile by a concurrent caller
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
	_, deleted, err := s.deleteOwned(ctx, key)
	if err != nil {
		return false, fmt.Errorf("pull secret %s for instance %q: %w", key, inst.Name, err)
	}
	return deleted, nil
}

// DeleteRetired removes this installation's managed Secret at key, whose
// name no instance uses any more (config.RetiredSecretNames), like Delete.
// It returns the instance the Secret was written for (its annotation).
func (s *Store) DeleteRetired(ctx context.Context, key types.NamespacedName) (instance string, deleted bool, err error) {
	instance, deleted, err = s.deleteOwned(ctx, key)
	if err != nil {
		return instance, false, fmt.Errorf("retired pull secret %s: %w", key, err)
	}
	return instance, deleted, nil
}

// deleteOwned deletes the Secret at key if the cache has it and it is this
// installation's, and returns its instance annotation.
func (s *Store) deleteOwned(ctx context.Context, key types.NamespacedName) (string, bool, error) {
	cur, err := s.cached(ctx, key)
	if err != nil {
		return "", false, fmt.Errorf("reading from cache: %w", err)
	}
	if cur == nil || !s.owns(cur) {
		return "", false, nil
	}
	instance := cur.Annotations[AnnotationInstance]
	if err := s.paced(ctx, refresherWriter); err != nil {
		return instance, false, err
	}
	uid, rv := cur.UID, cur.ResourceVersion
	err = s.refresh.Delete(ctx, cur, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	s.metrics.SecretWrite(refresherWriter.name, "delete", err)
	if apierrors.IsNotFound(err) {
		return instance, false, nil
	}
	if err != nil {
		return instance, false, fmt.Errorf("deleting: %w", err)
	}
	return instance, true, nil
}

// carries reports whether cur already holds exactly what Sync would write
// for inst and cred, like sameContent but without building the Secret: its
// data digest is computed once per credential, not once per namespace.
func (s *Store) carries(cur *corev1.Secret, t target, cred credentials.Credential) bool {
	a := cur.Annotations
	if cur.Type != t.secretType() || !s.owns(cur) || !describes(a, t) ||
		(!t.id.IsWebhook() && cur.Labels[LabelPerServiceAccount] != "true") ||
		a[AnnotationFingerprint] != s.prints[t.inst.Name] ||
		a[AnnotationIssuedAt] != formatTime(cred.IssuedAt) || a[AnnotationExpiresAt] != formatTime(cred.Expiry) {
		return false
	}
	want, err := s.digestFor(t, cred)
	return err == nil && dataDigest(cur) == want
}

// digestFor is the data digest of t's Secret for cred, memoized per
// instance and kind of Secret for its current credential and hosts.
func (s *Store) digestFor(t target, cred credentials.Credential) (string, error) {
	inst := t.inst
	memo := inst.Name
	if t.token {
		memo += "\x00token"
	}
	hosts := hostsValue(inst.RegistryHosts)
	s.mu.Lock()
	d, ok := s.digests[memo]
	s.mu.Unlock()
	if ok && d.hosts == hosts && d.cred.Username == cred.Username && d.cred.Token.Reveal() == cred.Token.Reveal() &&
		d.cred.IssuedAt.Equal(cred.IssuedAt) && d.cred.Expiry.Equal(cred.Expiry) {
		return d.digest, nil
	}
	data, err := secretData(t, cred)
	if err != nil {
		return "", err
	}
	d = contentDigest{cred: cred, hosts: hosts, digest: DataDigest(data)}
	s.mu.Lock()
	s.digests[memo] = d
	s.mu.Unlock()
	return d.digest, nil
}

// contentDigest is the data digest of the Secret for one credential and
// host list.
type contentDigest struct {
	cred   credentials.Credential
	hosts  string
	digest string
}

// sameContent reports whether cur already is desired as far as the webhook
// cares: type, label, its annotations and exactly the one data key, whose
// content is compared by digest (a cached Secret carries only that).
func sameContent(cur, desired *corev1.Secret) bool {
	if cur.Type != desired.Type || !hasLabels(cur, desired.Labels) {
		return false
	}
	for k, v := range desired.Annotations {
		if cur.Annotations[k] != v {
			return false
		}
	}
	return dataDigest(cur) == DataDigest(desired.Data)
}

// edited tells a repair from a routine refresh: a Secret is edited when its
// data or annotations are unusable, or when it claims the lifetime of the
// token it should carry but its data differs. (The cache keeps only a
// digest, so an edited Secret that still names an older token is rewritten
// as a refresh.)
func edited(cur, desired *corev1.Secret) bool {
	a := cur.Annotations
	if dataDigest(cur) == "" || a[AnnotationInstance] == "" || a[AnnotationIdentity] == "" || a[AnnotationHosts] == "" {
		return true
	}
	if _, _, err := parseLifetime(a); err != nil {
		return true
	}
	return a[AnnotationIssuedAt] == desired.Annotations[AnnotationIssuedAt] &&
		a[AnnotationExpiresAt] == desired.Annotations[AnnotationExpiresAt] &&
		dataDigest(cur) != DataDigest(desired.Data)
}
