package pullsecret

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/internal/leaktest"
)

const (
	ns        = "team-a"
	rawToken  = "tok-SECRET-value-123"
	user      = "svc-puller"
	mintError = "exchange with https://acme.jfrog.io failed: 401 no mapping for role"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// testPrints are the token fingerprints the test Stores run with.
var testPrints = map[string]string{"acme": "fp-acme"}

func instance() config.Instance {
	return config.Instance{
		Name:          "acme",
		URL:           "https://acme.jfrog.io",
		RegistryHosts: []string{"acme.jfrog.io", "*.acme.jfrog.io", "docker.acme.example:5000"},
		SecretName:    "artifactory-pull",
	}
}

func credAt(issued time.Time, token string) credentials.Credential {
	return credentials.Credential{Username: user, Token: credentials.NewToken(token), IssuedAt: issued, Expiry: issued.Add(time.Hour)}
}

// fakeTokens is a TokenSource counting Get calls and recording Seeds.
type fakeTokens struct {
	mu     sync.Mutex
	keys   []credentials.Key // asked for, in order
	ids    []credentials.Identity
	cred   credentials.Credential
	err    error
	gets   int
	seeded map[credentials.Key]credentials.Credential
}

func (f *fakeTokens) Get(context.Context, credentials.Key) (credentials.Credential, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets++
	return f.cred, f.err
}

func (f *fakeTokens) GetAs(ctx context.Context, id credentials.Identity, key credentials.Key) (credentials.Credential, error) {
	f.mu.Lock()
	f.keys = append(f.keys, key)
	f.ids = append(f.ids, id)
	f.mu.Unlock()
	return f.Get(ctx, key)
}

func (f *fakeTokens) Seed(key credentials.Key, cred credentials.Credential) bool {
	if f.seeded == nil {
		f.seeded = map[credentials.Key]credentials.Credential{}
	}
	f.seeded[key] = cred
	return true
}

// managedOnly is the informer cache as the webhook runs it: it sees only
// Secrets with the managed-by label, reduced by SecretTransform.
type managedOnly struct{ client.Reader }

func (r managedOnly) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if err := r.Reader.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	sec, ok := obj.(*corev1.Secret)
	if !ok {
		return nil // other kinds come from the manager's cache
	}
	if sec.Labels[ManagedByLabel] != ManagedByValue {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
	}
	reduced, _ := SecretTransform()(sec)
	*sec = *reduced.(*corev1.Secret)
	return nil
}

// emptyCache is a cache that has not yet seen any Secret (a lagging informer).
type emptyCache struct{ client.Reader }

func (emptyCache) Get(_ context.Context, key client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
	return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
}

// harness wires a Store to a fake API server; calls counts every request
// made through the Writer (the API server), by verb.
type harness struct {
	store  *Store
	api    client.WithWatch
	tokens *fakeTokens
	now    time.Time
	mu     sync.Mutex // guards calls
	calls  map[string]int
}

func (h *harness) count(verb string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls[verb]++
}

func newHarness(t *testing.T, funcs interceptor.Funcs, objs ...client.Object) *harness {
	t.Helper()
	h := &harness{
		api:    fake.NewClientBuilder().WithObjects(objs...).Build(),
		tokens: &fakeTokens{cred: credAt(t0, rawToken)},
		now:    t0,
		calls:  map[string]int{},
	}
	writer := interceptor.NewClient(h.api, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			h.count("get")
			if funcs.Get != nil {
				return funcs.Get(ctx, c, key, obj, opts...)
			}
			return c.Get(ctx, key, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			h.count("create")
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			h.count("update")
			if funcs.Update != nil {
				return funcs.Update(ctx, c, obj, opts...)
			}
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			h.count("patch")
			return c.Patch(ctx, obj, patch, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			h.count("delete")
			return c.Delete(ctx, obj, opts...)
		},
	})
	h.store = NewStore(Options{
		Reader:       managedOnly{h.api},
		Writer:       writer,
		Tokens:       h.tokens,
		Fingerprints: testPrints,
		Now:          func() time.Time { return h.now },
	})
	return h
}

func (h *harness) apiCalls() int {
	n := 0
	for _, c := range h.calls {
		n += c
	}
	return n
}

func (h *harness) secret(t *testing.T) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := h.api.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: instance().SecretName}, &s); err != nil {
		t.Fatalf("reading secret: %v", err)
	}
	return &s
}

// managedSecret is a Secret as the store writes it for cred and hosts.
func managedSecret(t *testing.T, cred credentials.Credential, hosts []string) *corev1.Secret {
	t.Helper()
	s, err := NewStore(Options{Fingerprints: testPrints}).build(ns, newTarget(config.Instance{Name: "acme", SecretName: "artifactory-pull", RegistryHosts: hosts}, credentials.Identity{}), cred)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEnsureCreatesSecretForEveryHostWhenMissing(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{})
	inst := instance()

	res, err := h.store.Ensure(context.Background(), ns, inst, false)
	if err != nil {
		t.Fatal(err)
	}
	if res != (Result{SecretName: "artifactory-pull", Action: ActionCreated}) {
		t.Fatalf("result = %+v", res)
	}
	s := h.secret(t)
	if s.Type != corev1.SecretTypeDockerConfigJson {
		t.Errorf("type = %q", s.Type)
	}
	if s.Labels[ManagedByLabel] != ManagedByValue {
		t.Errorf("labels = %v", s.Labels)
	}
	wantAnn := map[string]string{
		AnnotationInstallation: config.DefaultInstallation,
		AnnotationInstance:     "acme",
		AnnotationIdentity:     credentials.WebhookIdentity,
		AnnotationFingerprint:  "fp-acme",
		AnnotationIssuedAt:     "2026-05-01T12:00:00Z",
		AnnotationExpiresAt:    "2026-05-01T13:00:00Z",
		AnnotationHosts:        "acme.jfrog.io,*.acme.jfrog.io,docker.acme.example:5000",
	}
	if !reflect.DeepEqual(s.Annotations, wantAnn) {
		t.Errorf("annotations = %v, want %v", s.Annotations, wantAnn)
	}
	var doc struct {
		Auths map[string]struct{ Username, Password, Auth string } `json:"auths"`
	}
	if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Auths) != len(inst.RegistryHosts) {
		t.Errorf("auths has %d hosts, want %d", len(doc.Auths), len(inst.RegistryHosts))
	}
	for _, host := range inst.RegistryHosts {
		a, ok := doc.Auths[host]
		if !ok {
			t.Errorf("no auth for host %q", host)
			continue
		}
		dec, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil || string(dec) != user+":"+rawToken || a.Username != user || a.Password != rawToken {
			t.Errorf("host %q: entry does not carry %s:<token>", host, user)
		}
	}
	if h.calls["create"] != 1 || h.tokens.gets != 1 {
		t.Errorf("creates = %d, token gets = %d; want 1, 1", h.calls["create"], h.tokens.gets)
	}
}

func TestEnsureReusesFreshSecretWithoutAPIOrTokenCalls(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts))
	h.now = t0.Add(44 * time.Minute) // 16 of 60 minutes left: above the 25% threshold

	res, err := h.store.Ensure(context.Background(), ns, instance(), false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != ActionReused || res.SecretName != "artifactory-pull" {
		t.Fatalf("result = %+v", res)
	}
	if h.tokens.gets != 0 || h.apiCalls() != 0 {
		t.Errorf("token gets = %d, API calls = %v; want none", h.tokens.gets, h.calls)
	}
}

func TestEnsureRewritesSecret(t *testing.T) {
	otherHosts := []string{"acme.jfrog.io"}
	tests := []struct {
		name     string
		existing *corev1.Secret
		now      time.Time
	}{
		{"near expiry", managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts), t0.Add(46 * time.Minute)},
		{"hosts changed", managedSecret(t, credAt(t0, "old-token"), otherHosts), t0.Add(time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, interceptor.Funcs{}, tt.existing)
			h.now = tt.now
			h.tokens.cred = credAt(tt.now, rawToken)

			res, err := h.store.Ensure(context.Background(), ns, instance(), false)
			if err != nil {
				t.Fatal(err)
			}
			if res.Action != ActionUpdated {
				t.Fatalf("action = %q, want %q", res.Action, ActionUpdated)
			}
			s := h.secret(t)
			for _, host := range instance().RegistryHosts {
				if _, tok, err := ParseDockerConfigJSON(s.Data[corev1.DockerConfigJsonKey], host); err != nil || tok.Reveal() != rawToken {
					t.Errorf("host %q does not carry the new token (err %v)", host, err)
				}
			}
			if got := s.Annotations[AnnotationExpiresAt]; got != formatTime(tt.now.Add(time.Hour)) {
				t.Errorf("expires-at = %s", got)
			}
			if h.calls["update"] != 1 || h.calls["create"] != 0 {
				t.Errorf("calls = %v, want one update", h.calls)
			}
		})
	}
}

func TestEnsureWhenMintFails(t *testing.T) {
	tests := []struct {
		name        string
		now         time.Time
		wantAction  Action
		wantErr     bool
		wantWarning bool
	}{
		{"valid secret falls back with warning", t0.Add(50 * time.Minute), ActionFallback, false, true},
		{"expired secret is an error", t0.Add(61 * time.Minute), "", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			existing := managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts)
			h := newHarness(t, interceptor.Funcs{}, existing)
			h.now = tt.now
			h.tokens.err = errors.New(mintError)

			res, err := h.store.Ensure(context.Background(), ns, instance(), false)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && (!strings.Contains(err.Error(), ns) || !strings.Contains(err.Error(), `"acme"`)) {
				t.Errorf("error %q does not name namespace and instance", err)
			}
			if res.Action != tt.wantAction {
				t.Errorf("action = %q, want %q", res.Action, tt.wantAction)
			}
			if tt.wantWarning != strings.Contains(res.Warning, mintError) {
				t.Errorf("warning = %q", res.Warning)
			}
			if h.calls["create"]+h.calls["update"] != 0 {
				t.Errorf("writes = %v, want none", h.calls)
			}
		})
	}
}

func TestEnsureMintFailureWithoutSecretIsError(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{})
	h.tokens.err = errors.New(mintError)
	if _, err := h.store.Ensure(context.Background(), ns, instance(), false); err == nil {
		t.Fatal("want error")
	}
}

func TestEnsureLeavesForeignSecretUntouched(t *testing.T) {
	foreign := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "artifactory-pull", Namespace: ns, Labels: map[string]string{"team": "a"}},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"acme.jfrog.io":{"auth":"aGFuZDptYWRl"}}}`)},
	}
	h := newHarness(t, interceptor.Funcs{}, foreign)
	before := h.secret(t)

	_, err := h.store.Ensure(context.Background(), ns, instance(), false)
	var conflict *InstallationConflictError
	if !errors.Is(err, ErrForeignSecret) || errors.As(err, &conflict) {
		t.Fatalf("err = %v, want ErrForeignSecret, not an installation conflict", err)
	}
	if after := h.secret(t); !reflect.DeepEqual(before, after) {
		t.Errorf("foreign secret changed:\nbefore %v\nafter  %v", before, after)
	}
	if h.calls["update"]+h.calls["patch"]+h.calls["delete"] != 0 {
		t.Errorf("calls = %v, want no modification", h.calls)
	}
}

func TestEnsureResolvesAlreadyExistsRace(t *testing.T) {
	tests := []struct {
		name        string
		existing    *corev1.Secret
		wantAction  Action
		wantUpdates int
	}{
		{"fresh secret from another writer is reused", managedSecret(t, credAt(t0, "other-token"), instance().RegistryHosts), ActionReused, 0},
		{"stale secret is updated", managedSecret(t, credAt(t0.Add(-58*time.Minute), "old-token"), instance().RegistryHosts), ActionUpdated, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, interceptor.Funcs{}, tt.existing)
			h.store.reader = emptyCache{} // the informer has not seen the Secret yet

			res, err := h.store.Ensure(context.Background(), ns, instance(), false)
			if err != nil {
				t.Fatal(err)
			}
			if res.Action != tt.wantAction {
				t.Errorf("action = %q, want %q", res.Action, tt.wantAction)
			}
			if h.calls["create"] != 1 || h.calls["update"] != tt.wantUpdates {
				t.Errorf("calls = %v", h.calls)
			}
		})
	}
}

func TestEnsureRetriesUpdateOnConflict(t *testing.T) {
	conflicts := 1
	h := newHarness(t, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if conflicts > 0 {
				conflicts--
				return apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, obj.GetName(), errors.New("changed"))
			}
			return c.Update(ctx, obj, opts...)
		},
	}, managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts))
	h.now = t0.Add(50 * time.Minute)
	h.tokens.cred = credAt(h.now, rawToken)

	res, err := h.store.Ensure(context.Background(), ns, instance(), false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != ActionUpdated || h.calls["update"] != 2 || h.calls["get"] != 2 {
		t.Errorf("action = %q, calls = %v; want updated on the second attempt, each reading the server's object", res.Action, h.calls)
	}
	if _, tok, _ := ParseDockerConfigJSON(h.secret(t).Data[corev1.DockerConfigJsonKey], "acme.jfrog.io"); tok.Reveal() != rawToken {
		t.Error("secret does not carry the new token")
	}
}

func TestEnsureDryRunWritesNothing(t *testing.T) {
	tests := []struct {
		name     string
		existing []client.Object
	}{
		{"missing", nil},
		{"near expiry", []client.Object{managedSecret(t, credAt(t0.Add(-50*time.Minute), "old"), instance().RegistryHosts)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, interceptor.Funcs{}, tt.existing...)
			res, err := h.store.Ensure(context.Background(), ns, instance(), true)
			if err != nil {
				t.Fatal(err)
			}
			if res != (Result{SecretName: "artifactory-pull", Action: ActionDryRun}) {
				t.Errorf("result = %+v", res)
			}
			if h.apiCalls() != 0 || h.tokens.gets != 0 {
				t.Errorf("calls = %v, token gets = %d; want none", h.calls, h.tokens.gets)
			}
		})
	}
}

func TestEnsureDoesNotRewriteSecretWithSameToken(t *testing.T) {
	cred := credAt(t0, rawToken)
	h := newHarness(t, interceptor.Funcs{}, managedSecret(t, cred, instance().RegistryHosts))
	h.now = t0.Add(50 * time.Minute) // due for refresh, but the token source has nothing newer
	h.tokens.cred = cred

	res, err := h.store.Ensure(context.Background(), ns, instance(), false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != ActionReused || h.apiCalls() != 0 {
		t.Errorf("action = %q, calls = %v; want reused without writes", res.Action, h.calls)
	}
}

func TestDockerConfigJSONRoundTrip(t *testing.T) {
	hosts := []string{"acme.jfrog.io", "*.acme.jfrog.io"}
	b, err := DockerConfigJSON(hosts, user, credentials.NewToken(rawToken))
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range hosts {
		u, tok, err := ParseDockerConfigJSON(b, host)
		if err != nil || u != user || tok.Reveal() != rawToken {
			t.Errorf("host %q: got %q, err %v", host, u, err)
		}
	}
	if _, _, err := ParseDockerConfigJSON(b, "other.example"); err == nil {
		t.Error("want error for a host without entry")
	}
}

func TestParseDockerConfigJSONReadsAuthOnlyEntry(t *testing.T) {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + rawToken))
	u, tok, err := ParseDockerConfigJSON([]byte(`{"auths":{"h.example":{"auth":"`+auth+`"}}}`), "h.example")
	if err != nil || u != user || tok.Reveal() != rawToken {
		t.Errorf("got %q, err %v", u, err)
	}
}

func TestParseErrorsDoNotQuoteToken(t *testing.T) {
	for _, doc := range []string{`{"auths":{"h":{"password":` + rawToken + `}}}`, `{"auths":{"h":{"auth":"` + rawToken + `!"}}}`} {
		_, _, err := ParseDockerConfigJSON([]byte(doc), "h")
		if err == nil || strings.Contains(err.Error(), rawToken) {
			t.Errorf("err = %v", err)
		}
	}
}

// A Result (and the warning it carries) is what callers log and show: it
// never holds the token in any form. A Secret printed with fmt holds it as
// a byte list, which is why no path logs a Secret (loghygiene_test.go); the
// check below must see that, or it could not see a leak in a Result either.
func TestResultNeverPrintsToken(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{})
	res, err := h.store.Ensure(context.Background(), ns, instance(), false)
	if err != nil {
		t.Fatal(err)
	}
	if f := leaktest.Find(fmt.Sprintf("%v", *h.secret(t)), rawToken); len(f) == 0 {
		t.Fatal("precondition: the token was not found in a printed Secret, where it is")
	}
	js, _ := json.Marshal(res)
	for _, out := range []string{fmt.Sprintf("%v", res), fmt.Sprintf("%+v", res), fmt.Sprintf("%#v", res), string(js)} {
		for _, f := range leaktest.Find(out, rawToken) {
			t.Errorf("a printed Result holds the token: %s", f)
		}
	}
}

func TestEnsureReplacesManagedSecretOfWrongType(t *testing.T) {
	// Labelled as ours but Opaque (by hand, or by an old bug): kubelet
	// ignores it as a pull Secret, and its type cannot be updated.
	wrong := managedSecret(t, credAt(t0, "old-token"), instance().RegistryHosts)
	wrong.Type = corev1.SecretTypeOpaque
	h := newHarness(t, interceptor.Funcs{}, wrong)
	h.now = t0.Add(time.Minute)
	h.tokens.cred = credAt(h.now, rawToken)

	res, err := h.store.Ensure(context.Background(), ns, instance(), false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != ActionCreated {
		t.Errorf("action = %q, want %q", res.Action, ActionCreated)
	}
	s := h.secret(t)
	if s.Type != corev1.SecretTypeDockerConfigJson {
		t.Fatalf("type = %q, want %q", s.Type, corev1.SecretTypeDockerConfigJson)
	}
	if _, tok, err := ParseDockerConfigJSON(s.Data[corev1.DockerConfigJsonKey], "acme.jfrog.io"); err != nil || tok.Reveal() != rawToken {
		t.Errorf("recreated Secret does not carry the new token (err %v)", err)
	}
	if h.calls["delete"] != 1 || h.calls["update"] != 0 {
		t.Errorf("calls = %v, want one delete and no update", h.calls)
	}
}

func TestEnsureLeavesForeignSecretOfWrongTypeAlone(t *testing.T) {
	foreign := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "artifactory-pull", Namespace: ns},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"k": []byte("v")},
	}
	h := newHarness(t, interceptor.Funcs{}, foreign)
	h.store.reader = emptyCache{}
	if _, err := h.store.Ensure(context.Background(), ns, instance(), false); !errors.Is(err, ErrForeignSecret) {
		t.Fatalf("err = %v, want ErrForeignSecret", err)
	}
	if s := h.secret(t); s.Type != corev1.SecretTypeOpaque || h.calls["delete"] != 0 {
		t.Errorf("foreign Secret touched: type %q, calls %v", s.Type, h.calls)
	}
}
