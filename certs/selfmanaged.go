package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Defaults of SelfManagedOptions.
const (
	DefaultValidity = 365 * 24 * time.Hour
	DefaultInterval = time.Minute
	// DefaultTrustDelay covers the time API servers take to see an updated
	// caBundle (their informers usually take well under a second).
	DefaultTrustDelay = 10 * time.Second
)

// SelfManagedOptions configure NewSelfManaged.
type SelfManagedOptions struct {
	// Client must read from the API server, not a cache: a replica has to
	// see the Secret another replica wrote a moment ago.
	Client client.Client
	// Namespace and SecretName locate the Secret holding the CA bundle and
	// the serving key pair, shared by all replicas.
	Namespace  string
	SecretName string
	// WebhookConfigName is the MutatingWebhookConfiguration whose webhooks
	// get the CA bundle.
	WebhookConfigName string
	// Hosts the certificate is valid for: the Service's DNS names (see
	// ServiceHosts) or IP addresses.
	Hosts []string
	// Validity of each CA and serving certificate (default 1 year).
	Validity time.Duration
	// RenewBefore: a certificate with less than this left is replaced
	// (default a third of Validity).
	RenewBefore time.Duration
	// Interval between checks (default 1 minute; errors retry sooner). It
	// must be well below RenewBefore so that every replica picks up a new
	// certificate before the old one expires.
	Interval time.Duration
	// TrustDelay: a renewed certificate is served only this long after its
	// CA was seen in the webhook configuration, so that every API server
	// trusts it first (default 10s). The previous certificate, still valid
	// for RenewBefore, is served meanwhile.
	TrustDelay time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	Log logr.Logger
}

// SelfManaged issues, stores, rotates and serves the webhook's certificate.
// Run it as a manager.Runnable on every replica (it needs no leader), hand
// TLSOpt to the webhook server and Checker to the readiness probe.
type SelfManaged struct {
	o       SelfManagedOptions
	serving atomic.Pointer[tls.Certificate]

	// pending is a renewed certificate waiting for TrustDelay to pass since
	// pendingSince. Only Sync touches them, and Start calls Sync serially.
	pending      *tls.Certificate
	pendingSince time.Time
}

var (
	_ manager.Runnable               = (*SelfManaged)(nil)
	_ manager.LeaderElectionRunnable = (*SelfManaged)(nil)
)

// ServiceHosts are the DNS names the API server may use to reach a Service.
func ServiceHosts(service, namespace string) []string {
	return []string{
		service + "." + namespace + ".svc",
		service + "." + namespace + ".svc.cluster.local",
		service + "." + namespace,
		service,
	}
}

// NewSelfManaged checks the options and fills in defaults.
func NewSelfManaged(o SelfManagedOptions) (*SelfManaged, error) {
	switch {
	case o.Client == nil:
		return nil, errors.New("self-managed certificates: a client is required")
	case o.Namespace == "":
		return nil, errors.New("self-managed certificates: the namespace is required (POD_NAMESPACE)")
	case o.SecretName == "":
		return nil, errors.New("self-managed certificates: the Secret name is required")
	case o.WebhookConfigName == "":
		return nil, errors.New("self-managed certificates: the MutatingWebhookConfiguration name is required")
	case len(o.Hosts) == 0:
		return nil, errors.New("self-managed certificates: at least one host is required")
	}
	if o.Validity <= 0 {
		o.Validity = DefaultValidity
	}
	if o.RenewBefore <= 0 {
		o.RenewBefore = o.Validity / 3
	}
	if o.RenewBefore >= o.Validity {
		return nil, fmt.Errorf("self-managed certificates: renewBefore %s must be below the validity %s", o.RenewBefore, o.Validity)
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.TrustDelay <= 0 {
		o.TrustDelay = DefaultTrustDelay
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log.GetSink() == nil {
		o.Log = logr.Discard()
	}
	return &SelfManaged{o: o}, nil
}

// NeedLeaderElection is false: every replica serves, so every replica needs
// the certificate; the Secret's resourceVersion arbitrates writes.
func (s *SelfManaged) NeedLeaderElection() bool { return false }

// Start syncs now and then every Interval until ctx ends. Failures are
// logged and retried: a replica that already serves a certificate keeps it.
func (s *SelfManaged) Start(ctx context.Context) error {
	retryAfter := min(s.o.Interval, 5*time.Second)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		next := s.o.Interval
		if err := s.Sync(ctx); err != nil {
			s.o.Log.Error(err, "syncing the serving certificate", "secret", s.o.Namespace+"/"+s.o.SecretName)
			next = retryAfter
		}
		if s.pending != nil {
			next = min(next, s.o.TrustDelay)
		}
		t.Reset(next)
	}
}

// Sync makes sure the Secret holds a certificate that is not close to
// expiry, that the webhook configuration trusts its CA, and only then
// serves it — at once when nothing is served yet, else TrustDelay later —
// so the API server never meets a certificate it cannot verify. Sync is not
// safe for concurrent use on one SelfManaged.
func (s *SelfManaged) Sync(ctx context.Context) error {
	b, err := s.ensureSecret(ctx)
	if err != nil {
		return err
	}
	if err := s.injectCABundle(ctx, b.CACert); err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(b.Cert, b.Key)
	if err != nil {
		return fmt.Errorf("loading the key pair of Secret %s/%s: %w", s.o.Namespace, s.o.SecretName, err)
	}
	cur := s.serving.Load()
	switch {
	case cur != nil && bytes.Equal(cur.Certificate[0], pair.Certificate[0]):
		s.pending = nil
	case cur == nil || !s.o.Now().Before(cur.Leaf.NotAfter):
		s.serve(&pair)
	case s.pending == nil || !bytes.Equal(s.pending.Certificate[0], pair.Certificate[0]):
		s.pending, s.pendingSince = &pair, s.o.Now()
	case s.o.Now().Sub(s.pendingSince) >= s.o.TrustDelay:
		s.serve(s.pending)
	}
	return nil
}

func (s *SelfManaged) serve(c *tls.Certificate) {
	s.serving.Store(c)
	s.pending = nil
	s.o.Log.Info("serving certificate", "notAfter", c.Leaf.NotAfter.UTC().Format(time.RFC3339),
		"serial", c.Leaf.SerialNumber.Text(16))
}

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (s *SelfManaged) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.serving.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no serving certificate yet")
}

// TLSOpt makes a webhook server serve this certificate instead of watching
// files (webhook.Options.TLSOpts).
func (s *SelfManaged) TLSOpt(c *tls.Config) { c.GetCertificate = s.GetCertificate }

// Checker is a readiness check: it fails until a certificate the webhook
// configuration trusts is served, and again if that certificate expired.
func (s *SelfManaged) Checker(*http.Request) error {
	c := s.serving.Load()
	if c == nil {
		return errors.New("no serving certificate yet")
	}
	if !s.o.Now().Before(c.Leaf.NotAfter) {
		return fmt.Errorf("serving certificate expired at %s", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// ensureSecret returns the stored bundle, creating or renewing it first when
// needed. Replicas race on create (AlreadyExists) and on renewal (Conflict);
// the loser re-reads and adopts the winner's certificate.
func (s *SelfManaged) ensureSecret(ctx context.Context) (*Bundle, error) {
	var b *Bundle
	err := retry.OnError(retry.DefaultRetry, func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
	}, func() error {
		var err error
		b, err = s.ensureSecretOnce(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ensuring the certificate Secret %s/%s: %w", s.o.Namespace, s.o.SecretName, err)
	}
	return b, nil
}

func (s *SelfManaged) ensureSecretOnce(ctx context.Context) (*Bundle, error) {
	now := s.o.Now()
	sec := &corev1.Secret{}
	err := s.o.Client.Get(ctx, client.ObjectKey{Namespace: s.o.Namespace, Name: s.o.SecretName}, sec)
	if apierrors.IsNotFound(err) {
		b, err := generateAt(now, s.o.Hosts, s.o.Validity)
		if err != nil {
			return nil, err
		}
		sec = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.o.Namespace, Name: s.o.SecretName},
			Type:       corev1.SecretTypeTLS,
		}
		setBundle(sec, b)
		if err := s.o.Client.Create(ctx, sec); err != nil {
			return nil, err
		}
		s.o.Log.Info("created the certificate Secret")
		return b, nil
	}
	if err != nil {
		return nil, err
	}
	old := &Bundle{CACert: sec.Data[CAFile], Cert: sec.Data[CertFile], Key: sec.Data[KeyFile]}
	reason := s.renewalReason(now, old)
	if reason == "" {
		return old, nil
	}
	b, err := generateAt(now, s.o.Hosts, s.o.Validity)
	if err != nil {
		return nil, err
	}
	// The previous CA stays trusted until the certificate it signed
	// expires: replicas that have not synced yet still serve it.
	b.CACert = joinCerts(b.CACert, validCerts(now, old.CACert))
	setBundle(sec, b)
	// Update carries the resourceVersion read above: if another replica
	// renewed in between, this fails with Conflict and the retry adopts it.
	if err := s.o.Client.Update(ctx, sec); err != nil {
		return nil, err
	}
	s.o.Log.Info("renewed the serving certificate", "reason", reason)
	return b, nil
}

// renewalReason says why the stored bundle must be replaced ("" if not).
func (s *SelfManaged) renewalReason(now time.Time, b *Bundle) string {
	pair, err := tls.X509KeyPair(b.Cert, b.Key)
	if err != nil {
		return "unreadable key pair"
	}
	leaf := pair.Leaf
	if now.After(leaf.NotAfter.Add(-s.o.RenewBefore)) {
		return "expires soon"
	}
	for _, h := range s.o.Hosts {
		if leaf.VerifyHostname(h) != nil {
			return "host " + h + " not covered"
		}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(b.CACert) {
		return "no CA"
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now}); err != nil {
		return "not signed by the stored CA"
	}
	return ""
}

// injectCABundle adds the CAs to every webhook of the configuration. It
// merges rather than replaces (dropping only expired CAs, in a stable
// order), so a replica acting on an older read of the Secret can never
// remove a CA that another replica already serves under.
func (s *SelfManaged) injectCABundle(ctx context.Context, caPEM []byte) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := s.o.Client.Get(ctx, client.ObjectKey{Name: s.o.WebhookConfigName}, mwc); err != nil {
			return err
		}
		changed := false
		for i := range mwc.Webhooks {
			cc := &mwc.Webhooks[i].ClientConfig
			merged := mergeCABundles(s.o.Now(), caPEM, cc.CABundle)
			if !bytes.Equal(merged, cc.CABundle) {
				cc.CABundle = merged
				changed = true
			}
		}
		if !changed {
			return nil
		}
		return s.o.Client.Update(ctx, mwc)
	})
	if err != nil {
		return fmt.Errorf("injecting the CA bundle into MutatingWebhookConfiguration %s: %w", s.o.WebhookConfigName, err)
	}
	return nil
}

func setBundle(sec *corev1.Secret, b *Bundle) {
	sec.Data = map[string][]byte{CAFile: b.CACert, CertFile: b.Cert, KeyFile: b.Key}
}

// mergeCABundles returns the unexpired certificates of both PEM bundles,
// deduplicated, newest expiry first (ties by DER), PEM encoded.
func mergeCABundles(now time.Time, bundles ...[]byte) []byte {
	var all []*x509.Certificate
	for _, b := range bundles {
		for _, c := range parseCerts(b) {
			if now.Before(c.NotAfter) && !slices.ContainsFunc(all, c.Equal) {
				all = append(all, c)
			}
		}
	}
	slices.SortFunc(all, func(a, b *x509.Certificate) int {
		if c := b.NotAfter.Compare(a.NotAfter); c != 0 {
			return c
		}
		return bytes.Compare(a.Raw, b.Raw)
	})
	var out []byte
	for _, c := range all {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// validCerts keeps the unexpired certificates of a PEM bundle.
func validCerts(now time.Time, bundle []byte) []byte { return mergeCABundles(now, bundle) }

func joinCerts(a, b []byte) []byte { return append(append([]byte(nil), a...), b...) }

// parseCerts decodes the CERTIFICATE blocks of a PEM bundle, skipping
// anything unreadable (a hand-edited caBundle must not stop rotation).
func parseCerts(bundle []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, bundle = pem.Decode(bundle)
		if block == nil {
			return out
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			out = append(out, c)
		}
	}
}
