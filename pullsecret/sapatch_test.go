package pullsecret

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
)

type patcherHarness struct {
	api    client.Client
	p      *SAPatcher
	events *events.FakeRecorder
}

func newPatcherHarness(t *testing.T, mode config.PatchServiceAccounts, objs ...client.Object) *patcherHarness {
	t.Helper()
	h := &patcherHarness{api: fake.NewClientBuilder().WithObjects(objs...).Build(), events: events.NewFakeRecorder(20)}
	perSA := instance()
	perSA.Name, perSA.SecretName, perSA.Identity = "teams", "teams-pull", config.IdentityServiceAccount
	p, err := NewSAPatcher(SAPatcherOptions{
		Config: &config.Config{Instances: []config.Instance{instance(), perSA}, NamespaceLabel: config.DefaultNamespaceLabel,
			PatchServiceAccounts: mode, RetiredSecretNames: []string{"old-pull"}},
		Reader: informerCache{h.api}, ServiceAccounts: h.api, Client: h.api, Recorder: h.events,
	})
	if err != nil || p == nil {
		t.Fatalf("NewSAPatcher: %v, %v", p, err)
	}
	h.p = p
	return h
}

func (h *patcherHarness) reconcile(t *testing.T) {
	t.Helper()
	if _, err := h.p.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Name: ns}}); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
}

func (h *patcherHarness) sa(t *testing.T, name string) *corev1.ServiceAccount {
	t.Helper()
	var sa corev1.ServiceAccount
	if err := h.api.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &sa); err != nil {
		t.Fatal(err)
	}
	return &sa
}

func names(sa *corev1.ServiceAccount) []string {
	var out []string
	for _, r := range sa.ImagePullSecrets {
		out = append(out, r.Name)
	}
	return out
}

func serviceAccount(name string, pullSecrets ...string) *corev1.ServiceAccount {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, n := range pullSecrets {
		sa.ImagePullSecrets = append(sa.ImagePullSecrets, corev1.LocalObjectReference{Name: n})
	}
	return sa
}

func (h *patcherHarness) setLabels(t *testing.T, labels map[string]string) {
	t.Helper()
	var n corev1.Namespace
	if err := h.api.Get(context.Background(), client.ObjectKey{Name: ns}, &n); err != nil {
		t.Fatal(err)
	}
	n.Labels = labels
	if err := h.api.Update(context.Background(), &n); err != nil {
		t.Fatal(err)
	}
}

func drain(r *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-r.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// TestSAPatcherAddsAndRemovesOnlyItsOwnEntries: the default ServiceAccount
// gets the namespace's pull Secret (of the identity webhook instance, and
// only once it exists) beside the entries others gave it, and at opt-out
// loses only what the webhook added.
func TestSAPatcherAddsAndRemovesOnlyItsOwnEntries(t *testing.T) {
	h := newPatcherHarness(t, config.PatchDefault, namespaceWith(optedInLabels), serviceAccount("default", "team-registry"),
		serviceAccount("api"))

	h.reconcile(t)
	if got := names(h.sa(t, "default")); !slices.Equal(got, []string{"team-registry"}) {
		t.Fatalf("without the Secret: imagePullSecrets %v", got)
	}
	if err := h.api.Create(context.Background(), managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts)); err != nil {
		t.Fatal(err)
	}
	h.reconcile(t)
	sa := h.sa(t, "default")
	if got := names(sa); !slices.Equal(got, []string{"team-registry", "artifactory-pull"}) || sa.Annotations[AnnotationPatchedPullSecrets] != "artifactory-pull" {
		t.Fatalf("imagePullSecrets %v, annotation %q", got, sa.Annotations[AnnotationPatchedPullSecrets])
	}
	if got := names(h.sa(t, "api")); len(got) != 0 {
		t.Errorf("patchServiceAccounts default patched ServiceAccount api: %v", got)
	}
	if ev := drain(h.events); len(ev) != 1 || !strings.HasPrefix(ev[0], "Normal "+ReasonServiceAccountPatched) {
		t.Errorf("events %q", ev)
	}
	rv := sa.ResourceVersion
	h.reconcile(t)
	if h.sa(t, "default").ResourceVersion != rv {
		t.Error("an unchanged ServiceAccount was written again")
	}

	h.setLabels(t, nil)
	h.reconcile(t)
	sa = h.sa(t, "default")
	if got := names(sa); !slices.Equal(got, []string{"team-registry"}) || sa.Annotations[AnnotationPatchedPullSecrets] != "" {
		t.Errorf("after opt-out: imagePullSecrets %v, annotations %v", got, sa.Annotations)
	}
	if ev := drain(h.events); len(ev) != 1 || !strings.HasPrefix(ev[0], "Normal "+ReasonServiceAccountUnpatched) {
		t.Errorf("events %q", ev)
	}
}

// TestSAPatcherKeepsAnEntryItDidNotAdd: a ServiceAccount that already names
// the pull Secret (its owner put it there) keeps it after opt-out.
func TestSAPatcherKeepsAnEntryItDidNotAdd(t *testing.T) {
	h := newPatcherHarness(t, config.PatchDefault, namespaceWith(optedInLabels), serviceAccount("default", "artifactory-pull"),
		managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts))
	h.reconcile(t)
	h.setLabels(t, nil)
	h.reconcile(t)
	if got := names(h.sa(t, "default")); !slices.Equal(got, []string{"artifactory-pull"}) {
		t.Errorf("imagePullSecrets %v: the owner's own entry was removed", got)
	}
}

// TestSAPatcherLeavesADeclarativelyAppliedListAlone: when a GitOps tool
// applies the ServiceAccount's imagePullSecrets (an atomic list: its
// manager owns all of it), the webhook does not write it — each sync would
// revert it — and says what to add to the manifest.
func TestSAPatcherLeavesADeclarativelyAppliedListAlone(t *testing.T) {
	applied := serviceAccount("default", "team-registry")
	applied.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "argocd-controller", Operation: metav1.ManagedFieldsOperationApply,
		APIVersion: "v1", FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:imagePullSecrets":{}}`)}}}
	kubectl := serviceAccount("builder", "team-registry")
	kubectl.Annotations = map[string]string{lastAppliedAnnotation: `{"apiVersion":"v1","kind":"ServiceAccount","imagePullSecrets":[{"name":"team-registry"}]}`}
	if got := declarativeOwner(applied); got != "field manager argocd-controller" {
		t.Errorf("declarativeOwner of a server-side applied list = %q", got)
	}
	mine := applied.DeepCopy()
	mine.ManagedFields[0].Manager, mine.ManagedFields[0].Operation = ServiceAccountFieldManager, metav1.ManagedFieldsOperationUpdate
	if got := declarativeOwner(mine); got != "" {
		t.Errorf("declarativeOwner of the webhook's own update = %q", got)
	}
	// (The fake API server keeps no managedFields: the Apply owner is shown
	// end to end in e2e; here kubectl's client-side apply.)
	h := newPatcherHarness(t, config.PatchAll, namespaceWith(optedInLabels), kubectl, serviceAccount("plain"),
		managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts))

	h.reconcile(t)
	for _, name := range []string{"builder"} {
		if got := names(h.sa(t, name)); !slices.Equal(got, []string{"team-registry"}) {
			t.Errorf("ServiceAccount %s: imagePullSecrets %v, want its manifest's", name, got)
		}
	}
	if got := names(h.sa(t, "plain")); !slices.Equal(got, []string{"artifactory-pull"}) {
		t.Errorf("patchServiceAccounts all: ServiceAccount plain has %v", got)
	}
	ev := strings.Join(drain(h.events), "\n")
	for _, want := range []string{ReasonServiceAccountNotPatched + " ServiceAccount builder: its imagePullSecrets are applied by kubectl apply",
		"add artifactory-pull to its manifest"} {
		if !strings.Contains(ev, want) {
			t.Errorf("events %q lack %q", ev, want)
		}
	}
}

// TestSAPatcherTrustsItsBooksOnlyForItsOwnNames: an annotation naming a
// user's entry (anyone who may edit the ServiceAccount can write it) takes
// nothing away; a retired name it added goes even while opted in; an entry
// whose Secret is gone for a moment (restored by the refresher) stays.
func TestSAPatcherTrustsItsBooksOnlyForItsOwnNames(t *testing.T) {
	sa := serviceAccount("default", "team-registry", "old-pull", "artifactory-pull")
	sa.Annotations = map[string]string{AnnotationPatchedPullSecrets: "team-registry,old-pull,artifactory-pull"}
	h := newPatcherHarness(t, config.PatchDefault, namespaceWith(optedInLabels), sa) // the pull Secret is missing for now

	h.reconcile(t)
	got := h.sa(t, "default")
	if !slices.Equal(names(got), []string{"team-registry", "artifactory-pull"}) || got.Annotations[AnnotationPatchedPullSecrets] != "artifactory-pull" {
		t.Errorf("imagePullSecrets %v, books %q: want the retired entry gone, the user's and the momentarily missing Secret's kept",
			names(got), got.Annotations[AnnotationPatchedPullSecrets])
	}
	h.setLabels(t, nil)
	h.reconcile(t)
	if got := h.sa(t, "default"); !slices.Equal(names(got), []string{"team-registry"}) {
		t.Errorf("after opt-out: %v", names(got))
	}
}

// TestSAPatcherReadsNoServiceAccountOfANamespaceWithoutItsBooks: a
// namespace that does not opt in costs no ServiceAccount read when none of
// its ServiceAccounts carries the patcher's annotation.
func TestSAPatcherReadsNoServiceAccountOfANamespaceWithoutItsBooks(t *testing.T) {
	h := newPatcherHarness(t, config.PatchDefault, namespaceWith(nil), serviceAccount("default", "team-registry"))
	reads := 0
	h.p.client = countingClient{Client: h.api, reads: &reads}
	h.reconcile(t)
	if reads != 0 {
		t.Errorf("%d ServiceAccount reads for a namespace that never opted in", reads)
	}
}

// countingClient counts the reads of the API client.
type countingClient struct {
	client.Client
	reads *int
}

func (c countingClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	*c.reads++
	return c.Client.Get(ctx, key, obj, opts...)
}

func (c countingClient) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	*c.reads++
	return c.Client.List(ctx, list, opts...)
}

func TestPatchedPullSecretsAnnotationIsPerInstallation(t *testing.T) {
	if PatchedPullSecretsAnnotation(config.DefaultInstallation) != AnnotationPatchedPullSecrets ||
		PatchedPullSecretsAnnotation("") != AnnotationPatchedPullSecrets ||
		PatchedPullSecretsAnnotation("team-b") != AnnotationPatchedPullSecrets+"-team-b" {
		t.Error("wrong annotation per installation")
	}
}

func TestNewSAPatcherIsNilWithoutPatching(t *testing.T) {
	for _, mode := range []config.PatchServiceAccounts{"", config.PatchNone} {
		if p, err := NewSAPatcher(SAPatcherOptions{Config: &config.Config{NamespaceLabel: config.DefaultNamespaceLabel, PatchServiceAccounts: mode}}); p != nil || err != nil {
			t.Errorf("mode %q: %v %v", mode, p, err)
		}
	}
}

// A Secret of the pull Secret's name that another installation manages is
// not this one's to add: the Store refuses it as foreign, and so does the
// patcher.
func TestSAPatcherAddsNoSecretOfAnotherInstallation(t *testing.T) {
	theirs := managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts)
	theirs.Annotations[AnnotationInstallation] = "other-release"
	h := newPatcherHarness(t, config.PatchDefault, namespaceWith(optedInLabels), serviceAccount("default"), theirs)
	h.reconcile(t)
	if got := names(h.sa(t, "default")); len(got) != 0 {
		t.Errorf("imagePullSecrets %v: another installation's Secret was added", got)
	}
}
