package webhook

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

const (
	perSAConfigYAML = `
instances:
- name: main
  url: https://artifactory.example.com
  registryHosts: [artifactory.example.com]
  secretName: artifactory-main
  identity: serviceAccount
- name: cloud
  url: https://team.jfrog.example.io
  registryHosts: ["*.jfrog.example.io"]
  secretName: artifactory-cloud
  identity: serviceAccount
  fallback: webhook
- name: shared
  url: https://shared.example.com
  registryHosts: [shared.example.com]
  secretName: artifactory-shared
requestTimeout: 2s
`
	teamRole = "arn:aws:iam::111122223333:role/team-a-puller"
)

// countingServiceAccounts resolves through pullsecret.ServiceAccounts over
// a fake cache and counts the lookups.
type countingServiceAccounts struct {
	inner *pullsecret.ServiceAccounts
	calls atomic.Int32
}

func (c *countingServiceAccounts) Lookup(ctx context.Context, ns, name string) (pullsecret.ServiceAccount, error) {
	c.calls.Add(1)
	return c.inner.Lookup(ctx, ns, name)
}

func perSAHandler(t *testing.T, s Secrets, sas ...*corev1.ServiceAccount) (*Handler, *countingServiceAccounts, *events.FakeRecorder) {
	t.Helper()
	cfg, err := config.Parse([]byte(perSAConfigYAML))
	if err != nil {
		t.Fatal(err)
	}
	objs := []client.Object{namespaceObject(testNamespace, optedIn())}
	for _, sa := range sas {
		objs = append(objs, sa)
	}
	reader := fakeReader(objs...)
	counting := &countingServiceAccounts{inner: pullsecret.NewServiceAccounts(reader, nil, "", nil)}
	rec := events.NewFakeRecorder(10)
	h, _ := testHandler(t, s, func(o *Options) { o.Config, o.ServiceAccounts, o.Recorder = cfg, counting, rec })
	return h, counting, rec
}

func serviceAccount(name string, annotations map[string]string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: name, Annotations: annotations}}
}

func podAs(serviceAccount string, images ...string) map[string]any {
	p := simplePod(images...)
	if serviceAccount != "" {
		p["spec"].(map[string]any)["serviceAccountName"] = serviceAccount
	}
	return p
}

var allThree = []string{mainImage, "team.jfrog.example.io/app", "shared.example.com/lib"}

func TestHandlePullsAsThePodsServiceAccountOnlyForItsInstances(t *testing.T) {
	secrets := &fakeSecrets{}
	h, sas, _ := perSAHandler(t, secrets, serviceAccount("api", map[string]string{config.RoleARNAnnotation: teamRole}))

	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, podAs("api", allThree...)))

	want := `[{"op":"add","path":"/spec/imagePullSecrets","value":[{"name":"artifactory-main-api"},{"name":"artifactory-cloud-api"},{"name":"artifactory-shared"}]}]`
	if got := string(mustJSON(t, resp.Patches)); got != want {
		t.Errorf("patch = %s\nwant    %s", got, want)
	}
	if len(resp.Warnings) != 0 {
		t.Errorf("warnings %q, want none", resp.Warnings)
	}
	wantID := credentials.Identity{RoleARN: teamRole, Namespace: testNamespace, ServiceAccount: "api"}
	for _, c := range secrets.Calls() {
		want := wantID
		if c.instance == "shared" {
			want = credentials.Identity{}
		}
		if c.id != want {
			t.Errorf("instance %s ensured as %+v, want %+v", c.instance, c.id, want)
		}
	}
	if n := sas.calls.Load(); n != 1 {
		t.Errorf("ServiceAccount resolved %d times for one pod, want once", n)
	}
}

func TestHandleReadsTheDefaultServiceAccountWhenThePodNamesNone(t *testing.T) {
	secrets := &fakeSecrets{}
	h, _, _ := perSAHandler(t, secrets, serviceAccount("default", map[string]string{config.RoleARNAnnotation: teamRole}))

	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, podAs("", mainImage)))

	if got := string(mustJSON(t, resp.Patches)); !strings.Contains(got, `"artifactory-main-default"`) {
		t.Errorf("patch = %s, want the default ServiceAccount's Secret", got)
	}
}

func TestHandleServiceAccountWithoutRoleFallsBackOnlyWhereConfigured(t *testing.T) {
	for _, tc := range []struct {
		name string
		sas  []*corev1.ServiceAccount
		why  string
	}{
		{"no annotation", []*corev1.ServiceAccount{serviceAccount("api", nil)}, "has no eks.amazonaws.com/role-arn annotation"},
		{"no ServiceAccount", nil, "ServiceAccount not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secrets := &fakeSecrets{}
			h, _, rec := perSAHandler(t, secrets, tc.sas...)

			resp := serve(t, h, context.Background(), podRequest(t, testNamespace, podAs("api", allThree...)))

			// main (fallback none): nothing; cloud (fallback webhook): the
			// webhook's Secret; shared: as always.
			want := `[{"op":"add","path":"/spec/imagePullSecrets","value":[{"name":"artifactory-cloud"},{"name":"artifactory-shared"}]}]`
			if got := string(mustJSON(t, resp.Patches)); got != want {
				t.Errorf("patch = %s\nwant    %s", got, want)
			}
			assertWarning(t, resp, "no pull secret for instance main, which pulls as the pod's ServiceAccount")
			assertWarning(t, resp, tc.why)
			assertWarning(t, resp, "annotate ServiceAccount api with eks.amazonaws.com/role-arn: <IAM role ARN>, or set the instance's fallback: webhook")
			for _, c := range secrets.Calls() {
				if c.instance == "main" || !c.id.IsWebhook() {
					t.Errorf("ensured %s as %+v, want only cloud and shared as the webhook", c.instance, c.id)
				}
			}
			select {
			case e := <-rec.Events:
				t.Errorf("Event %q for a ServiceAccount without a role: the warning is the pod owner's to act on", e)
			default:
			}
		})
	}
}

func TestHandleRoleAnnotationThatIsNoRoleGetsNoFallback(t *testing.T) {
	secrets := &fakeSecrets{}
	h, _, _ := perSAHandler(t, secrets, serviceAccount("api", map[string]string{config.RoleARNAnnotation: "arn:aws:iam::111122223333:user/bob"}))

	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, podAs("api", "team.jfrog.example.io/app")))

	if len(resp.Patches) != 0 {
		t.Errorf("patch %s for a ServiceAccount whose role is malformed: a typo must not fall back to the webhook's user", mustJSON(t, resp.Patches))
	}
	assertWarning(t, resp, "not an IAM role ARN")
	if len(secrets.Calls()) != 0 {
		t.Errorf("ensured %v", secrets.Calls())
	}
}

func TestHandleFailedExchangeAsServiceAccountNamesItAndTheRole(t *testing.T) {
	secrets := &fakeSecrets{ensure: func(_ context.Context, inst config.Instance) (pullsecret.Result, error) {
		return pullsecret.Result{}, errors.New("sts:AssumeRoleWithWebIdentity: AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity")
	}}
	h, _, rec := perSAHandler(t, secrets, serviceAccount("api", map[string]string{config.RoleARNAnnotation: teamRole}))

	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, podAs("api", mainImage)))

	assertAllowedUnchanged(t, resp)
	assertWarning(t, resp, "no pull secret for instance main as ServiceAccount api (role "+teamRole+"): sts:AssumeRoleWithWebIdentity: AccessDenied")
	select {
	case e := <-rec.Events:
		if !strings.Contains(e, "instance main as ServiceAccount api (role "+teamRole+")") {
			t.Errorf("event = %q", e)
		}
	default:
		t.Error("no Event recorded")
	}
}

func TestNewHandlerNeedsServiceAccountsForServiceAccountInstances(t *testing.T) {
	cfg, err := config.Parse([]byte(perSAConfigYAML))
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewHandler(Options{Config: cfg, Namespaces: fakeReader(), Secrets: &fakeSecrets{}, Metrics: metrics.New(nil)})
	if err == nil || !strings.Contains(err.Error(), "ServiceAccounts is required") {
		t.Errorf("err = %v", err)
	}
}

// A ServiceAccount without a role under fallback none is a configured
// outcome, not a failure: no failed_open, no Event.
func TestHandleServiceAccountWithoutRoleIsSkippedNotFailed(t *testing.T) {
	cfg, err := config.Parse([]byte(perSAConfigYAML))
	if err != nil {
		t.Fatal(err)
	}
	reader := fakeReader(namespaceObject(testNamespace, optedIn()), serviceAccount("plain", nil))
	h, reg := testHandler(t, &fakeSecrets{}, func(o *Options) {
		o.Config, o.ServiceAccounts = cfg, pullsecret.NewServiceAccounts(reader, nil, "", nil)
	})
	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, podAs("plain", mainImage)))
	assertAllowedUnchanged(t, resp)
	assertWarning(t, resp, "has no eks.amazonaws.com/role-arn annotation")
	if got := admissions(t, reg, metrics.OutcomeSkippedNoRole); got != 1 {
		t.Errorf("skipped_no_role = %v, want 1", got)
	}
	if got := admissions(t, reg, metrics.OutcomeFailedOpen); got != 0 {
		t.Errorf("failed_open = %v, want 0: no role under fallback none is configured, not a failure", got)
	}
}

// With the OIDC exchange the pod's ServiceAccount itself is the identity:
// no role annotation needed, its own Secret, the configured opt-in honoured.
func TestHandleOIDCInstancePullsAsTheServiceAccountItself(t *testing.T) {
	cfg, err := config.Parse([]byte(`
instances:
- name: main
  url: https://artifactory.example.com
  registryHosts: [artifactory.example.com]
  secretName: artifactory-main
  identity: serviceAccount
  exchange: oidc
  oidc: {providerName: k8s}
requestTimeout: 2s
`))
	if err != nil {
		t.Fatal(err)
	}
	secrets := &fakeSecrets{}
	reader := fakeReader(namespaceObject(testNamespace, optedIn()), serviceAccount("api", nil))
	h, _ := testHandler(t, secrets, func(o *Options) {
		o.Config, o.ServiceAccounts = cfg, pullsecret.NewServiceAccounts(reader, nil, "", nil)
	})
	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, podAs("api", mainImage)))
	if got := string(mustJSON(t, resp.Patches)); got != `[{"op":"add","path":"/spec/imagePullSecrets","value":[{"name":"artifactory-main-api"}]}]` {
		t.Errorf("patch = %s (warnings %v)", got, resp.Warnings)
	}
	if c := secrets.Calls(); len(c) != 1 || c[0].id != (credentials.Identity{Namespace: testNamespace, ServiceAccount: "api"}) {
		t.Errorf("ensured %v, want as the ServiceAccount itself", c)
	}

	// With an opt-in annotation configured, a ServiceAccount without it has no identity.
	cfg.ServiceAccounts.OptInAnnotation = "JFrogExchange"
	h, _ = testHandler(t, &fakeSecrets{}, func(o *Options) {
		o.Config, o.ServiceAccounts = cfg, pullsecret.NewServiceAccounts(reader, nil, "JFrogExchange", nil)
	})
	resp = serve(t, h, context.Background(), podRequest(t, testNamespace, podAs("api", mainImage)))
	if len(resp.Patches) != 0 {
		t.Errorf("patched %s without the opt-in annotation", mustJSON(t, resp.Patches))
	}
	assertWarning(t, resp, `or annotate it with JFrogExchange: "true"`)
	for _, w := range resp.Warnings {
		if strings.Contains(w, "role-arn") {
			t.Errorf("warning %q gives the AWS hint for an OIDC instance", w)
		}
	}
}
