package webhook

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// Secrets provides the pull Secret of an instance in a namespace holding
// id's token, writing it when needed (not when dryRun). Implemented by
// pullsecret.
type Secrets interface {
	EnsureAs(ctx context.Context, namespace string, inst config.Instance, id credentials.Identity, dryRun bool) (pullsecret.Result, error)
}

// ServiceAccounts reads a pod's ServiceAccount (pullsecret.ServiceAccounts):
// an error wrapping credentials.ErrNoRole when it does not exist.
type ServiceAccounts interface {
	Lookup(ctx context.Context, namespace, name string) (pullsecret.ServiceAccount, error)
}

// Event reason and action recorded on the Namespace when a pod is admitted
// without the pull secret of an instance.
const (
	ReasonTokenExchangeFailed = "TokenExchangeFailed"
	eventAction               = "EnsurePullSecret"
)

const warnPrefix = "artifactory-pull-webhook: "

// maxWarning bounds one admission warning: the API server passes warnings
// on in full while their total stays under 4 KiB, and the error body in
// one is at most 1 KiB.
const maxWarning = 2048

// Options are the dependencies of a Handler.
type Options struct {
	Config *config.Config
	// Namespaces reads Namespace labels, normally from an informer cache.
	// Objects are read as *metav1.PartialObjectMetadata.
	Namespaces client.Reader
	// APIReader, when set, is asked once when Namespaces does not have the
	// namespace yet (a namespace created just before its first pod).
	APIReader client.Reader
	Secrets   Secrets
	// ServiceAccounts is required when an instance has identity
	// serviceAccount.
	ServiceAccounts ServiceAccounts
	// Recorder, when set, records a Warning Event on the Namespace when a
	// pod is admitted without a pull secret because Ensure failed.
	Recorder events.EventRecorder
	Metrics  *metrics.Metrics
	Log      logr.Logger
}

// Handler is the mutating admission handler for pods.
type Handler struct {
	instances      []config.Instance
	matcher        *config.Matcher
	timeout        time.Duration
	nsKey, nsValue string
	optOutKey      string
	optOutValue    string
	namespaces     client.Reader
	apiReader      client.Reader
	secrets        Secrets
	sas            ServiceAccounts
	optIn          string // config.ServiceAccounts.OptInAnnotation
	recorder       events.EventRecorder
	metrics        *metrics.Metrics
	log            logr.Logger
	states         sync.Pool // *reviewState, see ServeHTTP
	strs           internCache
}

// NewHandler checks o and precomputes the label selectors and host matcher.
func NewHandler(o Options) (*Handler, error) {
	switch {
	case o.Config == nil:
		return nil, errors.New("webhook: Options.Config is required")
	case o.Namespaces == nil:
		return nil, errors.New("webhook: Options.Namespaces is required")
	case o.Secrets == nil:
		return nil, errors.New("webhook: Options.Secrets is required")
	case o.Config.PerServiceAccount() && o.ServiceAccounts == nil:
		return nil, errors.New("webhook: Options.ServiceAccounts is required for instances with identity serviceAccount")
	case o.Config.RequestTimeout.Duration <= 0:
		return nil, fmt.Errorf("webhook: requestTimeout must be positive, got %s", o.Config.RequestTimeout)
	}
	nsKey, nsValue, err := config.SplitLabel(o.Config.NamespaceLabel)
	if err != nil {
		return nil, fmt.Errorf("webhook: namespaceLabel: %w", err)
	}
	optKey, optValue, err := config.SplitLabel(o.Config.PodOptOutLabel)
	if err != nil {
		return nil, fmt.Errorf("webhook: podOptOutLabel: %w", err)
	}
	return &Handler{
		instances:   o.Config.Instances,
		matcher:     config.NewMatcher(o.Config.Instances),
		timeout:     o.Config.RequestTimeout.Duration,
		nsKey:       nsKey,
		nsValue:     nsValue,
		optOutKey:   optKey,
		optOutValue: optValue,
		namespaces:  o.Namespaces,
		apiReader:   o.APIReader,
		secrets:     o.Secrets,
		sas:         o.ServiceAccounts,
		optIn:       o.Config.ServiceAccounts.OptInAnnotation,
		recorder:    o.Recorder,
		metrics:     o.Metrics,
		log:         o.Log,
	}, nil
}

// decision is what one review decided; it feeds the log line and metrics.
type decision struct {
	namespace string
	pod       string
	instances []string
	outcome   string
	dryRun    bool
	err       error
	// noRole: an instance was left out because the ServiceAccount names no
	// role; reason says so in the log line.
	noRole bool
	reason string
}

// answer is what a review decided to answer: the warnings, and the
// names to add to the pod's spec.imagePullSecrets (the patch).
type answer struct {
	warnings []string
	add      []string
}

// admit reviews r within the request timeout, recording the decision in
// metrics and the log. It never denies: every failure, a panic included,
// admits the pod unchanged with a warning.
func (h *Handler) admit(ctx context.Context, r *reviewRequest) (a answer) {
	start := time.Now()
	d := decision{namespace: r.namespace, pod: r.nm, outcome: metrics.OutcomeFailedOpen}
	defer func() {
		if p := recover(); p != nil {
			d.outcome = metrics.OutcomeFailedOpen
			d.err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
			a = answer{warnings: []string{warnPrefix + "internal error; pod admitted without pull secrets"}}
		}
		h.metrics.Admission(d.outcome, time.Since(start))
		h.logDecision(d)
	}()
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	return h.review(ctx, r, &d)
}

func (h *Handler) review(ctx context.Context, req *reviewRequest, d *decision) answer {
	// 1. Review: only pod creation is mutated.
	if !isPodCreate(req) {
		d.outcome = metrics.OutcomeSkippedOperation
		return answer{}
	}

	// 2. Namespace opt-in. The request's namespace is authoritative; the
	// object's metadata.namespace may be empty or differ.
	ns, err := h.namespace(ctx, req.namespace)
	if err != nil {
		d.outcome, d.err = metrics.OutcomeFailedOpen, err
		return answer{warnings: []string{warnPrefix + "could not read the namespace; pod admitted without pull secrets"}}
	}
	if ns == nil || ns.Labels[h.nsKey] != h.nsValue {
		d.outcome = metrics.OutcomeSkippedNamespace
		return answer{}
	}

	// 3. The pod, read with the review; then its opt-out.
	if req.podErr != nil {
		d.outcome, d.err = metrics.OutcomeFailedOpen, req.podErr
		return answer{warnings: []string{warnPrefix + "could not decode the pod; pod admitted without pull secrets"}}
	}
	p := &req.pod
	if n := p.displayName(); n != "" {
		d.pod = n
	}
	if p.optedOut {
		d.outcome = metrics.OutcomeSkippedOptOut
		return answer{}
	}

	// 4. Images → instances.
	matched, warnings := h.matchImages(p)
	if len(matched) == 0 {
		d.outcome = metrics.OutcomeSkippedNoMatch
		return answer{warnings: cleanWarnings(warnings)}
	}
	d.instances = make([]string, 0, len(matched))
	for _, i := range matched {
		d.instances = append(d.instances, h.instances[i].Name)
	}

	// 5. Secrets, one per matched instance.
	d.dryRun = req.dryRun
	names, failed := h.pullSecrets(ctx, ns, p.serviceAccountName, matched, d, &warnings)

	// 6. Patch.
	add := p.secretsToAdd(names)
	d.outcome = metrics.OutcomePatched
	switch {
	case failed && len(add) == 0:
		d.outcome = metrics.OutcomeFailedOpen
	case d.noRole && len(add) == 0:
		d.outcome = metrics.OutcomeSkippedNoRole
	}
	return answer{warnings: cleanWarnings(warnings), add: add}
}

// pullSecrets ensures the Secret of each matched instance, as the identity
// the instance uses for the pod's ServiceAccount (serviceAccount, "" is
// "default"), and returns the names to reference, in config order. A failed
// instance adds a warning (and an Event unless the Secret is foreign, or
// the ServiceAccount names no role) and sets failed.
func (h *Handler) pullSecrets(ctx context.Context, ns *metav1.PartialObjectMetadata, serviceAccount string, matched []int, d *decision, warnings *[]string) (names []string, failed bool) {
	jobs, noRole, bad := h.identities(ctx, d.namespace, serviceAccount, matched, d, warnings)
	failed = bad
	d.noRole = noRole
	for _, r := range h.ensureAll(ctx, d.namespace, jobs, d.dryRun) {
		inst := h.instances[r.instance]
		secretName := cmp.Or(r.result.SecretName, inst.SecretName)
		switch {
		case errors.Is(r.err, pullsecret.ErrForeignSecret):
			failed, d.err = true, errors.Join(d.err, r.err)
			var conflict *pullsecret.InstallationConflictError
			if errors.As(r.err, &conflict) {
				*warnings = append(*warnings, fmt.Sprintf("%sthe Secret named %q in namespace %q belongs to another installation of the webhook (%q); "+
					"no pull secret added for instance %s: give this instance another secretName, "+
					"or opt the namespace in to one installation only", warnPrefix, secretName, d.namespace, conflict.Installation, inst.Name))
				break
			}
			*warnings = append(*warnings, fmt.Sprintf("%sa Secret named %q exists in namespace %q that the webhook does not manage; no pull secret added for instance %s",
				warnPrefix, secretName, d.namespace, inst.Name))
		case r.err != nil:
			failed, d.err = true, errors.Join(d.err, r.err)
			*warnings = append(*warnings, pullsecret.FixFirst(fmt.Sprintf("%sno pull secret for instance %s%s",
				warnPrefix, inst.Name, pullsecret.AsWhom(r.id)), r.err, maxWarning))
			h.recordFailure(ns, inst.Name+pullsecret.AsWhom(r.id), r.err)
		default:
			names = append(names, r.result.SecretName)
			if r.result.Warning != "" {
				*warnings = append(*warnings, r.result.Warning)
			}
		}
	}
	return names, failed
}

// cleanWarnings makes every warning one the API server passes on to the
// client: it drops a warning holding a control character or invalid UTF-8,
// which error bodies of Artifactory or a proxy may carry.
func cleanWarnings(warnings []string) []string {
	for i, w := range warnings {
		warnings[i] = pullsecret.CleanText(w)
	}
	return warnings
}

func isPodCreate(req *reviewRequest) bool {
	return req.group == "" && req.kind == "Pod" && req.subResource == "" &&
		req.operation == string(admissionv1.Create)
}

// namespace reads the namespace's metadata from the cache, falling back once
// to the API reader when the cache does not have it yet. A namespace that
// exists nowhere yields nil.
func (h *Handler) namespace(ctx context.Context, name string) (*metav1.PartialObjectMetadata, error) {
	if name == "" {
		return nil, nil
	}
	get := func(r client.Reader) (*metav1.PartialObjectMetadata, error) {
		ns := &metav1.PartialObjectMetadata{}
		ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
		if err := r.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
			return nil, err
		}
		return ns, nil
	}
	ns, err := get(h.namespaces)
	if apierrors.IsNotFound(err) && h.apiReader != nil {
		ns, err = get(h.apiReader)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading namespace %q: %w", name, err)
	}
	return ns, nil
}

// matchImages returns the indices of the instances serving the pod's
// images, in config order, and a warning per unparseable image.
func (h *Handler) matchImages(p *pod) (matched []int, warnings []string) {
	seen := make([]bool, len(h.instances))
	p.images(func(image string) {
		i, err := h.matcher.Index(image)
		switch {
		case err != nil:
			h.metrics.UnparseableImage()
			warnings = append(warnings, fmt.Sprintf("%sskipped image %q: not a valid image reference", warnPrefix, truncate(image, 100)))
		case i >= 0:
			seen[i] = true
		}
	})
	for i, ok := range seen {
		if ok {
			matched = append(matched, i)
		}
	}
	return matched, warnings
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// job is one instance's Secret to ensure, as one identity.
type job struct {
	instance int
	id       credentials.Identity
}

// identities returns the Secret to ensure for each matched instance: as the
// webhook's identity, or for an instance with identity serviceAccount as the
// pod's ServiceAccount's, resolved once per pod. An instance whose
// ServiceAccount names no role falls back to the webhook's identity when
// configured so; otherwise it gets no job, and a warning that says what is
// missing.
//
// noRole reports an instance left out because the ServiceAccount names no
// role (fallback none: configured, not a failure); failed one left out for
// any other reason (a malformed role, an unreadable ServiceAccount).
func (h *Handler) identities(ctx context.Context, namespace, serviceAccount string, matched []int, d *decision, warnings *[]string) (jobs []job, noRole, failed bool) {
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	var (
		resolved bool
		sa       pullsecret.ServiceAccount
		lookup   error
	)
	jobs = make([]job, 0, len(matched))
	for _, i := range matched {
		inst := h.instances[i]
		if !inst.PerServiceAccount() {
			jobs = append(jobs, job{instance: i})
			continue
		}
		if !resolved {
			sa, lookup = h.sas.Lookup(ctx, namespace, serviceAccount)
			resolved = true
		}
		id, err := sa.IdentityFor(inst)
		if lookup != nil {
			err = lookup
		}
		switch {
		case err == nil:
			jobs = append(jobs, job{instance: i, id: id})
		case errors.Is(err, credentials.ErrNoRole) && inst.Fallback == config.FallbackWebhook:
			jobs = append(jobs, job{instance: i})
		case errors.Is(err, credentials.ErrNoRole):
			noRole, d.reason = true, err.Error()
			fix := fmt.Sprintf("annotate ServiceAccount %s with %s: <IAM role ARN>", serviceAccount, config.RoleARNAnnotation)
			if inst.ExchangesOIDC() {
				fix = fmt.Sprintf("create ServiceAccount %s", serviceAccount)
				if h.optIn != "" {
					fix = fmt.Sprintf("create ServiceAccount %s, or annotate it with %s: \"true\"", serviceAccount, h.optIn)
				}
			}
			*warnings = append(*warnings, fmt.Sprintf("%sno pull secret for instance %s, which pulls as the pod's ServiceAccount: %v; "+
				"%s, or set the instance's fallback: webhook", warnPrefix, inst.Name, err, fix))
		case errors.Is(err, credentials.ErrBadRole):
			failed, d.err = true, errors.Join(d.err, err)
			*warnings = append(*warnings, fmt.Sprintf("%sno pull secret for instance %s, which pulls as the pod's ServiceAccount: %v; "+
				"correct the annotation %s of ServiceAccount %s (no fallback applies to a malformed role)",
				warnPrefix, inst.Name, err, config.RoleARNAnnotation, serviceAccount))
		default:
			failed, d.err = true, errors.Join(d.err, err)
			*warnings = append(*warnings, fmt.Sprintf("%sno pull secret for instance %s: could not read ServiceAccount %s: %v",
				warnPrefix, inst.Name, serviceAccount, err))
		}
	}
	return jobs, noRole, failed
}

type ensured struct {
	pos      int
	instance int
	id       credentials.Identity
	result   pullsecret.Result
	err      error
}

// ensureAll asks Secrets for every job concurrently and returns the
// results in the order of jobs. It returns by the context's deadline even
// if an Ensure call ignores the context; unfinished calls then report a
// timeout.
func (h *Handler) ensureAll(ctx context.Context, namespace string, jobs []job, dryRun bool) []ensured {
	ch := make(chan ensured, len(jobs)) // buffered: late results never block
	for pos, j := range jobs {
		go func() { ch <- h.ensure(ctx, pos, j, namespace, dryRun) }()
	}
	out := make([]ensured, len(jobs))
	done := make([]bool, len(jobs))
	for range jobs {
		select {
		case r := <-ch:
			out[r.pos], done[r.pos] = r, true
		case <-ctx.Done():
			for pos, j := range jobs {
				if !done[pos] {
					out[pos] = ensured{pos: pos, instance: j.instance, id: j.id,
						err: fmt.Errorf("timed out after %s: %w", h.timeout, ctx.Err())}
				}
			}
			return out
		}
	}
	return out
}

// ensure calls Secrets.EnsureAs, turning a panic into an error: it runs on
// its own goroutine, out of reach of admit's recover.
func (h *Handler) ensure(ctx context.Context, pos int, j job, namespace string, dryRun bool) (r ensured) {
	r = ensured{pos: pos, instance: j.instance, id: j.id}
	inst := h.instances[j.instance]
	defer func() {
		if p := recover(); p != nil {
			h.log.Error(fmt.Errorf("panic: %v", p), "Ensuring the pull secret panicked",
				"namespace", namespace, "instance", inst.Name, "stack", string(debug.Stack()))
			r.err = errors.New("internal error while ensuring the pull secret")
		}
	}()
	r.result, r.err = h.secrets.EnsureAs(ctx, namespace, inst, j.id, dryRun)
	if r.err == nil && r.result.SecretName == "" {
		r.err = errors.New("no Secret name returned")
	}
	return r
}

// recordFailure records a Warning Event on the namespace, stored in that
// namespace (a cluster-scoped regarding object would put it in "default"),
// where its owners look when pods fail to pull.
func (h *Handler) recordFailure(ns *metav1.PartialObjectMetadata, instance string, err error) {
	if h.recorder == nil {
		return
	}
	regarding := &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: ns.Name, Namespace: ns.Name, UID: ns.UID},
	}
	h.recorder.Eventf(regarding, nil, corev1.EventTypeWarning, ReasonTokenExchangeFailed, eventAction, "%s",
		pullsecret.WithFix(fmt.Sprintf("pods admitted without the pull secret of instance %s: %v", instance, err), err, pullsecret.MaxEventNote))
}

func (h *Handler) logDecision(d decision) {
	// The key-value pairs are only built for a line that is written.
	switch {
	case d.err != nil:
	case d.outcome == metrics.OutcomePatched || d.outcome == metrics.OutcomeFailedOpen:
		if !h.log.Enabled() {
			return
		}
	case !h.log.V(1).Enabled():
		return
	}
	kv := []any{"namespace", d.namespace, "pod", d.pod, "instances", d.instances, "outcome", d.outcome}
	if d.dryRun {
		kv = append(kv, "dryRun", true)
	}
	if d.reason != "" {
		kv = append(kv, "reason", d.reason)
	}
	switch {
	case d.err != nil:
		h.log.Error(d.err, "Admission review", kv...)
	case d.outcome == metrics.OutcomePatched || d.outcome == metrics.OutcomeFailedOpen:
		h.log.Info("Admission review", kv...)
	default:
		h.log.V(1).Info("Admission review", kv...)
	}
}
