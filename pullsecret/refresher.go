package pullsecret

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
)

// Event reasons recorded on a namespace by the refresher. TokenExchangeFailed
// is the reason the admission handler uses for the same condition.
const (
	ReasonProvisioned         = "PullSecretProvisioned"
	ReasonRefreshed           = "PullSecretRefreshed"
	ReasonRestored            = "PullSecretRestored"
	ReasonDeleted             = "PullSecretDeleted"
	ReasonWriteFailed         = "PullSecretWriteFailed"
	ReasonTokenExchangeFailed = "TokenExchangeFailed"
)

const (
	eventActionRefresh = "RefreshPullSecret"
	eventActionDelete  = "DeletePullSecret"
	// refreshSlack lands a requeue just after a token's refresh point, where
	// the token source considers it due and mints.
	refreshSlack = 250 * time.Millisecond
	// minRetry bounds how soon a failed refresh is retried when the token
	// source sets no backoff of its own.
	minRetry = time.Second
)

// RetryState reports a token source's failures (credentials.Cache).
type RetryState interface {
	// LastError is the error of the key's latest mint, nil after a success.
	LastError(credentials.Key) error
	// NextAttempt is when the key may mint again; zero when it may now.
	NextAttempt(credentials.Key) time.Time
}

// RefresherOptions configures a Refresher.
type RefresherOptions struct {
	Config *config.Config
	// Store writes the Secrets; its token source must be Retry's.
	Store *Store
	// Reader is the informer cache: Namespaces as PartialObjectMetadata and
	// managed Secrets only.
	Reader client.Reader
	// Secrets are the informer caches the managed Secrets are watched
	// through (one per Secret name: see cmd's secretCaches); the manager's
	// own cache when empty.
	Secrets []cache.Cache
	// Retry tells when a failed token source may be asked again.
	Retry RetryState
	// ServiceAccounts resolves the identities of ServiceAccounts (their
	// metadata informer, which the refresher also watches); required when
	// an instance has identity serviceAccount.
	ServiceAccounts *ServiceAccounts
	// Ready, when set, is closed once the token cache has been seeded from
	// the existing Secrets; Reconcile waits for it so that a new leader does
	// not mint tokens the Secrets already hold.
	Ready    <-chan struct{}
	Recorder events.EventRecorder // optional
	Metrics  *metrics.Metrics
	Log      logr.Logger
	Now      func() time.Time
}

// Refresher keeps the managed Secret of every opted-in namespace valid after
// admission, as a controller that runs on the elected leader only:
//
//   - refresh: each Secret is reconciled again just after its token's
//     refresh point; the shared token cache mints once for all namespaces,
//     and a Secret is written only when its content changes;
//   - self-healing: a managed Secret that is deleted, or whose data is
//     edited, is rewritten at once. The cache holds only managed Secrets, so
//     a deleted one leaves nothing behind: the refresher remembers which
//     (namespace, Secret) pairs it saw deleted and restores those;
//   - opt-out: when a namespace loses the opt-in label its managed Secrets
//     are deleted (unless cleanup is off) and forgotten;
//   - ServiceAccounts: the Secret of a ServiceAccount's identity follows
//     its ServiceAccount: it is rewritten for the role the ServiceAccount
//     names now, and deleted when the ServiceAccount is deleted or no longer
//     names a role (whatever cleanupOnOptOut says: nothing may pull as a
//     role its ServiceAccount gave up).
//
// Failures are retried when the token source's backoff allows, with a
// Warning Event on the namespace.
type Refresher struct {
	store    *Store
	reader   client.Reader
	secrets  []cache.Cache
	retry    RetryState
	ready    <-chan struct{}
	recorder events.EventRecorder
	metrics  *metrics.Metrics
	log      logr.Logger
	now      func() time.Time
	targets  targets
	sas      *ServiceAccounts
	retired  map[string]bool // Secret names to delete everywhere
	nsKey    string
	nsValue  string
	cleanup  bool
	// provision writes the Secrets of identity webhook instances when a
	// namespace opts in (config provisionOnOptIn).
	provision bool
	cfg       *config.Config
	proofs    credentials.Backoff // spaces out the retries of refused ServiceAccounts

	mu      sync.Mutex
	wanted  map[types.NamespacedName]target // Secrets to restore when missing
	refused map[types.NamespacedName]int    // consecutive failed proofs of a ServiceAccount's Secret
}

// NewRefresher checks o and builds a Refresher.
func NewRefresher(o RefresherOptions) (*Refresher, error) {
	if o.Config == nil || o.Store == nil || o.Reader == nil || o.Retry == nil {
		return nil, errors.New("pullsecret: RefresherOptions needs Config, Store, Reader and Retry")
	}
	if o.Config.PerServiceAccount() && o.ServiceAccounts == nil {
		return nil, errors.New("pullsecret: RefresherOptions needs ServiceAccounts for instances with identity serviceAccount")
	}
	key, value, err := config.SplitLabel(o.Config.NamespaceLabel)
	if err != nil {
		return nil, fmt.Errorf("pullsecret: namespaceLabel: %w", err)
	}
	r := &Refresher{
		store: o.Store, reader: o.Reader, secrets: o.Secrets, retry: o.Retry, ready: o.Ready, recorder: o.Recorder, metrics: o.Metrics,
		log: o.Log, now: o.Now, nsKey: key, nsValue: value, cleanup: o.Config.Cleanup(), provision: o.Config.Provision(), cfg: o.Config,
		targets: newTargets(o.Config.Instances), sas: o.ServiceAccounts,
		proofs:  credentials.Backoff{Base: DefaultWriteBackoffBase, Cap: o.Config.BackoffCap.Duration},
		wanted:  map[types.NamespacedName]target{},
		refused: map[types.NamespacedName]int{},
		retired: map[string]bool{},
	}
	if r.proofs.Cap <= 0 {
		r.proofs.Cap = config.DefaultBackoffCap
	}
	for _, name := range o.Config.RetiredSecretNames {
		r.retired[name] = true
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log.GetSink() == nil {
		r.log = logr.Discard()
	}
	return r, nil
}

// SetupWithManager registers the refresher as a controller. Like every
// controller it runs only while the manager holds the leader lease. It
// watches the managed Secrets (the label-selected informer) and the
// Namespaces' labels (the metadata informer), both shared with admission.
func (r *Refresher) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).Named("pullsecret-refresher")
	caches := r.secrets
	if len(caches) == 0 {
		caches = []cache.Cache{mgr.GetCache()}
	}
	for _, c := range caches {
		b = b.WatchesRawSource(source.Kind(c, client.Object(&corev1.Secret{}), r.secretEvents()))
	}
	if len(r.targets.perSA) > 0 {
		// A ServiceAccount that changes its annotations or goes: its Secrets.
		b = b.Watches(ServiceAccountObject(), handler.EnqueueRequestsFromMapFunc(r.secretsOfServiceAccount),
			builder.WithPredicates(predicate.AnnotationChangedPredicate{}))
	}
	return b.
		Watches(namespaceObject(), handler.EnqueueRequestsFromMapFunc(r.secretsOf),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		// Every managed Secret waits in the queue for its next refresh
		// point: the classic delaying queue holds such an item in about a
		// third of the priority queue's memory.
		//
		// Order under the write pace: the delaying queue releases items in
		// RequeueAfter order (a heap by ready time) into a FIFO, the four
		// workers take them in that order, and the Store's pace (a token
		// bucket: x/time/rate reserves slots in call order) lets their
		// writes through in the order they asked. So the Secrets whose
		// tokens became due first are written first, give or take the
		// four in hand; Secrets of one identity share one token and one
		// refresh point. A Secret whose token is due later (another
		// instance, a shorter TTL) can queue behind a rotation still being
		// written, for at most the whole rotation: the start check
		// (config.CheckRotation) makes all managed Secrets, not one
		// instance's, fit in a quarter of the smallest refresh window, so
		// none is left holding an expired token. Reconciles that write
		// nothing (a leader's start) take no pace.
		WithOptions(controller.Options{MaxConcurrentReconciles: 4, UsePriorityQueue: ptr.To(false)}).
		Complete(r)
}

// secretEvents enqueues the managed Secrets of configured instances. A
// delete is remembered first: the cache keeps no trace of it.
func (r *Refresher) secretEvents() handler.EventHandler {
	enqueue := func(obj client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request], deleted bool) {
		if !r.store.owns(obj) {
			return
		}
		key := client.ObjectKeyFromObject(obj)
		if r.retired[obj.GetName()] {
			if !deleted {
				q.Add(reconcile.Request{NamespacedName: key})
			}
			return
		}
		t, ok := r.targets.of(obj)
		if !ok {
			return
		}
		if deleted {
			r.remember(key, &t)
			r.store.forgetWrite(key) // so that Sync recreates it at once
		}
		q.Add(reconcile.Request{NamespacedName: key})
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q, false)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.ObjectNew, q, false)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q, true)
		},
		GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q, false)
		},
	}
}

// secretsOf maps a namespace whose labels changed (or that the informer
// lists at start) to its managed Secrets: those in the cache, those
// remembered as deleted and, when it opts in and provisioning is on, the
// Secret of every instance with identity webhook.
func (r *Refresher) secretsOf(ctx context.Context, ns client.Object) []reconcile.Request {
	seen := map[types.NamespacedName]bool{}
	if r.cfg.OptsIn(ns.GetName(), ns.GetLabels()) && ns.GetDeletionTimestamp() == nil {
		if r.provision {
			for name, in := range r.targets.byName {
				if !in.PerServiceAccount() {
					seen[types.NamespacedName{Namespace: ns.GetName(), Name: name}] = true
				}
			}
		}
		for name := range r.targets.tokens { // written by the refresher only: always
			seen[types.NamespacedName{Namespace: ns.GetName(), Name: name}] = true
		}
	}
	var list corev1.SecretList
	if err := r.reader.List(ctx, &list, client.InNamespace(ns.GetName()),
		client.MatchingLabels{ManagedByLabel: ManagedByValue}); err != nil {
		r.log.Error(err, "listing managed pull secrets of a namespace", "namespace", ns.GetName())
	}
	for i := range list.Items {
		if _, ok := r.targets.of(&list.Items[i]); ok {
			seen[client.ObjectKeyFromObject(&list.Items[i])] = true
		}
	}
	r.mu.Lock()
	for key := range r.wanted {
		if key.Namespace == ns.GetName() {
			seen[key] = true
		}
	}
	r.mu.Unlock()
	reqs := make([]reconcile.Request, 0, len(seen))
	for key := range seen {
		reqs = append(reqs, reconcile.Request{NamespacedName: key})
	}
	return reqs
}

// secretsOfServiceAccount maps a ServiceAccount to the Secrets of its
// identity, one per instance with identity serviceAccount. Reconcile skips
// those that neither exist nor are remembered.
func (r *Refresher) secretsOfServiceAccount(_ context.Context, sa client.Object) []reconcile.Request {
	reqs := make([]reconcile.Request, 0, len(r.targets.perSA))
	for _, in := range r.targets.perSA {
		id := credentials.Identity{RoleARN: "any", Namespace: sa.GetNamespace(), ServiceAccount: sa.GetName()}
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: sa.GetNamespace(), Name: SecretName(in, id)}})
	}
	return reqs
}

// Reconcile brings one managed Secret in line with its namespace's opt-in
// (and a ServiceAccount's Secret with its ServiceAccount) and the current
// token, and schedules the next look just after that token's refresh
// point.
func (r *Refresher) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if r.retired[req.Name] {
		return r.deleteRetired(ctx, req.NamespacedName)
	}
	t, ok, err := r.targetAt(ctx, req.NamespacedName)
	if err != nil || !ok {
		return reconcile.Result{}, err
	}
	inst := t.inst
	if r.ready != nil {
		select {
		case <-r.ready:
		case <-ctx.Done():
			return reconcile.Result{}, ctx.Err()
		}
	}
	ns := namespaceObject()
	if err := r.reader.Get(ctx, client.ObjectKey{Name: req.Namespace}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			r.remember(req.NamespacedName, nil)
			r.forgetRefusals(req.NamespacedName)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("reading namespace %s: %w", req.Namespace, err)
	}
	if ns.DeletionTimestamp != nil {
		r.remember(req.NamespacedName, nil) // its Secrets go with it
		r.forgetRefusals(req.NamespacedName)
		return reconcile.Result{}, nil
	}
	optedIn := ns.Labels[r.nsKey] == r.nsValue
	// An excluded namespace gets nothing written, but what admission wrote
	// before it was excluded is still refreshed (or cleaned up at opt-out).
	excluded := slices.Contains(r.cfg.ExcludeNamespaces, ns.Name)
	if !optedIn && t.id.IsWebhook() {
		return r.optedOut(ctx, ns, t, req.NamespacedName)
	}

	present, err := r.present(ctx, req.NamespacedName)
	if err != nil {
		return reconcile.Result{}, err
	}
	// A present Secret is in the cache; a deleted one was remembered by its
	// delete event. Remembering only those keeps memory flat in the number
	// of namespaces.
	provisioning := false
	if !present && !r.remembered(req.NamespacedName) {
		// Written here only when provisioning an opted-in namespace;
		// otherwise admission creates it when a pod needs it.
		pull := r.provision && t.id.IsWebhook() && !t.inst.PerServiceAccount() && req.Name == t.inst.SecretName
		if !optedIn || excluded || !(pull || t.token) {
			return reconcile.Result{}, nil
		}
		provisioning = true
	}
	held := t // what the Secret holds
	if !t.id.IsWebhook() {
		// A ServiceAccount that went or gave up its role takes its Secret
		// with it, opted in or not, cleanup or not.
		sa, err := r.sas.Confirmed(ctx, req.Namespace, t.id.ServiceAccount)
		var id credentials.Identity
		if err == nil {
			id, err = sa.IdentityFor(inst)
		}
		switch {
		case errors.Is(err, credentials.ErrNoRole), errors.Is(err, credentials.ErrBadRole):
			return r.serviceAccountGone(ctx, ns, t, req.NamespacedName, err)
		case err != nil:
			return reconcile.Result{}, err // reading the ServiceAccount failed: the controller's rate limiter retries
		}
		if !optedIn {
			return r.optedOut(ctx, ns, t, req.NamespacedName)
		}
		t = newTarget(inst, id) // the role it names now
	}
	res, err := r.store.sync(ctx, req.Namespace, t)
	if err != nil && !t.id.IsWebhook() && errors.Is(err, ErrNoToken) {
		// No token as the role the ServiceAccount names now: a Secret of
		// the role it gave up, or one that has expired, must not stay.
		if held.id != t.id {
			return r.serviceAccountGone(ctx, ns, held, req.NamespacedName,
				fmt.Errorf("ServiceAccount %s now names role %s, and no token could be had as it: %w", t.id.ServiceAccount, t.id.RoleARN, err))
		}
		if sec, cerr := r.store.cached(ctx, req.NamespacedName); cerr == nil && sec != nil && !r.store.valid(sec, held) {
			return r.serviceAccountGone(ctx, ns, held, req.NamespacedName,
				fmt.Errorf("its token expired and could not be refreshed: %w", err))
		}
	}
	if stopping(ctx, err) {
		return reconcile.Result{}, nil
	}
	if err != nil {
		// A token Secret is asked for by configuration, and admission never
		// mentions it: its failures are always told.
		return r.failed(ns, t, req.NamespacedName, err, provisioning && !t.token)
	}
	r.forgetRefusals(req.NamespacedName)
	r.report(ns, t, res, provisioning)
	return reconcile.Result{RequeueAfter: r.nextLook(t, res)}, nil
}

// targetAt is the target of the Secret at key: that of the Secret in the
// cache, else the one remembered when it was deleted, else (for an
// instance's secretName) the instance's. ok is false for a Secret that is
// none of this installation's targets.
func (r *Refresher) targetAt(ctx context.Context, key types.NamespacedName) (target, bool, error) {
	sec, err := r.store.cached(ctx, key)
	if err != nil {
		return target{}, false, fmt.Errorf("reading pull secret %s from cache: %w", key, err)
	}
	if sec != nil && r.store.owns(sec) {
		if t, ok := r.targets.of(sec); ok {
			return t, true, nil
		}
	}
	r.mu.Lock()
	t, ok := r.wanted[key]
	r.mu.Unlock()
	if ok {
		return t, true, nil
	}
	if t, ok := r.targets.named(key.Name); ok {
		return t, true, nil
	}
	return target{}, false, nil
}

// serviceAccountGone deletes the Secret of a ServiceAccount that no longer
// exists or names no (valid) role, and forgets it.
func (r *Refresher) serviceAccountGone(ctx context.Context, ns *metav1.PartialObjectMetadata, t target, key types.NamespacedName, why error) (reconcile.Result, error) {
	r.remember(key, nil)
	r.forgetRefusals(key)
	_, deleted, err := r.store.deleteOwned(ctx, key)
	if stopping(ctx, err) {
		return reconcile.Result{}, nil
	}
	if err != nil {
		r.metrics.LifecycleAction(t.inst.Name, metrics.LifecycleFailed)
		return reconcile.Result{}, fmt.Errorf("pull secret %s: %w", key, err)
	}
	if deleted {
		r.metrics.LifecycleAction(t.inst.Name, metrics.LifecycleDeleted)
		r.log.Info("deleted pull secret of a ServiceAccount without a role", "namespace", ns.Name, "instance", t.inst.Name,
			"secret", key.Name, "serviceAccount", t.id.ServiceAccount, "action", metrics.LifecycleDeleted, "reason", why.Error())
		r.event(ns, corev1.EventTypeNormal, ReasonDeleted, eventActionDelete,
			"deleted pull secret %s of instance %s: %v", key.Name, t.inst.Name, why)
	}
	return reconcile.Result{}, nil
}

// deleteRetired deletes this installation's managed Secret at key, whose
// name is in retiredSecretNames, whether or not its namespace opts in.
func (r *Refresher) deleteRetired(ctx context.Context, key types.NamespacedName) (reconcile.Result, error) {
	instance, deleted, err := r.store.DeleteRetired(ctx, key)
	if stopping(ctx, err) {
		return reconcile.Result{}, nil
	}
	if _, ok := r.instanceNamed(instance); !ok {
		instance = "retired" // the annotation is tenant-writable: no label values of theirs
	}
	if err != nil {
		r.metrics.LifecycleAction(instance, metrics.LifecycleFailed)
		return reconcile.Result{}, err // a conflict is retried by the controller's rate limiter
	}
	if !deleted {
		return reconcile.Result{}, nil
	}
	r.metrics.LifecycleAction(instance, metrics.LifecycleDeleted)
	r.log.Info("deleted retired pull secret", "namespace", key.Namespace, "instance", instance,
		"secret", key.Name, "action", metrics.LifecycleDeleted)
	ns := namespaceObject()
	if err := r.reader.Get(ctx, client.ObjectKey{Name: key.Namespace}, ns); err == nil {
		r.event(ns, corev1.EventTypeNormal, ReasonDeleted, eventActionDelete,
			"deleted pull secret %s of instance %s: its name is in retiredSecretNames", key.Name, instance)
	}
	return reconcile.Result{}, nil
}

// instanceNamed returns the configured instance called name.
func (r *Refresher) instanceNamed(name string) (config.Instance, bool) {
	for _, in := range r.targets.byName {
		if in.Name == name {
			return in, true
		}
	}
	return config.Instance{}, false
}

// optedOut deletes the managed Secret of a namespace that no longer opts in
// (when cleanup is on) and forgets it.
func (r *Refresher) optedOut(ctx context.Context, ns *metav1.PartialObjectMetadata, t target, key types.NamespacedName) (reconcile.Result, error) {
	r.remember(key, nil)
	r.forgetRefusals(key)
	if !r.cleanup {
		return reconcile.Result{}, nil
	}
	inst := t.inst
	_, deleted, err := r.store.deleteOwned(ctx, key)
	if stopping(ctx, err) {
		return reconcile.Result{}, nil
	}
	if err != nil {
		err = fmt.Errorf("pull secret %s for instance %q: %w", key, inst.Name, err)
		r.metrics.LifecycleAction(inst.Name, t.action(metrics.LifecycleFailed))
		return reconcile.Result{}, err // a conflict is retried by the controller's rate limiter
	}
	if deleted {
		r.metrics.LifecycleAction(inst.Name, t.action(metrics.LifecycleDeleted))
		r.log.Info("deleted "+t.what()+" of opted-out namespace", "namespace", ns.Name, "instance", inst.Name,
			"secret", key.Name, "action", metrics.LifecycleDeleted)
		r.event(ns, corev1.EventTypeNormal, ReasonDeleted, eventActionDelete,
			"namespace no longer has label %s=%s: deleted %s %s of instance %s", r.nsKey, r.nsValue, t.what(), key.Name, inst.Name)
	}
	return reconcile.Result{}, nil
}

// failed records a Sync failure and schedules the retry the token source's
// or the Secret's write backoff allows. A Secret name held by a Secret we
// do not manage is left alone until it changes. quiet (provisioning a pull
// Secret that never existed) records no Event: while Artifactory is down
// every opted-in namespace would get one per retry, for a Secret no pod
// uses yet; the log and the metric say it, and a pod's admission warns.
func (r *Refresher) failed(ns *metav1.PartialObjectMetadata, t target, key types.NamespacedName, err error, quiet bool) (reconcile.Result, error) {
	event := r.event
	if quiet {
		event = func(*metav1.PartialObjectMetadata, string, string, string, string, ...any) {}
	}
	inst := t.inst
	who := t.logValues(key)
	if errors.Is(err, ErrForeignSecret) {
		msg, kv := "pull secret name is taken by an unmanaged Secret; not touching it", []any{}
		if conflict := (*InstallationConflictError)(nil); errors.As(err, &conflict) {
			msg, kv = "pull secret name is taken by another installation's Secret; not touching it", []any{"owner", conflict.Installation}
		}
		r.log.Info(msg, append(append([]any{"namespace", ns.Name}, who...), kv...)...)
		if t.token {
			// Admission never mentions a token Secret: say it here.
			r.event(ns, corev1.EventTypeWarning, ReasonWriteFailed, eventActionRefresh,
				"token secret %s of instance %s not written: a Secret of that name exists that this installation does not manage; "+
					"rename one of them (tokenSecretName)", key.Name, inst.Name)
		}
		return reconcile.Result{}, nil
	}
	var werr *WriteError
	if errors.As(err, &werr) {
		// The Store, not the controller's rate limiter, paces the writes
		// of a Secret whose writes fail, whoever made them.
		after := max(werr.RetryAt.Sub(r.now()), minRetry)
		if werr.Held {
			r.log.V(1).Info("pull secret backing off after failed writes", append(append([]any{"namespace", ns.Name}, who...),
				"retryAt", formatTime(werr.RetryAt))...)
			return reconcile.Result{RequeueAfter: after}, nil
		}
		r.metrics.LifecycleAction(inst.Name, t.action(metrics.LifecycleFailed))
		r.log.Info("could not write pull secret", append(append([]any{"namespace", ns.Name}, who...),
			"action", metrics.LifecycleFailed, "retryAt", formatTime(werr.RetryAt), "error", err.Error())...)
		event(ns, corev1.EventTypeWarning, ReasonWriteFailed, eventActionRefresh,
			"could not write %s %s of instance %s (%d failed writes in a row; next attempt after %s): %v",
			t.what(), key.Name, inst.Name, werr.Failures, formatTime(werr.RetryAt), werr.Err)
		return reconcile.Result{RequeueAfter: after}, nil
	}
	r.metrics.LifecycleAction(inst.Name, t.action(metrics.LifecycleFailed))
	if !errors.Is(err, ErrNoToken) {
		return reconcile.Result{}, err // an API error: the controller's rate limiter retries
	}
	r.log.Info("could not refresh pull secret", append(append([]any{"namespace", ns.Name}, who...),
		"action", metrics.LifecycleFailed, "error", err.Error())...)
	event(ns, corev1.EventTypeWarning, ReasonTokenExchangeFailed, eventActionRefresh, "%s",
		WithFix(fmt.Sprintf("could not refresh %s %s of instance %s%s: %v", t.what(), key.Name, inst.Name, t.asWhom(), err), err, MaxEventNote))
	after := r.retryAfter(t)
	if !t.id.IsWebhook() {
		// The failure may be this ServiceAccount's proof (its token, or STS
		// refusing the role), which the role's backoff does not pace: its
		// own does.
		after = max(after, r.refusal(key))
	}
	return reconcile.Result{RequeueAfter: after}, nil
}

// refusal counts a failed proof of the Secret at key and returns the wait
// before the next.
func (r *Refresher) refusal(key types.NamespacedName) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refused[key]++
	return r.proofs.Delay(r.refused[key])
}

func (r *Refresher) forgetRefusals(key types.NamespacedName) {
	r.mu.Lock()
	delete(r.refused, key)
	r.mu.Unlock()
}

// report records what a successful Sync did; provisioning says the Secret
// was missing and written because its namespace opts in.
func (r *Refresher) report(ns *metav1.PartialObjectMetadata, t target, res SyncResult, provisioning bool) {
	inst := t.inst
	if res.Action == ActionReused {
		if err := r.retry.LastError(r.key(t)); err != nil && !r.now().Before(res.RefreshAt) {
			// Due for refresh, the mint failed, the Secret still works.
			r.event(ns, corev1.EventTypeWarning, ReasonTokenExchangeFailed, eventActionRefresh, "%s",
				WithFix(fmt.Sprintf("could not refresh %s %s of instance %s%s, which stays valid until %s: %v",
					t.what(), t.name, inst.Name, t.asWhom(), formatTime(res.ExpiresAt), err), err, MaxEventNote))
		}
		return
	}
	reason, action := ReasonRefreshed, metrics.LifecycleRefreshed
	switch {
	case provisioning: // written because its namespace opts in (an update if admission created it meanwhile)
		reason, action = ReasonProvisioned, metrics.LifecycleProvisioned
	case res.Restored:
		reason, action = ReasonRestored, metrics.LifecycleRestored
	}
	r.metrics.LifecycleAction(inst.Name, t.action(action))
	r.log.Info("wrote "+t.what(), append(append([]any{"namespace", ns.Name}, t.logValues(types.NamespacedName{Name: t.name})...),
		"action", action, "expiresAt", formatTime(res.ExpiresAt))...)
	r.event(ns, corev1.EventTypeNormal, reason, eventActionRefresh,
		"%s %s %s of instance %s%s; its token is valid until %s", action, t.what(), t.name, inst.Name, t.asWhom(), formatTime(res.ExpiresAt))
}

// nextLook is when to reconcile a synced Secret again: just after its token's
// refresh point, or, when the token source kept a due token because minting
// fails, when it may mint again.
func (r *Refresher) nextLook(t target, res SyncResult) time.Duration {
	if d := res.RefreshAt.Sub(r.now()); d > 0 {
		return d + refreshSlack
	}
	return r.retryAfter(t)
}

func (r *Refresher) retryAfter(t target) time.Duration {
	return max(r.retry.NextAttempt(r.key(t)).Sub(r.now()), minRetry)
}

func (r *Refresher) key(t target) credentials.Key { return r.store.key(t) }

func (r *Refresher) present(ctx context.Context, key types.NamespacedName) (bool, error) {
	sec, err := r.store.cached(ctx, key)
	if err != nil {
		return false, fmt.Errorf("reading pull secret %s from cache: %w", key, err)
	}
	return sec != nil && r.store.owns(sec), nil
}

// remember records the target of the Secret at key, to restore it when
// missing; nil forgets it.
func (r *Refresher) remember(key types.NamespacedName, t *target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t != nil {
		r.wanted[key] = *t
	} else {
		delete(r.wanted, key)
	}
}

func (r *Refresher) remembered(key types.NamespacedName) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.wanted[key]
	return ok
}

// event records an Event on the namespace, stored in that namespace so that
// its owners see it. Messages name instances, Secrets and causes, never
// token material.
func (r *Refresher) event(ns *metav1.PartialObjectMetadata, eventType, reason, action, note string, args ...any) {
	namespaceEvent(r.recorder, ns, eventType, reason, action, note, args...)
}

// namespaceEvent records an Event regarding ns, stored in ns (a
// cluster-scoped regarding object would put it in "default"), with
// recorder (none when nil).
func namespaceEvent(recorder events.EventRecorder, ns *metav1.PartialObjectMetadata, eventType, reason, action, note string, args ...any) {
	if recorder == nil {
		return
	}
	regarding := &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: ns.Name, Namespace: ns.Name, UID: ns.UID},
	}
	recorder.Eventf(regarding, nil, eventType, reason, action, note, args...)
}

func namespaceObject() *metav1.PartialObjectMetadata {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return ns
}

// stopping reports a write that failed because the refresher is stopping
// (or lost the lease), typically while waiting for its write pace: not a
// failure to record; the next leader takes the Secret up.
func stopping(ctx context.Context, err error) bool { return err != nil && ctx.Err() != nil }
