package certs

import (
	"context"
	"crypto/x509"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

const (
	testNS     = "apw"
	testSecret = "apw-serving-cert"
	testMWC    = "apw"
)

var testHosts = ServiceHosts("apw", testNS)

// clock is a settable time source shared by replicas.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

func newCluster(t *testing.T, objs ...client.Object) client.WithWatch {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: testMWC},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "a.apw.io"}, {Name: "b.apw.io"}},
	}
	return fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(append(objs, mwc)...).Build()
}

func newReplica(t *testing.T, c client.Client, clk *clock) *SelfManaged {
	t.Helper()
	s, err := NewSelfManaged(SelfManagedOptions{
		Client: c, Namespace: testNS, SecretName: testSecret, WebhookConfigName: testMWC,
		Hosts: testHosts, Validity: 30 * 24 * time.Hour, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func served(t *testing.T, s *SelfManaged) *x509.Certificate {
	t.Helper()
	c, err := s.GetCertificate(nil)
	if err != nil {
		t.Fatalf("no certificate served: %v", err)
	}
	return c.Leaf
}

func caBundles(t *testing.T, c client.Client) [][]byte {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: testMWC}, mwc); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, w := range mwc.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	return out
}

// trusted fails the test unless every webhook's caBundle verifies leaf for
// every host at time now.
func trusted(t *testing.T, c client.Client, leaf *x509.Certificate, now time.Time) {
	t.Helper()
	for i, b := range caBundles(t, c) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			t.Fatalf("webhook %d: empty caBundle", i)
		}
		for _, h := range testHosts {
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: pool, CurrentTime: now}); err != nil {
				t.Errorf("webhook %d: certificate %s not trusted for %s: %v", i, leaf.SerialNumber.Text(16), h, err)
			}
		}
	}
}

func storedCAs(t *testing.T, c client.Client) int {
	t.Helper()
	sec := &corev1.Secret{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: testSecret}, sec); err != nil {
		t.Fatal(err)
	}
	return len(parseCerts(sec.Data[CAFile]))
}

func TestFirstSyncStoresSecretInjectsCABundleThenServesAndBecomesReady(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := newCluster(t)
	s := newReplica(t, c, clk)
	if s.Checker(nil) == nil {
		t.Fatal("ready before any certificate is served")
	}
	if _, err := s.GetCertificate(nil); err == nil {
		t.Fatal("a certificate was served before the first sync")
	}
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Checker(nil); err != nil {
		t.Fatalf("not ready after sync: %v", err)
	}
	sec := &corev1.Secret{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: testNS, Name: testSecret}, sec); err != nil {
		t.Fatalf("certificate Secret not stored: %v", err)
	}
	if sec.Type != corev1.SecretTypeTLS || len(sec.Data[CertFile]) == 0 || len(sec.Data[KeyFile]) == 0 {
		t.Fatalf("Secret is not a complete kubernetes.io/tls Secret: type %s, keys %d", sec.Type, len(sec.Data))
	}
	trusted(t, c, served(t, s), clk.Now())
}

func TestReplicasStartingTogetherServeOneCertificate(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := newCluster(t)
	replicas := make([]*SelfManaged, 4)
	for i := range replicas {
		replicas[i] = newReplica(t, c, clk)
	}
	var wg sync.WaitGroup
	for _, r := range replicas {
		wg.Go(func() {
			if err := r.Sync(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	first := served(t, replicas[0])
	for i, r := range replicas[1:] {
		if !served(t, r).Equal(first) {
			t.Errorf("replica %d serves another certificate than replica 0", i+1)
		}
	}
	if n := storedCAs(t, c); n != 1 {
		t.Errorf("Secret holds %d CAs, want 1 (one winner, others adopted it)", n)
	}
}

func TestRenewsBeforeExpiryKeepingTheOldCATrustedUntilItExpires(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := newCluster(t)
	s := newReplica(t, c, clk)
	lagging := newReplica(t, c, clk) // syncs only at the start: serves the old certificate
	for _, r := range []*SelfManaged{s, lagging} {
		if err := r.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	old := served(t, s)

	clk.Add(10 * 24 * time.Hour) // 20 of 30 days left: above RenewBefore (10 days)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !served(t, s).Equal(old) {
		t.Fatal("renewed a certificate that was far from expiry")
	}

	clk.Add(11 * 24 * time.Hour) // 9 days left: renew
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !served(t, s).Equal(old) {
		t.Fatal("a renewed certificate was served before API servers could see its CA")
	}
	clk.Add(DefaultTrustDelay)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	renewed := served(t, s)
	if renewed.Equal(old) {
		t.Fatal("certificate not renewed within RenewBefore of its expiry")
	}
	trusted(t, c, renewed, clk.Now())
	trusted(t, c, served(t, lagging), clk.Now()) // the replica that has not synced yet
	if n := storedCAs(t, c); n != 2 {
		t.Errorf("Secret holds %d CAs after renewal, want 2 (new and previous)", n)
	}

	clk.Add(10 * 24 * time.Hour) // the old certificate and its CA expired
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, b := range caBundles(t, c) {
		if n := len(parseCerts(b)); n != 1 {
			t.Errorf("webhook %d: caBundle holds %d CAs after the old one expired, want 1", i, n)
		}
	}
	trusted(t, c, renewed, clk.Now())
}

func TestRenewalRaceLoserAdoptsTheWinnersCertificate(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := newCluster(t)
	winner := newReplica(t, c, clk)
	if err := winner.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.Add(25 * 24 * time.Hour)
	// The loser read the Secret, then the winner renewed before the loser's
	// Update: the loser's Update carries a stale resourceVersion.
	raced := false
	loserClient := interceptor.NewClient(c, interceptor.Funcs{
		Update: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*corev1.Secret); ok && !raced {
				raced = true
				if err := winner.Sync(ctx); err != nil {
					t.Fatal(err)
				}
			}
			return cl.Update(ctx, obj, opts...)
		},
	})
	loser := newReplica(t, loserClient, clk)
	if err := loser.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !raced {
		t.Fatal("the race was not staged")
	}
	clk.Add(DefaultTrustDelay)
	for _, r := range []*SelfManaged{winner, loser} {
		if err := r.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if !served(t, loser).Equal(served(t, winner)) {
		t.Error("replicas serve different certificates after a renewal race")
	}
	if n := storedCAs(t, c); n != 2 {
		t.Errorf("Secret holds %d CAs, want 2: the loser must not have renewed again", n)
	}
}

func TestRenewsWhenTheStoredCertificateDoesNotCoverTheHosts(t *testing.T) {
	clk := &clock{t: time.Now()}
	foreign, err := generateAt(clk.Now(), []string{"other.example"}, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: testSecret}, Type: corev1.SecretTypeTLS}
	setBundle(sec, foreign)
	c := newCluster(t, sec)
	s := newReplica(t, c, clk)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	trusted(t, c, served(t, s), clk.Now())
}

func TestStaleCABundleNeverRemovesANewerCA(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	older, err := generateAt(now, testHosts, 10*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	newer, err := generateAt(now, testHosts, 20*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	current := mergeCABundles(now, newer.CACert, older.CACert)
	if got := mergeCABundles(now, older.CACert, current); string(got) != string(current) {
		t.Error("merging an older Secret's CA into the current bundle changed it (would flap between replicas)")
	}
	if got := mergeCABundles(now.Add(15*time.Hour), older.CACert, current); string(got) != string(newer.CACert) {
		t.Error("an expired CA was kept, or the unexpired one dropped")
	}
	if got := mergeCABundles(now, []byte("garbage"), current); string(got) != string(current) {
		t.Error("an unreadable bundle changed the merge")
	}
}

func TestNewSelfManagedRejectsIncompleteOptions(t *testing.T) {
	c := newCluster(t)
	valid := SelfManagedOptions{Client: c, Namespace: testNS, SecretName: testSecret, WebhookConfigName: testMWC, Hosts: testHosts}
	for name, mutate := range map[string]func(*SelfManagedOptions){
		"no client":        func(o *SelfManagedOptions) { o.Client = nil },
		"no namespace":     func(o *SelfManagedOptions) { o.Namespace = "" },
		"no secret":        func(o *SelfManagedOptions) { o.SecretName = "" },
		"no webhook":       func(o *SelfManagedOptions) { o.WebhookConfigName = "" },
		"no hosts":         func(o *SelfManagedOptions) { o.Hosts = nil },
		"renew > validity": func(o *SelfManagedOptions) { o.Validity = time.Hour; o.RenewBefore = 2 * time.Hour },
	} {
		o := valid
		mutate(&o)
		if _, err := NewSelfManaged(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewSelfManaged(valid); err != nil {
		t.Errorf("valid options rejected: %v", err)
	}
}
