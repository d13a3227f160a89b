// Package metrics defines every Prometheus metric the webhook exports, under
// the single prefix artifactory_pull_. Label values are bounded: outcomes,
// instance names from the configuration, operations and results; never pod,
// namespace or user names.
//
// A *Metrics is built once with New and passed to the packages that record;
// a nil *Metrics records nothing, so tests may omit it.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Admission outcomes (label "outcome" of admissions_total).
const (
	OutcomePatched          = "patched"
	OutcomeSkippedNamespace = "skipped_namespace"
	OutcomeSkippedNoMatch   = "skipped_no_match"
	OutcomeSkippedOptOut    = "skipped_optout"
	OutcomeSkippedOperation = "skipped_operation"
	OutcomeFailedOpen       = "failed_open"
	// OutcomeSkippedNoRole: the pod's ServiceAccount names no role for an
	// instance with identity serviceAccount and fallback none, and it got
	// no Secret (a choice of configuration, not a failure).
	OutcomeSkippedNoRole = "skipped_no_role"
)

// Metrics holds the collectors. Use New.
type Metrics struct {
	admissions        *prometheus.CounterVec
	admissionDuration *prometheus.HistogramVec
	unparseableImages prometheus.Counter
	exchanges         *prometheus.CounterVec
	cacheLookups      *prometheus.CounterVec
	secretWrites      *prometheus.CounterVec
	expiry            *expiryCollector
	rotation          *rotationCollector
	failures          *prometheus.GaugeVec
	backoff           *prometheus.GaugeVec
	backoffSkips      *prometheus.CounterVec
	adoptions         *prometheus.CounterVec
	lifecycle         *prometheus.CounterVec
	roleProofs        *prometheus.CounterVec
	mu                sync.Mutex
	roles             map[string]struct{} // named by roleProofs
}

// Actions of the Secret refresher (label "action" of lifecycle_actions_total).
const (
	LifecycleProvisioned = "provisioned" // a Secret was written when its namespace opted in, before any pod
	LifecycleRefreshed   = "refreshed"   // a Secret got a new token or new hosts
	LifecycleRestored    = "restored"    // a deleted or hand-edited Secret was rewritten
	LifecycleDeleted     = "deleted"     // a Secret of an opted-out namespace was deleted
	LifecycleFailed      = "failed"      // a Secret could not be kept up to date
	// LifecycleTokenPrefix prefixes the actions on generic token Secrets
	// (token_provisioned, token_refreshed, token_restored, token_deleted,
	// token_failed).
	LifecycleTokenPrefix = "token_"
)

// New creates the collectors and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "artifactory_pull_admissions_total",
			Help: "Pod admission reviews handled, by outcome.",
		}, []string{"outcome"}),
		admissionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "artifactory_pull_admission_duration_seconds",
			Help:    "Time to answer a pod admission review, by outcome.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"outcome"}),
		unparseableImages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "artifactory_pull_unparseable_images_total",
			Help: "Container image references that could not be parsed and were skipped.",
		}),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "artifactory_pull_token_exchanges_total",
			Help: "Token exchanges with Artifactory, by instance, exchange (aws, oidc) and result.",
		}, []string{"instance", "exchange", "result"}),
		cacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "artifactory_pull_token_cache_lookups_total",
			Help: "Token cache lookups, by instance and result (hit or miss).",
		}, []string{"instance", "result"}),
		secretWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "artifactory_pull_secret_writes_total",
			Help: "Write requests for managed pull Secrets, by writer (admission, refresher), operation (create, update, delete) and result.",
		}, []string{"writer", "operation", "result"}),
		failures: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "artifactory_pull_token_consecutive_failures",
			Help: "Consecutive failed token mints of an instance (0 once a mint succeeds).",
		}, []string{"instance"}),
		backoff: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "artifactory_pull_token_backoff_seconds",
			Help: "Wait before the next token mint of an instance after its latest failure (0 when healthy).",
		}, []string{"instance"}),
		backoffSkips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "artifactory_pull_token_backoff_skips_total",
			Help: "Token requests answered without an exchange because the instance was backing off.",
		}, []string{"instance"}),
		adoptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "artifactory_pull_token_adoptions_total",
			Help: "Tokens taken from the checkpoint (minted by another replica) instead of exchanging, by instance.",
		}, []string{"instance"}),
		roles: map[string]struct{}{},
		roleProofs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "artifactory_pull_role_assumptions_total",
			Help: "sts:AssumeRoleWithWebIdentity calls for ServiceAccounts' roles (identity serviceAccount), by role and result " +
				"(success, refused, error). The role is named on success only, for the first 32 roles (then \"other\"); " +
				"every failure counts under role \"unproven\", so annotations naming arbitrary roles add no series.",
		}, []string{"role", "result"}),
		lifecycle: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "artifactory_pull_lifecycle_actions_total",
			Help: "Actions of the Secret refresher, by instance and action (refreshed, restored, deleted, failed).",
		}, []string{"instance", "action"}),
		expiry: &expiryCollector{
			desc: prometheus.NewDesc("artifactory_pull_token_expiry_seconds",
				"Seconds until the earliest-expiring token held by a managed pull Secret of an instance, in an opted-in namespace, expires (negative once expired).",
				[]string{"instance"}, nil),
			now: time.Now,
		},
		rotation: &rotationCollector{
			managed: prometheus.NewDesc("artifactory_pull_rotation_managed_secrets",
				"Managed Secrets of this installation the refresher rewrites at each token rotation (pull Secrets, "+
					"ServiceAccounts' included, and token Secrets), counted in the informer caches at scrape time.",
				nil, nil),
			projected: prometheus.NewDesc("artifactory_pull_rotation_projected_seconds",
				"Projected duration of a rotation: artifactory_pull_rotation_managed_secrets / refresh.writesPerSecond.",
				nil, nil),
			budget: prometheus.NewDesc("artifactory_pull_rotation_budget_seconds",
				"The longest a rotation may take: a quarter of the smallest refresh window (tokenTTL x refreshThreshold). "+
					"artifactory_pull_rotation_projected_seconds above it: raise refresh.writesPerSecond.",
				nil, nil),
			writesPerSecond: prometheus.NewDesc("artifactory_pull_rotation_writes_per_second",
				"The refresher's write pace, refresh.writesPerSecond.", nil, nil),
		},
	}
	if reg != nil {
		reg.MustRegister(m.admissions, m.admissionDuration, m.unparseableImages, m.exchanges,
			m.cacheLookups, m.secretWrites, m.expiry, m.rotation, m.failures, m.backoff, m.backoffSkips, m.adoptions, m.lifecycle, m.roleProofs)
	}
	return m
}

// Admission records one handled review.
func (m *Metrics) Admission(outcome string, took time.Duration) {
	if m == nil {
		return
	}
	m.admissions.WithLabelValues(outcome).Inc()
	m.admissionDuration.WithLabelValues(outcome).Observe(took.Seconds())
}

// UnparseableImage counts one skipped image reference.
func (m *Metrics) UnparseableImage() {
	if m == nil {
		return
	}
	m.unparseableImages.Inc()
}

// Exchange records one token exchange of kind exchange (aws, oidc). result
// is "success" or a bounded
// failure class (see credentials.FailureClass).
func (m *Metrics) Exchange(instance, exchange, result string) {
	if m == nil {
		return
	}
	m.exchanges.WithLabelValues(instance, exchange, result).Inc()
}

// CacheLookup records a token cache hit (true) or miss.
func (m *Metrics) CacheLookup(instance string, hit bool) {
	if m == nil {
		return
	}
	r := "miss"
	if hit {
		r = "hit"
	}
	m.cacheLookups.WithLabelValues(instance, r).Inc()
}

// Writers of managed Secrets (label "writer" of secret_writes_total): the
// admission path, or the refresher run by the elected leader.
const (
	WriterAdmission = "admission"
	WriterRefresher = "refresher"
)

// SecretWrite records one write request for a managed Secret, made by
// writer (Writer*).
func (m *Metrics) SecretWrite(writer, operation string, err error) {
	if m == nil {
		return
	}
	r := "success"
	if err != nil {
		r = "error"
	}
	m.secretWrites.WithLabelValues(writer, operation, r).Inc()
}

// TokenBackoff records an instance's retry state after a mint: its
// consecutive failures and the wait before the next attempt.
func (m *Metrics) TokenBackoff(instance string, failures int, wait time.Duration) {
	if m == nil {
		return
	}
	m.failures.WithLabelValues(instance).Set(float64(failures))
	m.backoff.WithLabelValues(instance).Set(wait.Seconds())
}

// BackoffSkip counts one token request answered without an exchange
// because the instance was backing off.
func (m *Metrics) BackoffSkip(instance string) {
	if m == nil {
		return
	}
	m.backoffSkips.WithLabelValues(instance).Inc()
}

// TokenAdopted counts one token taken from the checkpoint instead of minted.
func (m *Metrics) TokenAdopted(instance string) {
	if m == nil {
		return
	}
	m.adoptions.WithLabelValues(instance).Inc()
}

// Results of RoleAssumption besides success.
const (
	RoleRefused = "refused"
	RoleError   = "error"
	// RoleUnproven is the role label of every failed assumption.
	RoleUnproven = "unproven"
)

// MaxRoleLabels is how many distinct roles RoleAssumption names; later
// ones count under RoleOther. (A role that trusts a ServiceAccount can be
// made in any AWS account: tenants must not add series at will.)
const MaxRoleLabels = 32

// RoleOther is the role label of successful assumptions beyond MaxRoleLabels roles.
const RoleOther = "other"

// RoleAssumption counts one sts:AssumeRoleWithWebIdentity for a
// ServiceAccount's role: result "success" (labelled with role, for the
// first MaxRoleLabels roles), RoleRefused or RoleError (labelled
// RoleUnproven).
func (m *Metrics) RoleAssumption(role, result string) {
	if m == nil {
		return
	}
	if result != "success" {
		role = RoleUnproven
	} else {
		m.mu.Lock()
		if _, ok := m.roles[role]; !ok {
			if len(m.roles) < MaxRoleLabels {
				m.roles[role] = struct{}{}
			} else {
				role = RoleOther
			}
		}
		m.mu.Unlock()
	}
	m.roleProofs.WithLabelValues(role, result).Inc()
}

// LifecycleAction counts one action of the Secret refresher (Lifecycle*).
func (m *Metrics) LifecycleAction(instance, action string) {
	if m == nil {
		return
	}
	m.lifecycle.WithLabelValues(instance, action).Inc()
}

// SetTokenExpirySource makes artifactory_pull_token_expiry_seconds report,
// at scrape time, src's expiry per instance: the earliest expiry among the
// tokens the managed pull Secrets hold (pullsecret.Store.HeldExpiries). It
// describes what pods pull with, not what one replica cached, so every
// replica reports the same value whichever of them minted. Call it before
// the first scrape; until then, and for instances src leaves out, there is
// no sample.
func (m *Metrics) SetTokenExpirySource(src func() map[string]time.Time) {
	if m == nil {
		return
	}
	m.expiry.mu.Lock()
	defer m.expiry.mu.Unlock()
	m.expiry.source = src
}

type expiryCollector struct {
	desc   *prometheus.Desc
	mu     sync.Mutex
	source func() map[string]time.Time
	now    func() time.Time
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	src := c.source
	c.mu.Unlock()
	if src == nil {
		return
	}
	now := c.now()
	for inst, t := range src() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, t.Sub(now).Seconds(), inst)
	}
}

// SetRotationSource makes the rotation gauges report, at scrape time,
// count's number of managed Secrets (artifactory_pull_rotation_managed_secrets),
// their projected rotation duration at writesPerSecond
// (artifactory_pull_rotation_projected_seconds), the budget a rotation
// must fit in (artifactory_pull_rotation_budget_seconds) and the pace
// itself (artifactory_pull_rotation_writes_per_second). Counting costs a
// scrape a walk of the informer caches, and an admission nothing. While
// count fails (before the caches sync) only the pace and budget have a
// sample; without a source none has.
func (m *Metrics) SetRotationSource(writesPerSecond float64, budget time.Duration, count func() (int, error)) {
	if m == nil {
		return
	}
	m.rotation.mu.Lock()
	defer m.rotation.mu.Unlock()
	m.rotation.wps, m.rotation.budgetSeconds, m.rotation.count = writesPerSecond, budget.Seconds(), count
}

type rotationCollector struct {
	managed, projected, budget, writesPerSecond *prometheus.Desc

	mu            sync.Mutex
	wps           float64
	budgetSeconds float64
	count         func() (int, error)
}

func (c *rotationCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.managed
	ch <- c.projected
	ch <- c.budget
	ch <- c.writesPerSecond
}

func (c *rotationCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	wps, budget, count := c.wps, c.budgetSeconds, c.count
	c.mu.Unlock()
	if count == nil || wps <= 0 {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.writesPerSecond, prometheus.GaugeValue, wps)
	ch <- prometheus.MustNewConstMetric(c.budget, prometheus.GaugeValue, budget)
	n, err := count()
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.managed, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(c.projected, prometheus.GaugeValue, float64(n)/wps)
}
