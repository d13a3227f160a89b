package pullsecret

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

type fakeRetry struct {
	err  error
	next time.Time
}

func (f *fakeRetry) LastError(credentials.Key) error       { return f.err }
func (f *fakeRetry) NextAttempt(credentials.Key) time.Time { return f.next }

type refresherHarness struct {
	*harness
	r      *Refresher
	retry  *fakeRetry
	events *events.FakeRecorder
}

func namespaceWith(labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}
}

var optedInLabels = map[string]string{"artifactory-pull-webhook/inject": "enabled"}

func newRefresherHarness(t *testing.T, cleanup bool, objs ...client.Object) *refresherHarness {
	t.Helper()
	return refresherOn(t, newHarness(t, interceptor.Funcs{}, objs...), cleanup)
}

// refresherOn runs a Refresher on h's Store and API server; adjust
// changes its configuration.
func refresherOn(t *testing.T, h *harness, cleanup bool, adjust ...func(*config.Config)) *refresherHarness {
	t.Helper()
	rh := &refresherHarness{harness: h, retry: &fakeRetry{}, events: events.NewFakeRecorder(10)}
	cfg := &config.Config{Instances: []config.Instance{instance()}, NamespaceLabel: config.DefaultNamespaceLabel,
		CleanupOnOptOut: &cleanup}
	for _, f := range adjust {
		f(cfg)
	}
	r, err := NewRefresher(RefresherOptions{
		Config:   cfg,
		Store:    h.store,
		Reader:   informerCache{h.api},
		Retry:    rh.retry,
		Recorder: rh.events,
		Now:      func() time.Time { return h.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	rh.r = r
	return rh
}

// informerCache is the manager's cache as the refresher sees it: every
// Namespace, but only managed Secrets.
type informerCache struct{ client.Reader }

func (c informerCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		return managedOnly(c).Get(ctx, key, obj, opts...)
	}
	return c.Reader.Get(ctx, key, obj, opts...)
}

var secretKey = types.NamespacedName{Namespace: ns, Name: "artifactory-pull"}

func (h *refresherHarness) reconcile(t *testing.T) reconcile.Result {
	t.Helper()
	res, err := h.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: secretKey})
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	return res
}

// event returns the next recorded event, or "" when there is none.
func (h *refresherHarness) event() string {
	select {
	case e := <-h.events.Events:
		return e
	default:
		return ""
	}
}

func TestRefresherRewritesSecretDueForRefreshAndRequeuesAtTheNextRefreshPoint(t *testing.T) {
	h := newRefresherHarness(t, true, namespaceWith(optedInLabels),
		managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts))
	h.now = t0.Add(46 * time.Minute)
	h.tokens.cred = credAt(h.now, rawToken)

	res := h.reconcile(t)

	if _, tok, _ := ParseDockerConfigJSON(h.secret(t).Data[corev1.DockerConfigJsonKey], "acme.jfrog.io"); tok.Reveal() != rawToken {
		t.Error("the Secret does not carry the new token")
	}
	if want := 45*time.Minute + refreshSlack; res.RequeueAfter != want {
		t.Errorf("RequeueAfter = %s, want %s (just after the new token's refresh point)", res.RequeueAfter, want)
	}
	if e := h.event(); !strings.HasPrefix(e, "Normal "+ReasonRefreshed) || strings.Contains(e, rawToken) {
		t.Errorf("event = %q, want %s without token", e, ReasonRefreshed)
	}
}

func TestRefresherWritesNothingWhenTheSecretCarriesTheCurrentToken(t *testing.T) {
	cred := credAt(t0, rawToken)
	h := newRefresherHarness(t, true, namespaceWith(optedInLabels), managedSecret(t, cred, instance().RegistryHosts))
	h.now = t0.Add(10 * time.Minute)
	h.tokens.cred = cred

	res := h.reconcile(t)

	if h.apiCalls() != 0 {
		t.Errorf("API calls = %v, want none", h.calls)
	}
	if want := 35*time.Minute + refreshSlack; res.RequeueAfter != want {
		t.Errorf("RequeueAfter = %s, want %s", res.RequeueAfter, want)
	}
	if e := h.event(); e != "" {
		t.Errorf("event %q for a Secret that was not written", e)
	}
}

func TestRefresherRestoresEditedSecret(t *testing.T) {
	cred := credAt(t0, rawToken)
	edited := managedSecret(t, cred, instance().RegistryHosts)
	edited.Data[corev1.DockerConfigJsonKey] = []byte(`{"auths":{"acme.jfrog.io":{"auth":"aGFuZDplZGl0ZWQ="}}}`)
	h := newRefresherHarness(t, true, namespaceWith(optedInLabels), edited)
	h.tokens.cred = cred

	h.reconcile(t)

	for _, host := range instance().RegistryHosts {
		if _, tok, err := ParseDockerConfigJSON(h.secret(t).Data[corev1.DockerConfigJsonKey], host); err != nil || tok.Reveal() != rawToken {
			t.Errorf("host %s not restored (err %v)", host, err)
		}
	}
	if e := h.event(); !strings.HasPrefix(e, "Normal "+ReasonRestored) {
		t.Errorf("event = %q, want %s", e, ReasonRestored)
	}
}

// TestRefresherProvisionsAnOptedInNamespace: with provisionOnOptIn (the
// default) a namespace that opts in is mapped to its instances' Secrets,
// and a missing one is written at once: its first pod then costs nothing.
func TestRefresherProvisionsAnOptedInNamespace(t *testing.T) {
	h := newRefresherHarness(t, true, namespaceWith(optedInLabels))
	h.tokens.cred = credAt(t0, rawToken)

	reqs := h.r.secretsOf(context.Background(), namespaceWith(optedInLabels))
	if len(reqs) != 1 || reqs[0].NamespacedName != secretKey {
		t.Fatalf("an opted-in namespace maps to %v, want its instance's Secret %s", reqs, secretKey)
	}
	if reqs := h.r.secretsOf(context.Background(), namespaceWith(map[string]string{"team": "a"})); len(reqs) != 0 {
		t.Errorf("a namespace that did not opt in maps to %v", reqs)
	}
	h.reconcile(t)

	if h.calls["create"] != 1 {
		t.Fatalf("calls = %v, want the Secret provisioned", h.calls)
	}
	if _, tok, err := ParseDockerConfigJSON(h.secret(t).Data[corev1.DockerConfigJsonKey], instance().RegistryHosts[0]); err != nil || tok.Reveal() != rawToken {
		t.Errorf("provisioned Secret does not carry the token (err %v)", err)
	}
	if e := h.event(); !strings.HasPrefix(e, "Normal "+ReasonProvisioned) || !strings.Contains(e, "provisioned pull secret artifactory-pull") {
		t.Errorf("event = %q, want %s", e, ReasonProvisioned)
	}
}

// TestRefresherProvisioningFailureRecordsNoEvent: while no token can be
// had, provisioning retries quietly (log, metric): a Secret that never
// existed is nobody's problem until a pod's admission says so.
func TestRefresherProvisioningFailureRecordsNoEvent(t *testing.T) {
	h := newRefresherHarness(t, true, namespaceWith(optedInLabels))
	h.tokens.err = errors.New("HTTP 503 Artifactory is down")
	h.retry.next = t0.Add(time.Minute)

	res := h.reconcile(t)
	if h.calls["create"] != 0 {
		t.Fatalf("calls = %v without a token", h.calls)
	}
	if e := h.event(); e != "" {
		t.Errorf("event %q for a Secret that never existed", e)
	}
	if res.RequeueAfter <= 0 {
		t.Errorf("provisioning is not retried (%+v)", res)
	}
}

func TestRefresherRecreatesOnlySecretsItHasSeen(t *testing.T) {
	h := refresherOn(t, newHarness(t, interceptor.Funcs{}, namespaceWith(optedInLabels)), true,
		func(c *config.Config) { c.ProvisionOnOptIn = new(bool) })
	if reqs := h.r.secretsOf(context.Background(), namespaceWith(optedInLabels)); len(reqs) != 0 {
		t.Errorf("provisionOnOptIn false: an opted-in namespace without Secrets maps to %v", reqs)
	}

	h.reconcile(t)
	if h.calls["create"] != 0 || h.tokens.gets != 0 {
		t.Fatalf("calls = %v, token gets = %d: a Secret never seen must be left to admission", h.calls, h.tokens.gets)
	}

	// The informer reports the managed Secret's deletion.
	gone := managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts)
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	h.r.secretEvents().Delete(context.Background(), event.DeleteEvent{Object: gone}, q)
	if q.Len() != 1 {
		t.Fatalf("delete event enqueued %d requests, want 1", q.Len())
	}
	h.reconcile(t)

	if h.calls["create"] != 1 {
		t.Fatalf("calls = %v, want the deleted Secret recreated", h.calls)
	}
	if e := h.event(); !strings.HasPrefix(e, "Normal "+ReasonRestored) {
		t.Errorf("event = %q, want %s", e, ReasonRestored)
	}
}

func TestRefresherOnOptOut(t *testing.T) {
	for _, cleanup := range []bool{true, false} {
		t.Run(map[bool]string{true: "deletes the managed Secret", false: "keeps it when cleanup is off"}[cleanup], func(t *testing.T) {
			foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "team-registry", Namespace: ns}}
			h := newRefresherHarness(t, cleanup, namespaceWith(map[string]string{"team": "a"}), foreign,
				managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts))
			h.r.rememberDeleted(secretKey)

			h.reconcile(t)

			var list corev1.SecretList
			if err := h.api.List(context.Background(), &list); err != nil {
				t.Fatal(err)
			}
			want := map[bool]int{true: 1, false: 2}[cleanup]
			if len(list.Items) != want {
				t.Errorf("%d Secrets left, want %d", len(list.Items), want)
			}
			for _, s := range list.Items {
				if cleanup && s.Name != "team-registry" {
					t.Errorf("Secret %s left behind", s.Name)
				}
			}
			if h.r.remembered(secretKey) {
				t.Error("the opted-out namespace's Secret is still remembered for restoring")
			}
			if e := h.event(); cleanup != strings.HasPrefix(e, "Normal "+ReasonDeleted) {
				t.Errorf("event = %q", e)
			}
		})
	}
}

func TestRefresherSchedulesFailedMintAfterBackoffAndWarnsWithoutToken(t *testing.T) {
	h := newRefresherHarness(t, true, namespaceWith(optedInLabels),
		managedSecret(t, credAt(t0.Add(-2*time.Hour), "expired-token"), instance().RegistryHosts))
	h.tokens.err = errors.New(mintError)
	h.retry.next = h.now.Add(40 * time.Second)

	res := h.reconcile(t)

	if res.RequeueAfter != 40*time.Second {
		t.Errorf("RequeueAfter = %s, want the backoff's 40s", res.RequeueAfter)
	}
	if h.calls["update"]+h.calls["create"] != 0 {
		t.Errorf("calls = %v, want no write without a token", h.calls)
	}
	e := h.event()
	if !strings.HasPrefix(e, "Warning "+ReasonTokenExchangeFailed) || !strings.Contains(e, "401 no mapping for role") ||
		strings.Contains(e, "expired-token") {
		t.Errorf("event = %q, want a warning with Artifactory's reason and no token", e)
	}
}

func TestRefresherIgnoresTerminatingNamespace(t *testing.T) {
	terminating := namespaceWith(optedInLabels)
	terminating.DeletionTimestamp = &metav1.Time{Time: t0}
	terminating.Finalizers = []string{"kubernetes"}
	h := newRefresherHarness(t, true, terminating)
	h.r.rememberDeleted(secretKey)

	h.reconcile(t)

	if h.apiCalls() != 0 || h.r.remembered(secretKey) {
		t.Errorf("calls = %v, remembered = %v; want nothing done and the Secret forgotten", h.calls, h.r.remembered(secretKey))
	}
}

func TestRefresherMapsNamespaceToCachedAndRememberedSecrets(t *testing.T) {
	other := managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts)
	other.Name = "not-configured"
	h := newRefresherHarness(t, true, namespaceWith(optedInLabels), other,
		managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts))
	remembered := types.NamespacedName{Namespace: ns, Name: "artifactory-pull"}
	h.r.rememberDeleted(types.NamespacedName{Namespace: "elsewhere", Name: "artifactory-pull"})

	reqs := h.r.secretsOf(context.Background(), namespaceWith(nil))

	if len(reqs) != 1 || reqs[0].NamespacedName != remembered {
		t.Errorf("requests = %v, want only %s", reqs, remembered)
	}
}

// A Secret deleted while its namespace was opted in is no longer cached,
// only remembered: a label change on the namespace must still reach it, or
// it would never be restored (or forgotten on opt-out).
func TestRefresherMapsNamespaceToARememberedSecretThatIsGone(t *testing.T) {
	h := newRefresherHarness(t, true, namespaceWith(optedInLabels))
	gone := types.NamespacedName{Namespace: ns, Name: "artifactory-pull"}
	h.r.rememberDeleted(gone)
	h.r.rememberDeleted(types.NamespacedName{Namespace: "elsewhere", Name: "artifactory-pull"})

	reqs := h.r.secretsOf(context.Background(), namespaceWith(nil))

	if len(reqs) != 1 || reqs[0].NamespacedName != gone {
		t.Errorf("requests = %v, want only the remembered %s", reqs, gone)
	}
}

// The operator's early warning: a refresh that fails while the Secret is
// still valid says so, with the expiry and the cause, and no token.
func TestRefresherWarnsWhenAStillValidSecretCouldNotBeRefreshed(t *testing.T) {
	h := newRefresherHarness(t, true, namespaceWith(optedInLabels), managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts))
	h.now = t0.Add(50 * time.Minute) // past the refresh point; the cache keeps the due token
	h.tokens.cred, h.retry.err = credAt(t0, rawToken), errors.New(mintError)

	h.reconcile(t)

	want := fmt.Sprintf("Warning %s could not refresh pull secret artifactory-pull of instance acme, which stays valid until %s: %s",
		ReasonTokenExchangeFailed, formatTime(t0.Add(time.Hour)), mintError)
	if e := h.event(); e != want {
		t.Errorf("event = %q\nwant    %q", e, want)
	}
	if h.calls["update"]+h.calls["create"] != 0 {
		t.Errorf("calls = %v, want no write", h.calls)
	}
}

func TestRefresherDeletesManagedSecretsOfRetiredNames(t *testing.T) {
	retired := managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts)
	retired.Name = "old-pull"
	other := retired.DeepCopy()
	other.Namespace = "elsewhere" // opted in or not: a retired name goes everywhere
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "old-pull", Namespace: "team-b"}, Type: corev1.SecretTypeOpaque}
	h := newHarness(t, interceptor.Funcs{}, namespaceWith(optedInLabels),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b"}},
		retired, other, foreign, managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts))
	rec := events.NewFakeRecorder(10)
	r, err := NewRefresher(RefresherOptions{
		Config: &config.Config{Instances: []config.Instance{instance()}, NamespaceLabel: config.DefaultNamespaceLabel,
			RetiredSecretNames: []string{"old-pull"}},
		Store: h.store, Reader: informerCache{h.api}, Retry: &fakeRetry{}, Recorder: rec,
		Now: func() time.Time { return h.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []types.NamespacedName{{Namespace: ns, Name: "old-pull"}, {Namespace: "elsewhere", Name: "old-pull"},
		{Namespace: "team-b", Name: "old-pull"}} {
		if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: key}); err != nil {
			t.Fatalf("Reconcile %s: %v", key, err)
		}
	}
	var list corev1.SecretList
	if err := h.api.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	left := map[string]bool{}
	for _, s := range list.Items {
		left[s.Namespace+"/"+s.Name] = true
	}
	want := map[string]bool{ns + "/artifactory-pull": true, "team-b/old-pull": true}
	if len(left) != len(want) || !left[ns+"/artifactory-pull"] || !left["team-b/old-pull"] {
		t.Errorf("Secrets left = %v, want %v (the configured one and the unmanaged one)", left, want)
	}
	if e := <-rec.Events; !strings.HasPrefix(e, "Normal "+ReasonDeleted) || !strings.Contains(e, "retiredSecretNames") {
		t.Errorf("event = %q, want %s naming retiredSecretNames", e, ReasonDeleted)
	}
}

// rememberDeleted remembers the instance Secret at key as deleted, as its
// delete event does.
func (r *Refresher) rememberDeleted(key types.NamespacedName) {
	t := newTarget(r.targets.byName[key.Name], credentials.Identity{})
	r.remember(key, &t)
}

// TestRefresherKeepsTheGenericTokenSecret: an instance with
// tokenSecretName gets an Opaque Secret with username, token, url and
// registry keys in every opted-in namespace (provisionOnOptIn or not),
// rewritten only when the token changes and deleted at opt-out.
func TestRefresherKeepsTheGenericTokenSecret(t *testing.T) {
	withToken := func(c *config.Config) {
		c.Instances[0].TokenSecretName = "artifactory-token"
		c.ProvisionOnOptIn = new(bool)
	}
	h := refresherOn(t, newHarness(t, interceptor.Funcs{}, namespaceWith(optedInLabels)), true, withToken)
	h.tokens.cred = credAt(t0, rawToken)
	tokenKey := types.NamespacedName{Namespace: ns, Name: "artifactory-token"}

	reqs := h.r.secretsOf(context.Background(), namespaceWith(optedInLabels))
	if len(reqs) != 1 || reqs[0].NamespacedName != tokenKey {
		t.Fatalf("an opted-in namespace maps to %v, want only the token Secret %s (provisioning is off)", reqs, tokenKey)
	}
	reconcileKey := func() {
		t.Helper()
		if _, err := h.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: tokenKey}); err != nil {
			t.Fatal(err)
		}
	}
	read := func() *corev1.Secret {
		t.Helper()
		var s corev1.Secret
		if err := h.api.Get(context.Background(), tokenKey, &s); err != nil {
			t.Fatalf("reading the token Secret: %v", err)
		}
		return &s
	}
	reconcileKey()
	sec := read()
	want := map[string]string{TokenSecretUsername: user, TokenSecretToken: rawToken, TokenSecretURL: instance().URL,
		TokenSecretRegistry: "acme.jfrog.io", TokenSecretRegistries: "acme.jfrog.io,*.acme.jfrog.io,docker.acme.example:5000"}
	if sec.Type != corev1.SecretTypeOpaque || len(sec.Data) != len(want) {
		t.Fatalf("token Secret type %s with %d keys, want Opaque with %v", sec.Type, len(sec.Data), want)
	}
	for k, v := range want {
		if string(sec.Data[k]) != v {
			t.Errorf("key %s = %q, want %q", k, sec.Data[k], v)
		}
	}
	if sec.Labels[ManagedByLabel] != ManagedByValue || sec.Annotations[AnnotationInstance] != instance().Name {
		t.Errorf("token Secret not labelled and annotated as managed: %v %v", sec.Labels, sec.Annotations)
	}
	if e := h.event(); !strings.Contains(e, "provisioned token secret artifactory-token") {
		t.Errorf("event = %q", e)
	}
	if err := h.api.Get(context.Background(), secretKey, &corev1.Secret{}); err == nil {
		t.Error("the pull Secret was written although provisionOnOptIn is off")
	}

	writes := h.calls["create"] + h.calls["update"]
	reconcileKey()
	if got := h.calls["create"] + h.calls["update"]; got != writes {
		t.Errorf("an unchanged token rewrote the token Secret (%d writes)", got-writes)
	}
	// A hand edit of the token is restored.
	edited := read()
	edited.Data[TokenSecretToken] = []byte("planted")
	if err := h.api.Update(context.Background(), edited); err != nil {
		t.Fatal(err)
	}
	reconcileKey()
	if got := string(read().Data[TokenSecretToken]); got != rawToken {
		t.Errorf("an edited token Secret holds %q, want it restored", got)
	}
	if e := h.event(); !strings.HasPrefix(e, "Normal "+ReasonRestored) {
		t.Errorf("event = %q, want %s", e, ReasonRestored)
	}
	h.tokens.cred = credAt(t0.Add(time.Minute), "rotated-token-0123456789")
	reconcileKey()
	if got := string(read().Data[TokenSecretToken]); got != "rotated-token-0123456789" {
		t.Errorf("after rotation the token Secret holds %q", got)
	}
	if e := h.event(); !strings.HasPrefix(e, "Normal "+ReasonRefreshed) || !strings.Contains(e, "refreshed token secret") {
		t.Errorf("rotation event = %q, want %s", e, ReasonRefreshed)
	}

	if err := h.api.Update(context.Background(), namespaceWith(nil)); err != nil {
		t.Fatal(err)
	}
	reconcileKey()
	if err := h.api.Get(context.Background(), tokenKey, &corev1.Secret{}); err == nil {
		t.Error("the token Secret survived the opt-out")
	}
}

// TestRefresherWritesNothingInAnExcludedNamespace: a namespace the webhook
// configuration never sends (config excludeNamespaces) gets no provisioned
// pull Secret and no token Secret, opt-in label or not.
func TestRefresherWritesNothingInAnExcludedNamespace(t *testing.T) {
	h := refresherOn(t, newHarness(t, interceptor.Funcs{}, namespaceWith(optedInLabels)), true, func(c *config.Config) {
		c.Instances[0].TokenSecretName = "artifactory-token"
		c.ExcludeNamespaces = []string{ns}
	})
	if reqs := h.r.secretsOf(context.Background(), namespaceWith(optedInLabels)); len(reqs) != 0 {
		t.Errorf("an excluded namespace maps to %v", reqs)
	}
	h.reconcile(t)
	if _, err := h.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "artifactory-token"}}); err != nil {
		t.Fatal(err)
	}
	if h.calls["create"] != 0 {
		t.Errorf("calls %v in an excluded namespace", h.calls)
	}
}
