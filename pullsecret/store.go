package pullsecret

import (
	"context"
	"errors"
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
	// GetAs returns id's token for key (id.Key).
	GetAs(ctx context.Context, id credentials.Identity, key credentials.Key) (credentials.Credential, error)
}

// Options configures a Store.
type Options struct {
	// Reader is an informer cache holding only managed Secrets (selected by
	// the managed-by label): the hot path reads here, never the API server.
	Reader client.Reader
	// Writer talks to the API server directly: admissions write through
	// it, and the refresher too when RefreshWriter is nil.
	Writer client.Client
	// RefreshWriter is the refresher's own client to the API server
	// (optional): the refresher's reads and writes of a Secret (Sync,
	// deletes) go through it, never through Writer, so that a rotation's
	// writes share no client, and no client-side limit, with admissions.
	RefreshWriter client.Client
	// RefreshPace, when set, paces the refresher's writes: one Wait per
	// write of a Secret (config refresh.writesPerSecond), taken before the
	// write is shared with other callers (see Store).
	RefreshPace Pacer
	Tokens      TokenSource
	// Fingerprints are the credentials.Fingerprint of each instance's
	// tokens, by instance name (none when absent).
	Fingerprints map[string]string
	// Installation is config.Installation (config.DefaultInstallation when
	// empty): the Store writes, refreshes and deletes only the managed
	// Secrets of its installation; another's are foreign to it.
	Installation string
	// RefreshThreshold is the fraction of a token's lifetime left at which
	// its Secret is rewritten (config.DefaultRefreshThreshold by default).
	RefreshThreshold float64
	// WriteBackoff spaces out the refresher's writes of a Secret whose
	// writes keep failing (see Store). Its Base defaults to
	// DefaultWriteBackoffBase, its Cap to config.DefaultBackoffCap.
	WriteBackoff credentials.Backoff
	Now          func() time.Time
	Metrics      *metrics.Metrics
	Log          logr.Logger
}

// Pacer paces writes (flowcontrol.RateLimiter satisfies it).
type Pacer interface {
	// Wait blocks until the next write may start, or ctx ends.
	Wait(ctx context.Context) error
}

// recentWrite bounds how long the Store trusts its own record of a write
// over a cache that has not shown it yet. The informer normally lags by
// milliseconds; the bound keeps a Secret deleted in that window from being
// trusted for long.
const recentWrite = 15 * time.Second

// DefaultWriteBackoffBase is the refresher's wait after the first failed
// write of a Secret (halved at most by jitter), doubled per further failure.
// A write fails only once its own retries are spent (five attempts on
// conflicts), so even the first failure is more than a blip.
const DefaultWriteBackoffBase = 5 * time.Second

// Store keeps one managed pull Secret per (namespace, instance) usable.
//
// Writes of one Secret are coalesced: concurrent callers share one write
// (singleflight), and until the informer cache shows a write, callers that
// would write the same content again trust the Store's record of it
// instead of the stale cache. So a burst of admissions in a namespace, or
// admissions racing the refresher, write each Secret once per rotation.
//
// Failing writes are coalesced too. A failed write (by either path) starts
// a backoff for that Secret, cleared by the next successful write; the
// refresher (Sync) attempts no write of it before the backoff ends and gets
// a *WriteError with Held set instead. Admissions (Ensure) always try, since
// their pod is at stake and they come no faster than pods are created; one
// in flight is shared with every caller. So while the API server refuses a
// Secret, it sees one write per admission (concurrent ones share it) and at
// most one by the refresher per backoff step, never the two piling up.
//
// The refresher's writes are paced (RefreshPace) and go through its own
// client (RefreshWriter); admissions' are never paced. Both writers share
// one Store, so that a write of one Secret is still shared between them and
// the record of a recent write serves both (two Stores would each write).
// The refresher waits for its pace before it starts or joins a shared
// write, never inside one: an admission that joins a write the refresher
// started waits for that one request only, never for the refresher's
// queue. The shared write runs with the client of the caller that started
// it.
type Store struct {
	reader    client.Reader
	writer    client.Client
	refresh   client.Client // the refresher's client
	pace      Pacer         // nil: unpaced
	tokens    TokenSource
	prints    map[string]string // fingerprints by instance
	install   string
	threshold float64
	backoff   credentials.Backoff
	now       func() time.Time
	metrics   *metrics.Metrics
	log       logr.Logger

	flights   singleflight.Group // by Secret
	mu        sync.Mutex
	written   map[types.NamespacedName]writeRecord
	lastSweep time.Time
	failed    map[types.NamespacedName]writeFailure
	digests   map[string]contentDigest // by instance
}

// writeFailure is the latest failed write of a Secret, until one succeeds.
type writeFailure struct {
	err      error
	failures int       // consecutive failed writes, by any writer
	retryAt  time.Time // the refresher writes again from then on
}

// WriteError is the error of a failed write of a managed Secret, and what
// Sync returns without writing while the Secret backs off after one.
type WriteError struct {
	Err      error     // the latest write error
	Failures int       // consecutive failed writes of this Secret, by either writer
	RetryAt  time.Time // the refresher attempts no write before this time
	Held     bool      // no write was attempted: the Secret was backing off
}

func (e *WriteError) Error() string {
	if !e.Held {
		return e.Err.Error()
	}
	return fmt.Sprintf("not written again before %s after %d consecutive failed writes: %v",
		e.RetryAt.UTC().Format(time.RFC3339), e.Failures, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// writer is who asks for a write: admissions always try, the refresher
// waits out a Secret's write backoff and its pace, and writes through its
// own client.
type writer struct {
	name      string // the writer label of secret_writes_total
	waits     bool
	refresher bool
}

var (
	admissionWriter = writer{name: metrics.WriterAdmission}
	refresherWriter = writer{name: metrics.WriterRefresher, waits: true, refresher: true}
)

// client is w's client to the API server.
func (s *Store) client(w writer) client.Client {
	if w.refresher {
		return s.refresh
	}
	return s.writer
}

// paced waits for the refresher's next write (no wait for admissions). The
// limiter's waiters are served in the order they called (x/time/rate
// reserves a slot per call), so writes keep the order the refresher's
// workers took their Secrets from the queue in.
func (s *Store) paced(ctx context.Context, w writer) error {
	if !w.refresher || s.pace == nil {
		return nil
	}
	if err := s.pace.Wait(ctx); err != nil {
		return fmt.Errorf("waiting for the refresher's write pace (refresh.writesPerSecond): %w", err)
	}
	return nil
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
		refresh:   o.RefreshWriter,
		pace:      o.RefreshPace,
		tokens:    o.Tokens,
		prints:    o.Fingerprints,
		install:   o.Installation,
		threshold: o.RefreshThreshold,
		now:       o.Now,
		metrics:   o.Metrics,
		log:       o.Log,
		backoff:   o.WriteBackoff,
		written:   map[types.NamespacedName]writeRecord{},
		failed:    map[types.NamespacedName]writeFailure{},
		digests:   map[string]contentDigest{},
	}
	if s.refresh == nil {
		s.refresh = s.writer
	}
	if s.backoff.Base <= 0 {
		s.backoff.Base = DefaultWriteBackoffBase
	}
	if s.backoff.Cap <= 0 {
		s.backoff.Cap = config.DefaultBackoffCap
	}
	if s.install == "" {
		s.install = config.DefaultInstallation
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
	return s.EnsureAs(ctx, namespace, inst, credentials.Identity{}, dryRun)
}

// EnsureAs is Ensure for id's Secret of inst (SecretName), holding id's
// token.
func (s *Store) EnsureAs(ctx context.Context, namespace string, inst config.Instance, id credentials.Identity, dryRun bool) (Result, error) {
	t := newTarget(inst, id)
	key := types.NamespacedName{Namespace: namespace, Name: t.name}
	res := Result{SecretName: t.name}

	cached, err := s.cached(ctx, key)
	if err != nil {
		return res, fmt.Errorf("reading pull secret %s for instance %q from cache: %w", key, inst.Name, err)
	}
	if cached != nil {
		// The cache selects by the managed label: a Secret it holds that is
		// not ours is another installation's (or a misconfigured Reader's).
		if !s.owns(cached) {
			return res, fmt.Errorf("pull secret %s for instance %q: %w", key, inst.Name, s.foreign(cached))
		}
		if s.fresh(cached, t) {
			res.Action = ActionReused
			return res, nil
		}
	}
	if dryRun {
		res.Action = ActionDryRun
		return res, nil
	}
	// A still-valid Secret is the fallback when minting or writing fails,
	// and also when either is too slow: stop waiting for them a little
	// before the admission's deadline, so that the fallback still answers.
	usable := cached != nil && s.valid(cached, t)
	if usable {
		var cancel context.CancelFunc
		ctx, cancel = withFallbackTime(ctx)
		defer cancel()
	}

	cred, err := s.tokens.GetAs(ctx, id, s.key(t))
	if err != nil {
		if usable {
			return s.fallback(res, namespace, t, cached, "mint a new token", err), nil
		}
		return res, fmt.Errorf("pull secret %s: getting token for instance %q: %w", key, inst.Name, err)
	}
	// The token source may hand back the very credential the Secret holds
	// (it refreshes on its own schedule): rewriting it would change nothing.
	if usable && cached.Annotations[AnnotationFingerprint] == s.prints[t.inst.Name] &&
		cached.Annotations[AnnotationExpiresAt] == formatTime(cred.Expiry) {
		res.Action = ActionReused
		return res, nil
	}

	desired, err := s.build(namespace, t, cred)
	if err != nil {
		return res, fmt.Errorf("pull secret %s for instance %q: %w", key, inst.Name, err)
	}
	stale := func(cur *corev1.Secret) bool { return !s.fresh(cur, t) }
	res.Action, err = s.write(ctx, admissionWriter, key, cached != nil, desired, stale)
	if err != nil && usable && !errors.Is(err, ErrForeignSecret) && !apierrors.IsNotFound(err) {
		// The refresh could not be written; the Secret as it is still works.
		return s.fallback(res, namespace, t, cached, "write the refreshed pull secret", err), nil
	}
	if err != nil {
		return res, fmt.Errorf("writing pull secret %s for instance %q: %w", key, inst.Name, err)
	}
	if res.Action != ActionReused {
		s.log.Info("wrote pull secret", "namespace", namespace, "instance", inst.Name,
			"secret", t.name, "action", res.Action, "expiresAt", formatTime(cred.Expiry))
	}
	return res, nil
}

// fallback answers with the still-valid cached Secret after what failed
// with err, and says so in a warning and a log line.
func (s *Store) fallback(res Result, namespace string, t target, cached *corev1.Secret, what string, err error) Result {
	res.Action = ActionFallback
	res.Warning = fmt.Sprintf("artifactory-pull-webhook: could not %s for instance %q (%v); using pull secret %q, valid until %s",
		what, t.inst.Name, err, t.name, cached.Annotations[AnnotationExpiresAt])
	s.log.Info("could not "+what+", keeping still-valid pull secret",
		"namespace", namespace, "instance", t.inst.Name, "secret", t.name, "action", res.Action, "error", err.Error())
	return res
}

// target is what one Ensure or Sync acts for: an instance, the identity
// whose tokens the Secret holds, and the Secret's name they give.
type target struct {
	inst config.Instance
	id   credentials.Identity
	name string
	// token marks the instance's generic token Secret (tokenSecretName):
	// type Opaque, written only by the refresher, never on pods.
	token bool
}

func newTarget(inst config.Instance, id credentials.Identity) target {
	return target{inst: inst, id: id, name: SecretName(inst, id)}
}

// newTokenTarget is the target of inst's generic token Secret.
func newTokenTarget(inst config.Instance) target {
	return target{inst: inst, name: inst.TokenSecretName, token: true}
}

// secretType is the type of t's Secret.
func (t target) secretType() corev1.SecretType {
	if t.token {
		return corev1.SecretTypeOpaque
	}
	return corev1.SecretTypeDockerConfigJson
}

// what names t's kind of Secret in logs and Events.
func (t target) what() string {
	if t.token {
		return "token secret"
	}
	return "pull secret"
}

// action is the lifecycle metric's action for t's Secret: a generic token
// Secret's are told apart (token_provisioned, token_refreshed, ...).
func (t target) action(a string) string {
	if t.token {
		return metrics.LifecycleTokenPrefix + a
	}
	return a
}

// Keys of a generic token Secret.
const (
	TokenSecretUsername   = "username"
	TokenSecretToken      = "token"
	TokenSecretURL        = "url"
	TokenSecretRegistry   = "registry"   // the instance's first registry host that is no wildcard
	TokenSecretRegistries = "registries" // all of them, comma-separated
)

// secretData is the data of t's Secret carrying cred.
func secretData(t target, cred credentials.Credential) (map[string][]byte, error) {
	if t.token {
		return map[string][]byte{
			TokenSecretUsername:   []byte(cred.Username),
			TokenSecretToken:      []byte(cred.Token.Reveal()),
			TokenSecretURL:        []byte(t.inst.URL),
			TokenSecretRegistry:   []byte(config.LoginHost(t.inst.RegistryHosts)),
			TokenSecretRegistries: []byte(hostsValue(t.inst.RegistryHosts)),
		}, nil
	}
	data, err := DockerConfigJSON(t.inst.RegistryHosts, cred.Username, cred.Token)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{corev1.DockerConfigJsonKey: data}, nil
}

// key is the token cache key of t's tokens.
func (s *Store) key(t target) credentials.Key {
	return t.id.Key(t.inst.Name, s.prints[t.inst.Name])
}

// fallbackMargin is how long before the admission's deadline Ensure stops
// waiting for a mint or a write when a still-valid Secret can answer instead
// (at most a quarter of the time left).
const fallbackMargin = 500 * time.Millisecond

// withFallbackTime shortens ctx's deadline by the fallback margin.
func withFallbackTime(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	margin := min(fallbackMargin, time.Until(dl)/4)
	return context.WithDeadline(ctx, dl.Add(-margin))
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
// A failed write returns a *WriteError and starts the Secret's backoff; a
// writer that waits gets a held *WriteError until the backoff ends.
func (s *Store) write(ctx context.Context, w writer, key types.NamespacedName, exists bool, desired *corev1.Secret, stale func(*corev1.Secret) bool) (Action, error) {
	if s.recentlyWrote(key, desired) {
		return ActionReused, nil
	}
	if w.waits {
		if err := s.held(key); err != nil {
			return "", err
		}
	}
	// Outside the flight: an admission joining it must not wait for the pace.
	if err := s.paced(ctx, w); err != nil {
		return "", err
	}
	ran := false // set only in the caller whose function the flight runs
	ch := s.flights.DoChan(key.String(), func() (any, error) {
		ran = true
		// A flight that ended between the check above and now wrote it.
		if s.recentlyWrote(key, desired) {
			return ActionReused, nil
		}
		// The write is shared: it must not end with the caller that
		// started it, nor fail because that caller's deadline passed.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
		defer cancel()
		var action Action
		var err error
		if exists {
			action, err = s.update(ctx, w, key, desired, stale)
			if apierrors.IsNotFound(err) { // deleted since the cache saw it
				action, err = s.create(ctx, w, desired, stale)
			}
		} else {
			action, err = s.create(ctx, w, desired, stale)
		}
		switch {
		case errors.Is(err, ErrForeignSecret):
			// Not a failed write: nothing was attempted.
		case err != nil:
			return action, s.writeFailed(key, err)
		default:
			s.writeSucceeded(key)
			if action != ActionReused {
				s.rememberWrite(key, desired)
			}
		}
		return action, err
	})
	var res singleflight.Result
	select {
	case <-ctx.Done():
		// This caller gives up; the shared write goes on for the others.
		return "", fmt.Errorf("waiting for the write: %w", ctx.Err())
	case res = <-ch:
	}
	if res.Err != nil {
		return "", res.Err
	}
	if !ran {
		return ActionReused, nil
	}
	return res.Val.(Action), nil
}

// writeTimeout bounds one shared write of a Secret (its retries included).
const writeTimeout = 10 * time.Second

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
	delete(s.failed, key) // a failure to update it says nothing about recreating it
}

// held returns a held *WriteError while the Secret at key backs off after
// a failed write, nil otherwise.
func (s *Store) held(key types.NamespacedName) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.failed[key]
	if !ok || !s.now().Before(f.retryAt) {
		return nil
	}
	return &WriteError{Err: f.err, Failures: f.failures, RetryAt: f.retryAt, Held: true}
}

// writeFailed records a failed write of the Secret at key and returns it
// as a *WriteError. Records whose backoff ended long ago (their Secrets saw
// no write since) are dropped on the way.
func (s *Store) writeFailed(key types.NamespacedName, err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, f := range s.failed {
		if now.Sub(f.retryAt) >= recentWrite {
			delete(s.failed, k)
		}
	}
	f := s.failed[key]
	f.err, f.failures = err, f.failures+1
	// Backoff.Delay waits from the second failure on; a write fails only
	// after its own retries, so it waits from the first.
	f.retryAt = now.Add(s.backoff.Delay(f.failures + 1))
	s.failed[key] = f
	return &WriteError{Err: err, Failures: f.failures, RetryAt: f.retryAt}
}

// writeSucceeded ends the backoff of the Secret at key.
func (s *Store) writeSucceeded(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.failed, key)
}

func recordOf(sec *corev1.Secret, at time.Time) writeRecord {
	return writeRecord{expiresAt: sec.Annotations[AnnotationExpiresAt], hosts: sec.Annotations[AnnotationHosts],
		digest: DataDigest(sec.Data), at: at}
}

// create writes a new Secret. AlreadyExists means the cache lagged behind
// another writer or a foreign Secret holds the name: update resolves both.
func (s *Store) create(ctx context.Context, w writer, desired *corev1.Secret, stale func(*corev1.Secret) bool) (Action, error) {
	err := s.client(w).Create(ctx, desired)
	s.metrics.SecretWrite(w.name, "create", err)
	if err == nil {
		return ActionCreated, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating: %w", err)
	}
	return s.update(ctx, w, client.ObjectKeyFromObject(desired), desired, stale)
}

// update rewrites the managed Secret at key with desired's content unless
// stale says the current object needs no write. The object is read from
// the API server, never taken from the cache: a cached Secret lacks its
// data and every label and annotation the webhook does not own, which an
// update would erase. Its resourceVersion guards the write; every conflict
// re-reads the object, which may by then be fresh from another writer.
func (s *Store) update(ctx context.Context, w writer, key types.NamespacedName, desired *corev1.Secret, stale func(*corev1.Secret) bool) (Action, error) {
	action := ActionUpdated
	var wrongType *corev1.Secret
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		next := &corev1.Secret{}
		if err := s.client(w).Get(ctx, key, next); err != nil {
			return fmt.Errorf("reading from the API server: %w", err)
		}
		// The digest annotation belongs to the cache: one found on the
		// server was set by hand and is neither trusted nor kept.
		delete(next.Annotations, AnnotationDataSHA256)
		if !s.owns(next) {
			return s.foreign(next)
		}
		if next.Type != desired.Type {
			wrongType = next // immutable: only a new Secret can fix it
			return nil
		}
		if !stale(next) && hasLabels(next, desired.Labels) {
			action = ActionReused
			return nil
		}
		if next.Annotations == nil {
			next.Annotations = map[string]string{}
		}
		for k, v := range desired.Annotations {
			next.Annotations[k] = v
		}
		for k, v := range desired.Labels {
			next.Labels[k] = v // next is managed: its labels are not nil
		}
		next.Data = desired.Data
		next.StringData = nil
		err := s.client(w).Update(ctx, next)
		s.metrics.SecretWrite(w.name, "update", err)
		return err
	})
	if err != nil {
		return "", err
	}
	if wrongType != nil {
		return s.replace(ctx, w, wrongType, desired)
	}
	return action, nil
}

// replace deletes cur, a managed Secret of the wrong type (kubelet reads
// only kubernetes.io/dockerconfigjson pull Secrets, and a Secret's type is
// immutable), and creates desired in its place. The delete is conditioned
// on cur's UID and resourceVersion, so a Secret changed meanwhile is left
// alone (a Conflict: the write is retried later).
func (s *Store) replace(ctx context.Context, w writer, cur, desired *corev1.Secret) (Action, error) {
	uid, rv := cur.UID, cur.ResourceVersion
	err := s.client(w).Delete(ctx, cur, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	s.metrics.SecretWrite(w.name, "delete", err)
	if err != nil && !apierrors.IsNotFound(err) {
		return "", fmt.Errorf("deleting the managed Secret of type %q to recreate it as %q: %w", cur.Type, desired.Type, err)
	}
	s.log.Info("replacing managed pull secret of the wrong type", "namespace", cur.Namespace, "secret", cur.Name,
		"type", string(cur.Type))
	err = s.client(w).Create(ctx, desired)
	s.metrics.SecretWrite(w.name, "create", err)
	if apierrors.IsAlreadyExists(err) {
		// Another writer recreated it first. Of the right type, update
		// brings it in line; of the wrong type again, this write fails
		// (and backs off) rather than replacing it in a loop.
		key := client.ObjectKeyFromObject(desired)
		again := &corev1.Secret{}
		if err := s.client(w).Get(ctx, key, again); err != nil {
			return "", fmt.Errorf("reading the recreated Secret: %w", err)
		}
		if again.Type != desired.Type {
			return "", fmt.Errorf("recreated as type %q by another writer meanwhile", again.Type)
		}
		return s.update(ctx, w, key, desired, func(cur *corev1.Secret) bool {
			return cur.Annotations[AnnotationExpiresAt] != desired.Annotations[AnnotationExpiresAt]
		})
	}
	if err != nil {
		return "", fmt.Errorf("recreating as %q: %w", desired.Type, err)
	}
	return ActionCreated, nil
}

// build returns t's Secret carrying cred for every host of t's instance.
func (s *Store) build(namespace string, t target, cred credentials.Credential) (*corev1.Secret, error) {
	data, err := secretData(t, cred)
	if err != nil {
		return nil, err
	}
	a := map[string]string{
		AnnotationInstallation: s.install,
		AnnotationInstance:     t.inst.Name,
		AnnotationIdentity:     t.id.Name(),
		AnnotationFingerprint:  s.prints[t.inst.Name],
		AnnotationIssuedAt:     formatTime(cred.IssuedAt),
		AnnotationExpiresAt:    formatTime(cred.Expiry),
		AnnotationHosts:        hostsValue(t.inst.RegistryHosts),
	}
	labels := map[string]string{ManagedByLabel: ManagedByValue}
	if !t.id.IsWebhook() {
		a[AnnotationServiceAccount] = t.id.ServiceAccount
		labels[LabelPerServiceAccount] = "true"
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:        t.name,
			Namespace:   namespace,
			Labels:      labels,
			Annotations: a,
		},
		Type: t.secretType(),
		Data: data,
	}, nil
}

// describes reports whether the annotations a are those of a Secret of t
// (its instance, identity and hosts).
func describes(a map[string]string, t target) bool {
	return a[AnnotationInstance] == t.inst.Name && a[AnnotationIdentity] == t.id.Name() &&
		a[AnnotationHosts] == hostsValue(t.inst.RegistryHosts) &&
		(t.id.IsWebhook() || a[AnnotationServiceAccount] == t.id.ServiceAccount)
}

// lifetime reads the token lifetime of a Secret of t; ok is false for any
// other Secret.
func (s *Store) lifetime(sec *corev1.Secret, t target) (issued, expires time.Time, ok bool) {
	a := sec.Annotations
	if !s.owns(sec) || sec.Type != t.secretType() || dataDigest(sec) == "" || !describes(a, t) {
		return time.Time{}, time.Time{}, false
	}
	issued, expires, err := parseLifetime(a)
	if err != nil {
		return time.Time{}, time.Time{}, false
	}
	return issued, expires, true
}

// fresh reports whether sec serves inst, carries a token of the current
// fingerprint and is not yet due for refresh. (A token of another
// fingerprint is rewritten, but stays valid as a fallback until it expires:
// an upgrade or a tokenTTL change during an outage keeps pods pulling.)
func (s *Store) fresh(sec *corev1.Secret, t target) bool {
	if sec.Annotations[AnnotationFingerprint] != s.prints[t.inst.Name] {
		return false
	}
	issued, expires, ok := s.lifetime(sec, t)
	if !ok {
		return false
	}
	refreshAt := expires.Add(-time.Duration(s.threshold * float64(expires.Sub(issued))))
	return s.now().Before(refreshAt)
}

// valid reports whether sec serves inst and its token has not expired.
func (s *Store) valid(sec *corev1.Secret, t target) bool {
	_, expires, ok := s.lifetime(sec, t)
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

// foreign is the error for obj, a Secret this installation does not own:
// an InstallationConflictError when another installation manages it.
func (s *Store) foreign(obj metav1.Object) error {
	if obj.GetLabels()[ManagedByLabel] != ManagedByValue {
		return ErrForeignSecret
	}
	owner, ok := obj.GetAnnotations()[AnnotationInstallation]
	if !ok {
		owner = config.DefaultInstallation
	}
	return NewInstallationConflictError(owner)
}

func isManaged(sec *corev1.Secret) bool { return sec.Labels[ManagedByLabel] == ManagedByValue }

// owns reports whether obj is a managed Secret of this Store's installation.
// A managed Secret without the installation annotation was written before
// installations were told apart: it is the default installation's.
func (s *Store) owns(obj metav1.Object) bool { return ownedBy(obj, s.install) }

// ownedBy reports whether obj is a managed Secret of installation install:
// the managed-by label, and its installation annotation (none for the
// default installation).
func ownedBy(obj metav1.Object, install string) bool {
	if obj.GetLabels()[ManagedByLabel] != ManagedByValue {
		return false
	}
	got, ok := obj.GetAnnotations()[AnnotationInstallation]
	return got == install || (!ok && install == config.DefaultInstallation)
}

func hostsValue(hosts []string) string { return strings.Join(hosts, ",") }

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// logValues name t's Secret at key in log lines: instance, Secret, and for
// a ServiceAccount's identity the ServiceAccount and role.
func (t target) logValues(key types.NamespacedName) []any {
	name := key.Name
	if name == "" {
		name = t.name
	}
	kv := []any{"instance", t.inst.Name, "secret", name}
	if !t.id.IsWebhook() {
		kv = append(kv, "serviceAccount", t.id.ServiceAccount)
	}
	if t.id.Shared() {
		kv = append(kv, "role", t.id.RoleARN)
	}
	return kv
}

// asWhom is AsWhom of t's identity.
func (t target) asWhom() string { return AsWhom(t.id) }

// AsWhom is " as ServiceAccount <name> (role <arn>)" for a ServiceAccount's
// role, " as ServiceAccount <name>" for a ServiceAccount itself (the OIDC
// exchange) and "" for the webhook's identity, for Events and warnings.
func AsWhom(id credentials.Identity) string {
	switch {
	case id.IsWebhook():
		return ""
	case id.Shared():
		return fmt.Sprintf(" as ServiceAccount %s (role %s)", id.ServiceAccount, id.RoleARN)
	}
	return " as ServiceAccount " + id.ServiceAccount
}

// hasLabels reports whether sec carries every label of want: a Secret of
// a ServiceAccount's identity that lost its label is out of the informer
// that selects by it, and is rewritten even when its token is current.
func hasLabels(sec *corev1.Secret, want map[string]string) bool {
	for k, v := range want {
		if sec.Labels[k] != v {
			return false
		}
	}
	return true
}
