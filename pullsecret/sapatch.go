package pullsecret

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
)

// ServiceAccount patching (config patchServiceAccounts): a safety net for
// pods admitted while every webhook replica is unreachable
// (failurePolicy: Ignore). The API server's ServiceAccount admission
// plugin copies a ServiceAccount's imagePullSecrets into a pod that names
// none, once, at its creation; so the leader adds the namespace's pull
// Secrets to its ServiceAccounts' imagePullSecrets, and removes them again
// at opt-out.
//
// ServiceAccount.imagePullSecrets is an atomic list (+listType=atomic):
// server-side apply cannot give a field manager one entry of it, only the
// whole list. So the webhook never applies: it updates the list read from
// the API server (resourceVersion-checked), adds only its missing entries,
// removes only the entries it added (recorded in the annotation
// AnnotationPatchedPullSecrets, so an entry someone else also listed is
// theirs to keep), and leaves a ServiceAccount alone when a declarative
// tool owns the list (an Apply field manager, or kubectl's
// last-applied-configuration naming imagePullSecrets): writing it would
// start a tug of war with every sync of that tool, which reverts the list
// to its manifest. Such a ServiceAccount gets a ServiceAccountNotPatched
// Event saying what to add to the manifest.
const (
	// AnnotationPatchedPullSecrets lists, on a ServiceAccount, the
	// imagePullSecrets entries the default installation added
	// (comma-separated); PatchedPullSecretsAnnotation names another
	// installation's.
	AnnotationPatchedPullSecrets = annotationPrefix + "image-pull-secrets"
	// ServiceAccountFieldManager is the field manager of the webhook's
	// ServiceAccount updates.
	ServiceAccountFieldManager = "artifactory-pull-webhook-serviceaccounts"

	ReasonServiceAccountPatched    = "ServiceAccountPatched"
	ReasonServiceAccountUnpatched  = "ServiceAccountUnpatched"
	ReasonServiceAccountNotPatched = "ServiceAccountNotPatched"

	lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"
	eventActionPatch      = "PatchServiceAccount"
)

// PatchedPullSecretsAnnotation is the annotation in which installation
// records the imagePullSecrets entries it added: one per installation, so
// that two installations patching one namespace keep their books apart.
// (config validation keeps the name within 63 characters.)
func PatchedPullSecretsAnnotation(installation string) string {
	if installation == "" || installation == config.DefaultInstallation {
		return AnnotationPatchedPullSecrets
	}
	return AnnotationPatchedPullSecrets + "-" + installation
}

// Lifecycle actions of ServiceAccount patching.
const (
	LifecycleServiceAccountPatched   = "serviceaccount_patched"
	LifecycleServiceAccountUnpatched = "serviceaccount_unpatched"
	LifecycleServiceAccountSkipped   = "serviceaccount_skipped"
)

// SAPatcherOptions configures an SAPatcher.
type SAPatcherOptions struct {
	Config *config.Config
	// Reader reads Namespaces (their labels) and the managed Secrets
	// (informer caches).
	Reader client.Reader
	// ServiceAccounts lists the ServiceAccounts' metadata (the patcher's
	// cache, keeping the annotation of its books): a namespace that is not
	// opted in costs an API call only when one of them carries it.
	ServiceAccounts client.Reader
	// Client reads and updates ServiceAccounts on the API server.
	Client   client.Client
	Recorder events.EventRecorder // optional
	Metrics  *metrics.Metrics
	Log      logr.Logger
}

// SAPatcher keeps the pull Secrets of an opted-in namespace in its
// ServiceAccounts' imagePullSecrets (the default one, or all of them), as
// a controller on the leader; reconcile requests name a namespace.
type SAPatcher struct {
	reader   client.Reader
	sas      client.Reader
	client   client.Client
	books    string   // the annotation of the entries it added
	retired  []string // retiredSecretNames: removed, never added
	recorder events.EventRecorder
	metrics  *metrics.Metrics
	log      logr.Logger
	all      bool
	cfg      *config.Config
	names    []string // the pull Secrets of identity webhook instances
	instance map[string]string
	nsKey    string
	nsValue  string
}

// NewSAPatcher returns the patcher of o.Config, or nil when
// patchServiceAccounts is none.
func NewSAPatcher(o SAPatcherOptions) (*SAPatcher, error) {
	mode := o.Config.PatchServiceAccounts
	if mode == "" || mode == config.PatchNone {
		return nil, nil
	}
	key, value, err := config.SplitLabel(o.Config.NamespaceLabel)
	if err != nil {
		return nil, err
	}
	p := &SAPatcher{reader: o.Reader, sas: o.ServiceAccounts, client: o.Client, recorder: o.Recorder, metrics: o.Metrics, log: o.Log,
		all: mode == config.PatchAll, cfg: o.Config, nsKey: key, nsValue: value, instance: map[string]string{},
		books: PatchedPullSecretsAnnotation(o.Config.Installation), retired: o.Config.RetiredSecretNames}
	for _, in := range o.Config.Instances {
		if !in.PerServiceAccount() && !slices.Contains(p.names, in.SecretName) {
			p.names = append(p.names, in.SecretName)
			p.instance[in.SecretName] = in.Name
		}
	}
	for _, n := range p.retired {
		p.instance[n] = "retired" // as the refresher labels them
	}
	if p.log.GetSink() == nil {
		p.log = logr.Discard()
	}
	return p, nil
}

// SetupWithManager watches the namespaces' labels, the managed Secrets
// (secrets, the per-name caches) and the ServiceAccounts (serviceAccounts,
// a metadata cache: the default ones only, or all), each mapped to its
// namespace.
func (p *SAPatcher) SetupWithManager(mgr ctrl.Manager, secrets []cache.Cache, serviceAccounts cache.Cache) error {
	toNamespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		ns := o.GetNamespace()
		if ns == "" {
			ns = o.GetName() // a Namespace
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: ns}}}
	})
	b := ctrl.NewControllerManagedBy(mgr).Named("serviceaccount-patcher").
		Watches(namespaceObject(), toNamespace, builder.WithPredicates(predicate.LabelChangedPredicate{}))
	for _, c := range secrets {
		b = b.WatchesRawSource(source.Kind(c, client.Object(&corev1.Secret{}), secretPresence(p.names)))
	}
	// Creations, and updates of its books (the cache keeps no other
	// annotation): an opt-out right after a patch finds them.
	return b.WatchesRawSource(source.Kind(serviceAccounts, client.Object(ServiceAccountObject()), toNamespace,
		predicate.AnnotationChangedPredicate{})).Complete(p)
}

// secretPresence enqueues the namespace of a managed Secret of names that
// appears or goes.
func secretPresence(names []string) handler.EventHandler {
	enqueue := func(o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if slices.Contains(names, o.GetName()) && isManaged(o.(*corev1.Secret)) {
			q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: o.GetNamespace()}})
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(e.Object, q)
		},
	}
}

// Reconcile brings the ServiceAccounts of one namespace in line: with the
// namespace opted in, each names the pull Secrets that exist there; else
// none the webhook added.
func (p *SAPatcher) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	nsName := req.Name
	ns := namespaceObject()
	if err := p.reader.Get(ctx, client.ObjectKey{Name: nsName}, ns); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if ns.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	optedIn := p.cfg.OptsIn(ns.Name, ns.Labels)
	if !optedIn && p.sas != nil {
		// Nothing to take back unless a ServiceAccount here carries the books.
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccountList"))
		if err := p.sas.List(ctx, list, client.InNamespace(nsName)); err != nil {
			return reconcile.Result{}, err
		}
		if !slices.ContainsFunc(list.Items, func(sa metav1.PartialObjectMetadata) bool { return sa.Annotations[p.books] != "" }) {
			return reconcile.Result{}, nil
		}
	}
	var want []string
	if optedIn {
		for _, name := range p.names {
			var sec corev1.Secret
			switch err := p.reader.Get(ctx, client.ObjectKey{Namespace: nsName, Name: name}, &sec); {
			case err == nil && ownedBy(&sec, cmp.Or(p.cfg.Installation, config.DefaultInstallation)): // not another installation's
				want = append(want, name)
			case err != nil && !apierrors.IsNotFound(err):
				return reconcile.Result{}, err
			}
		}
	}
	var sas []corev1.ServiceAccount
	if p.all {
		var list corev1.ServiceAccountList
		if err := p.client.List(ctx, &list, client.InNamespace(nsName)); err != nil {
			return reconcile.Result{}, err
		}
		sas = list.Items
	} else {
		var sa corev1.ServiceAccount
		switch err := p.client.Get(ctx, client.ObjectKey{Namespace: nsName, Name: "default"}, &sa); {
		case apierrors.IsNotFound(err):
			return reconcile.Result{}, nil // its creation is watched
		case err != nil:
			return reconcile.Result{}, err
		}
		sas = []corev1.ServiceAccount{sa}
	}
	var errs []error
	for i := range sas {
		if err := p.sync(ctx, ns, &sas[i], optedIn, want); err != nil {
			errs = append(errs, err)
		}
	}
	return reconcile.Result{}, errors.Join(errs...)
}

// sync gives sa the entries of want (the pull Secrets present) it lacks;
// it takes back the entries its books list — only names that are or were
// its own pull Secrets, whatever else the annotation says — when the
// namespace no longer opts in, and those of retired names at any time. An
// entry whose Secret is gone for a moment (the refresher restores it) stays.
func (p *SAPatcher) sync(ctx context.Context, ns *metav1.PartialObjectMetadata, sa *corev1.ServiceAccount, optedIn bool, want []string) error {
	var ours []string
	for _, n := range splitNames(sa.Annotations[p.books]) {
		if (slices.Contains(p.names, n) || slices.Contains(p.retired, n)) && !slices.Contains(ours, n) {
			ours = append(ours, n)
		}
	}
	has := func(name string) bool {
		return slices.ContainsFunc(sa.ImagePullSecrets, func(r corev1.LocalObjectReference) bool { return r.Name == name })
	}
	var add, remove []string
	for _, n := range want {
		if !has(n) {
			add = append(add, n)
		}
	}
	for _, n := range ours {
		if has(n) && (!optedIn || !slices.Contains(p.names, n)) {
			remove = append(remove, n)
		}
	}
	// The books after this: ours still listed and not removed, and what is
	// added now.
	kept := slices.DeleteFunc(slices.Clone(ours), func(n string) bool { return !has(n) || slices.Contains(remove, n) })
	newOurs := append(kept, add...)
	if len(add) == 0 && len(remove) == 0 && strings.Join(newOurs, ",") == sa.Annotations[p.books] {
		return nil
	}
	if owner := declarativeOwner(sa); owner != "" {
		if len(add) == 0 && len(remove) == 0 {
			return nil
		}
		for _, n := range append(slices.Clone(add), remove...) {
			p.metrics.LifecycleAction(p.instance[n], LifecycleServiceAccountSkipped)
		}
		p.log.Info("not patching a ServiceAccount whose imagePullSecrets another tool applies", "namespace", sa.Namespace,
			"serviceAccount", sa.Name, "owner", owner, "add", add, "remove", remove)
		todo := "add " + strings.Join(add, ", ") + " to its manifest, so that pods created while the webhook is unreachable still pull"
		if len(add) == 0 {
			todo = "remove " + strings.Join(remove, ", ") + " from its manifest: the namespace no longer opts in"
		}
		p.event(ns, corev1.EventTypeWarning, ReasonServiceAccountNotPatched,
			"ServiceAccount %s: its imagePullSecrets are applied by %s, which would revert a change; %s", sa.Name, owner, todo)
		return nil
	}
	updated := sa.DeepCopy()
	updated.ImagePullSecrets = slices.DeleteFunc(updated.ImagePullSecrets, func(r corev1.LocalObjectReference) bool {
		return slices.Contains(remove, r.Name)
	})
	for _, n := range add {
		updated.ImagePullSecrets = append(updated.ImagePullSecrets, corev1.LocalObjectReference{Name: n})
	}
	if updated.Annotations == nil {
		updated.Annotations = map[string]string{}
	}
	if len(newOurs) == 0 {
		delete(updated.Annotations, p.books)
	} else {
		updated.Annotations[p.books] = strings.Join(newOurs, ",")
	}
	// The resourceVersion read: a concurrent change makes this a Conflict,
	// retried with what the API server holds then.
	if err := p.client.Update(ctx, updated, client.FieldOwner(ServiceAccountFieldManager)); err != nil {
		return fmt.Errorf("updating ServiceAccount %s/%s: %w", sa.Namespace, sa.Name, err)
	}
	for _, n := range add {
		p.metrics.LifecycleAction(p.instance[n], LifecycleServiceAccountPatched)
	}
	for _, n := range remove {
		p.metrics.LifecycleAction(p.instance[n], LifecycleServiceAccountUnpatched)
	}
	if len(add) > 0 {
		p.log.Info("added pull secrets to a ServiceAccount", "namespace", sa.Namespace, "serviceAccount", sa.Name, "secrets", add)
		p.event(ns, corev1.EventTypeNormal, ReasonServiceAccountPatched,
			"added %s to the imagePullSecrets of ServiceAccount %s: pods that name no pull secret get them even while the webhook is unreachable",
			strings.Join(add, ", "), sa.Name)
	}
	if len(remove) > 0 {
		p.log.Info("removed pull secrets from a ServiceAccount", "namespace", sa.Namespace, "serviceAccount", sa.Name, "secrets", remove)
		p.event(ns, corev1.EventTypeNormal, ReasonServiceAccountUnpatched,
			"removed %s from the imagePullSecrets of ServiceAccount %s", strings.Join(remove, ", "), sa.Name)
	}
	return nil
}

// declarativeOwner names the tool that applies sa's imagePullSecrets
// (server-side apply, or kubectl's client-side apply), or "".
func declarativeOwner(sa *corev1.ServiceAccount) string {
	for _, mf := range sa.ManagedFields {
		if mf.Operation == metav1.ManagedFieldsOperationApply && mf.Manager != ServiceAccountFieldManager && mf.FieldsV1 != nil &&
			strings.Contains(string(mf.FieldsV1.Raw), `"f:imagePullSecrets"`) {
			return "field manager " + mf.Manager
		}
	}
	if strings.Contains(sa.Annotations[lastAppliedAnnotation], `"imagePullSecrets"`) {
		return "kubectl apply"
	}
	return ""
}

func (p *SAPatcher) event(ns *metav1.PartialObjectMetadata, eventType, reason, note string, args ...any) {
	namespaceEvent(p.recorder, ns, eventType, reason, eventActionPatch, note, args...)
}

func splitNames(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}
