package pullsecret

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
)

// TokenSource is the token cache (credentials.Cache satisfies it).
type TokenSource interface {
	Get(ctx context.Context, key credentials.Key) (credentials.Credential, error)
}

// Options configures a Store.
type Options struct {
	// Reader is an informer cache holding only managed Secrets (selected by
	// the managed-by label): the hot path reads here, never the API server.
	Reader client.Reader
	// Writer talks to the API server directly.
	Writer client.Client
	Tokens TokenSource
	// Identity is the AWS identity tokens are minted for
	// (credentials.WebhookIdentity by default).
	Identity string
	// RefreshThreshold is the fraction of a token's lifetime left at which
	// its Secret is rewritten (config.DefaultRefreshThreshold by default).
	RefreshThreshold float64
	Now              func() time.Time
	Metrics          *metrics.Metrics
	Log              logr.Logger
}

// recentWrite bounds how long the Store trusts its own record of a write
// over a cache that has not shown it yet. The informer normally lags by
// milliseconds; the bound keeps a Secret deleted in that window from being
// trusted for long.
const recentWrite = 15 * time.Second

// Store keeps one managed pull Secret per (namespace, instance) usable.
//
// Writes of one Secret are coalesced: concurrent callers share one write
// (singleflight), and until the informer cache shows a write, callers that
// would write the same content again trust the Store's record of it
// instead of the stale cache. So a burst of admissions in a namespace, or
// admissions racing the refresher, write each Secret once per rotation.
type Store struct {
	reader    client.Reader
	writer    client.Client
	tokens    TokenSource
	identity  string
	threshold float64
	now       func() time.Time
	metrics   *metrics.Metrics
	log       logr.Logger

	flights   singleflight.Group // by Secret
	mu        sync.Mutex
	written   map[types.NamespacedName]writeRecord
	lastSweep time.Time
	digests   map[string]contentDigest // by instance
}

// writeRecord is what the Store last wrote to a Secret, until the cache
// shows it: the annotations that identify the content and its data digest.
type writeRecord struct {
	expiresAt, hosts, digest string
	at                       time.Time
}

// NewStore builds a Store, filling defaults for the optional fields.
func NewStore(o Options) *Store {
	s := &Store{
		reader:    o.Reader,
		writer:    o.Writer,
		tokens:    o.Tokens,
		identity:  o.Identity,
		threshold: o.RefreshThreshold,
		now:       o.Now,
		metrics:   o.Metrics,
		log:       o.Log,
		written:   map[types.NamespacedName]writeRecord{},
		digests:   map[string]contentDigest{},
	}
	if s.identity == "" {
		s.identity = credentials.WebhookIdentity
	}
	if s.threshold <= 0 || s.threshold >= 1 {
		s.threshold = config.DefaultRefreshThreshold
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log.GetSink() == nil {
		s.log = logr.Discard()
	}
	return s
}

// Ensure makes sure namespace holds a usable managed pull Secret for inst
// and returns its name. A fresh Secret costs one cache read and nothing
// else. On a dry run nothing is written and no token is minted (minting is
// a side effect on Artifactory); the name is still returned.
func (s *Store) Ensure(ctx context.Context, namespace string, inst config.Instance, dryRun bool) (Result, error) {
	key := types.NamespacedName{Namespace: namespace, Name: inst.SecretName}
	res := Result{SecretName: inst.SecretName}

	cached, err := s.cached(ctx, key)
	if err != nil {
		return res, fmt.Errorf("reading pull secret %s for instance %q from cache: %w", key, inst.Name, err)
	}
	if cached != nil {
		// The cache selects by label, so this only guards a misconfigured Reader.
		if !isManaged(cached) {
			return res, fmt.Errorf("pull secret %s for instance %q: %w", key, inst.Name, ErrForeignSecret)
		}
		if s.fresh(cached, inst) {
			res.Action = ActionReused
			return res, nil
		}
	}
	if dryRun {
		res.Action = ActionDryRun
		return res, nil
	}

	cred, err := s.tokens.Get(ctx, credentials.Key{Instance: inst.Name, Identity: s.identity})
	if err != nil {
		if cached != nil && s.valid(cached, inst) {
			res.Action = ActionFallback
			res.Warning = fmt.Sprintf("artifactory-pull-webhook: could not mint a new token for instance %q (%v); "+
				"using pull secret %q, valid until %s", inst.Name, err, inst.SecretName, cached.Annotations[AnnotationExpiresAt])
			s.log.Info("token mint failed, keeping still-valid pull secret",
				"namespace", namespace, "instance", inst.Name, "secret", inst.SecretName,
				"action", res.Action, "error", err.Error())
			return res, nil
		}
		return res, fmt.Errorf("pull secret %s: getting token for instance %q: %w", key, inst.Name, err)
	}
	// The token source may hand back the very credential the Secret holds
	// (it refreshes on its own schedule): rewriting it would change nothing.
	if cached != nil && s.valid(cached, inst) && cached.Annotations[AnnotationExpiresAt] == formatTime(cred.Expiry) {
		res.Action = ActionReused
		return res, nil
	}

	desired, err := s.build(namespace, inst, cred)
	if err != nil {
		return res, fmt.Errorf("pull secret %s for instance %q: %w", key, inst.Name, err)
	}
	stale := func(cur *corev1.Secret) bool { return !s.fresh(cur, inst) }
	res.Action, err = s.write(ctx, key, cached != nil, desired, stale)
	if err != nil {
		return res, fmt.Errorf("writing pull secret %s for instance %q: %w", key, inst.Name, err)
	}
	if res.Action != ActionReused {
		s.log.Info("wrote pull secret", "namespace", namespace, "instance", inst.Name,
			"secret", inst.SecretName, "action", res.Action, "expiresAt", formatTime(cred.Expiry))
	}
	return res, nil
}

// cached returns the Secret from the cache, or nil when there is none. A
// cached Secret is reduced (see SecretTransform): read it, never write it.
// Once the cache shows the Store's last write, its record is dropped.
func (s *Store) cached(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	var sec corev1.Secret
	if err := s.reader.Get(ctx, key, &sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	s.mu.Lock()
	if rec, ok := s.written[key]; ok && sec.Annotations[AnnotationExpiresAt] == rec.expiresAt {
		delete(s.written, key)
	}
	s.mu.Unlock()
	return &sec, nil
}

// write creates (exists false) or updates the Secret at key with desired's
// content unless stale says the current object needs no write. Concurrent
// callers for one Secret share one write; a caller that only joined it, or
// that would rewrite what the Store wrote moments ago, gets ActionReused.
func (s *Store) write(ctx context.Context, key types.NamespacedName, exists bool, desired *corev1.Secret, stale func(*corev1.Secret) bool) (Action, error) {
	if s.recentlyWrote(key, desired) {
		return ActionReused, nil
	}
	ran := false // set only in the caller whose function the flight runs
	v, err, _ := s.flights.Do(key.String(), func() (any, error) {
		ran = true
		// A flight that ended between the check above and now wrote it.
		if s.recentlyWrote(key, desired) {
			return ActionReused, nil
		}
		var action Action
		var err error
		if exists {
			action, err = s.update(ctx, key, desired, stale)
		} else {
			action, err = s.create(ctx, desired, stale)
		}
		if err == nil && action != ActionReused {
			s.rememberWrite(key, desired)
		}
		return action, err
	})
	if err != nil {
		return "", err
	}
	if !ran {
		return ActionReused, nil
	}
	return v.(Action), nil
}

// recentlyWrote reports whether the Store wrote desired's content to key
// within recentWrite and the cache has not shown that write yet.
func (s *Store) recentlyWrote(key types.NamespacedName, desired *corev1.Secret) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.written[key]
	return ok && s.now().Sub(rec.at) < recentWrite && rec == recordOf(desired, rec.at)
}

// rememberWrite records a successful write of desired to key, and drops
// records older than recentWrite (whose Secrets saw no admission since).
func (s *Store) rememberWrite(key types.NamespacedName, desired *corev1.Secret) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if now.Sub(s.lastSweep) >= recentWrite {
		for k, rec := range s.written {
			if now.Sub(rec.at) >= recentWrite {
				delete(s.written, k)
			}
		}
		s.lastSweep = now
	}
	s.written[key] = recordOf(desired, now)
}

// forgetWrite drops the record of the Store's last write to key: the
// Secret was deleted, so what was written is gone.
func (s *Store) forgetWrite(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.written, key)
}

func recordOf(sec *corev1.Secret, at time.Time) writeRecord {
	return writeRecord{expiresAt: sec.Annotations[AnnotationExpiresAt], hosts: sec.Annotations[AnnotationHosts],
		digest: DataDigest(sec.Data), at: at}
}

// create writes a new Secret. AlreadyExists means the cache lagged behind
// another writer or a foreign Secret holds the name: update resolves both.
func (s *Store) create(ctx context.Context, desired *corev1.Secret, stale func(*corev1.Secret) bool) (Action, error) {
	err := s.writer.Create(ctx, desired)
	s.metrics.SecretWrite("create", err)
	if err == nil {
		return ActionCreated, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating: %w", err)
	}
	return s.update(ctx, client.ObjectKeyFromObject(desired), desired, stale)
}

// update rewrites the managed Secret at key with desired's content unless
// stale says the current object needs no write. The object is read from
// the API server, never taken from the cache: a cached Secret lacks its
// data and every label and annotation the webhook does not own, which an
// update would erase. Its resourceVersion guards the write; every conflict
// re-reads the object, which may by then be fresh from another writer.
func (s *Store) update(ctx context.Context, key types.NamespacedName, desired *corev1.Secret, stale func(*corev1.Secret) bool) (Action, error) {
	action := ActionUpdated
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		next := &corev1.Secret{}
		if err := s.writer.Get(ctx, key, next); err != nil {
			return fmt.Errorf("reading from the API server: %w", err)
		}
		// The digest annotation belongs to the cache: one found on the
		// server was set by hand and is neither trusted nor kept.
		delete(next.Annotations, AnnotationDataSHA256)
		if !isManaged(next) {
			return ErrForeignSecret
		}
		if !stale(next) {
			action = ActionReused
			return nil
		}
		if next.Annotations == nil {
			next.Annotations = map[string]string{}
		}
		for k, v := range desired.Annotations {
			next.Annotations[k] = v
		}
		next.Data = desired.Data
		next.StringData = nil
		err := s.writer.Update(ctx, next)
		s.metrics.SecretWrite("update", err)
		return err
	})
	if err != nil {
		return "", err
	}
	return action, nil
}

// build returns the Secret that carries cred for every host of inst.
func (s *Store) build(namespace string, inst config.Instance, cred credentials.Credential) (*corev1.Secret, error) {
	data, err := DockerConfigJSON(inst.RegistryHosts, cred.Username, cred.Token)
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      inst.SecretName,
			Namespace: namespace,
			Labels:    map[string]string{ManagedByLabel: ManagedByValue},
			Annotations: map[string]string{
				AnnotationInstance:  inst.Name,
				AnnotationIdentity:  s.identity,
				AnnotationIssuedAt:  formatTime(cred.IssuedAt),
				AnnotationExpiresAt: formatTime(cred.Expiry),
				AnnotationHosts:     hostsValue(inst.RegistryHosts),
			},
		},
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: data},
	}, nil
}

// lifetime reads the token lifetime of a Secret that describes inst for
// this store's identity; ok is false for any other Secret.
func (s *Store) lifetime(sec *corev1.Secret, inst config.Instance) (issued, expires time.Time, ok bool) {
	a := sec.Annotations
	if !isManaged(sec) || sec.Type != corev1.SecretTypeDockerConfigJson || dataDigest(sec) == "" ||
		a[AnnotationInstance] != inst.Name || a[AnnotationIdentity] != s.identity ||
		a[AnnotationHosts] != hostsValue(inst.RegistryHosts) {
		return time.Time{}, time.Time{}, false
	}
	issued, expires, err := parseLifetime(a)
	if err != nil {
		return time.Time{}, time.Time{}, false
	}
	return issued, expires, true
}

// fresh reports whether sec serves inst and is not yet due for refresh.
func (s *Store) fresh(sec *corev1.Secret, inst config.Instance) bool {
	issued, expires, ok := s.lifetime(sec, inst)
	if !ok {
		return false
	}
	refreshAt := expires.Add(-time.Duration(s.threshold * float64(expires.Sub(issued))))
	return s.now().Before(refreshAt)
}

// valid reports whether sec serves inst and its token has not expired.
func (s *Store) valid(sec *corev1.Secret, inst config.Instance) bool {
	_, expires, ok := s.lifetime(sec, inst)
	return ok && s.now().Before(expires)
}

func parseLifetime(a map[string]string) (issued, expires time.Time, err error) {
	if issued, err = time.Parse(time.RFC3339, a[AnnotationIssuedAt]); err != nil {
		return issued, expires, fmt.Errorf("annotation %s: %w", AnnotationIssuedAt, err)
	}
	if expires, err = time.Parse(time.RFC3339, a[AnnotationExpiresAt]); err != nil {
		return issued, expires, fmt.Errorf("annotation %s: %w", AnnotationExpiresAt, err)
	}
	if !expires.After(issued) {
		return issued, expires, fmt.Errorf("annotation %s is not after %s", AnnotationExpiresAt, AnnotationIssuedAt)
	}
	return issued, expires, nil
}

func isManaged(sec *corev1.Secret) bool { return sec.Labels[ManagedByLabel] == ManagedByValue }

func hostsValue(hosts []string) string { return strings.Join(hosts, ",") }

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
