package pullsecret

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

func TestHeldExpiriesIsTheEarliestTokenInAnOptedInNamespace(t *testing.T) {
	key, value, _ := config.SplitLabel(config.DefaultNamespaceLabel)
	optIn := map[string]string{key: value}
	namespaceNamed := func(name string, labels map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	secretIn := func(namespace string, cred credentials.Credential, edit func(*corev1.Secret)) client.Object {
		s := managedSecret(t, cred, instance().RegistryHosts)
		s.Namespace = namespace
		if edit != nil {
			edit(s)
		}
		return s
	}
	issued := func(ago time.Duration) credentials.Credential { return credAt(t0.Add(-ago), rawToken) } // 1h lifetime
	h := newHarness(t, interceptor.Funcs{},
		namespaceNamed("fresh", optIn), namespaceNamed("lagging", optIn), namespaceNamed("gone", nil),
		namespaceNamed("theirs", optIn),
		secretIn("fresh", issued(0), nil),
		secretIn("lagging", issued(50*time.Minute), nil), // its refresh keeps failing: 10 min left
		secretIn("gone", issued(59*time.Minute), nil),    // opted out, cleanup off: not what pods pull with
		secretIn("theirs", issued(59*time.Minute), func(s *corev1.Secret) {
			s.Annotations[AnnotationInstallation] = "other-release" // another installation's
		}),
	)
	cfg := &config.Config{NamespaceLabel: config.DefaultNamespaceLabel, Instances: []config.Instance{instance()}}

	got := h.store.HeldExpiries(context.Background(), cfg)
	want := t0.Add(10 * time.Minute)
	if len(got) != 1 || !got["acme"].Equal(want) {
		t.Fatalf("HeldExpiries = %v, want acme: %s (the lagging namespace's token)", got, want)
	}

	// Without a managed Secret in an opted-in namespace there is no sample.
	cfg.Instances = []config.Instance{{Name: "other", SecretName: "other-pull", RegistryHosts: []string{"x.example"}}}
	if got := h.store.HeldExpiries(context.Background(), cfg); len(got) != 0 {
		t.Errorf("HeldExpiries for an instance without Secrets = %v, want none", got)
	}
}

// A namespace that cannot be read counts as opted in: its Secret may be
// the one lagging, and leaving it out would make the gauge read high.
func TestHeldExpiriesCountsANamespaceItCannotRead(t *testing.T) {
	lagging := managedSecret(t, credAt(t0.Add(-50*time.Minute), rawToken), instance().RegistryHosts)
	lagging.Namespace = "unreadable"
	api := fake.NewClientBuilder().WithObjects(lagging).Build() // and no Namespace object at all
	store := NewStore(Options{Reader: unreadableNamespaces{managedOnly{api}}, Writer: api, Tokens: &fakeTokens{}, Fingerprints: testPrints,
		Now: func() time.Time { return t0 }})
	cfg := &config.Config{NamespaceLabel: config.DefaultNamespaceLabel, Instances: []config.Instance{instance()}}
	if got := store.HeldExpiries(context.Background(), cfg); !got["acme"].Equal(t0.Add(10 * time.Minute)) {
		t.Errorf("HeldExpiries = %v, want acme: %s (the Secret in the namespace that could not be read)", got, t0.Add(10*time.Minute))
	}
	// A namespace that does not exist does not count.
	store = NewStore(Options{Reader: managedOnly{api}, Writer: api, Tokens: &fakeTokens{}, Fingerprints: testPrints,
		Now: func() time.Time { return t0 }})
	if got := store.HeldExpiries(context.Background(), cfg); len(got) != 0 {
		t.Errorf("HeldExpiries with the namespace gone = %v, want none", got)
	}
}

// unreadableNamespaces fails every read of a Namespace, as an API server
// under load does.
type unreadableNamespaces struct{ client.Reader }

func (r unreadableNamespaces) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if key.Namespace == "" {
		return apierrors.NewTooManyRequests("slow down", 1)
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

// A rotation rewrites the Secrets of opted-in namespaces only: the count
// the start check and the gauges use leaves out those of namespaces that
// opted out (cleanup off) or are being deleted, and other installations'.
func TestManagedSecretsCountsWhatARotationWrites(t *testing.T) {
	key, value, _ := config.SplitLabel(config.DefaultNamespaceLabel)
	optIn := map[string]string{key: value}
	deleting := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "deleting", Labels: optIn,
		DeletionTimestamp: &metav1.Time{Time: t0}, Finalizers: []string{"kubernetes"}}}
	secretIn := func(namespace string, edit func(*corev1.Secret)) client.Object {
		s := managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts)
		s.Namespace = namespace
		if edit != nil {
			edit(s)
		}
		return s
	}
	h := newHarness(t, interceptor.Funcs{},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: optIn}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "b", Labels: optIn}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gone"}}, deleting,
		secretIn("a", nil), secretIn("b", nil), secretIn("gone", nil), secretIn("deleting", nil),
		secretIn("b", func(s *corev1.Secret) {
			s.Name = "theirs"
			s.Annotations[AnnotationInstallation] = "other-release"
		}),
	)
	cfg := &config.Config{NamespaceLabel: config.DefaultNamespaceLabel, Instances: []config.Instance{instance()}}
	n, err := h.store.ManagedSecrets(context.Background(), cfg)
	if err != nil || n != 2 {
		t.Errorf("ManagedSecrets = %d, %v; want 2 (namespaces a and b)", n, err)
	}
}

// The caches the Store reads through merge one list per Secret name and
// one of per-ServiceAccount Secrets: a Secret in both counts once.
func TestSurveyCountsASecretListedTwiceOnce(t *testing.T) {
	key, value, _ := config.SplitLabel(config.DefaultNamespaceLabel)
	sec := managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts)
	sec.Namespace = ns
	sec.Labels = map[string]string{ManagedByLabel: ManagedByValue, LabelPerServiceAccount: "true"}
	api := fake.NewClientBuilder().WithObjects(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{key: value}}}, sec).Build()
	store := NewStore(Options{Reader: listedTwice{managedOnly{api}}, Writer: api, Tokens: &fakeTokens{}, Fingerprints: testPrints,
		Now: func() time.Time { return t0 }})
	cfg := &config.Config{NamespaceLabel: config.DefaultNamespaceLabel, Instances: []config.Instance{instance()}}
	if sv, err := store.Survey(context.Background(), cfg); err != nil || sv.Managed != 1 {
		t.Errorf("Survey = %+v, %v; want 1 managed Secret", sv, err)
	}
}

// listedTwice lists every Secret twice, as two caches holding it would.
type listedTwice struct{ client.Reader }

func (r listedTwice) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := r.Reader.List(ctx, list, opts...); err != nil {
		return err
	}
	if l, ok := list.(*corev1.SecretList); ok {
		l.Items = append(l.Items, l.Items...)
	}
	return nil
}
