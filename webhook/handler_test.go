package webhook

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

const mainImage = "artifactory.example.com/team/app:1.0"

func TestHandleLeavesOtherKindsAndOperationsUntouched(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*admission.Request)
	}{
		{"pod update", func(r *admission.Request) { r.Operation = admissionv1.Update }},
		{"pod delete", func(r *admission.Request) { r.Operation = admissionv1.Delete }},
		{"pod connect", func(r *admission.Request) { r.Operation = admissionv1.Connect }},
		{"pod sub-resource", func(r *admission.Request) { r.SubResource = "ephemeralcontainers" }},
		{"deployment", func(r *admission.Request) {
			r.Kind = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
		}},
		{"pod kind of another group", func(r *admission.Request) { r.Kind.Group = "example.com" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secrets := &fakeSecrets{}
			h, reg := testHandler(t, secrets, nil)
			req := podRequest(t, testNamespace, simplePod(mainImage))
			tt.mod(&req)

			resp := serve(t, h, context.Background(), req)

			assertAllowedUnchanged(t, resp)
			if len(secrets.Calls()) != 0 {
				t.Errorf("Ensure called: %v", secrets.Calls())
			}
			if got := admissions(t, reg, metrics.OutcomeSkippedOperation); got != 1 {
				t.Errorf("skipped_operation = %v, want 1", got)
			}
		})
	}
}

func TestHandleSkipsNamespaceNotOptedIn(t *testing.T) {
	tests := []struct {
		name       string
		namespaces client.Reader
		apiReader  client.Reader
	}{
		{"label missing", fakeReader(namespaceObject(testNamespace, nil)), nil},
		{"label with other value", fakeReader(namespaceObject(testNamespace, map[string]string{"artifactory-pull-webhook/inject": "yes"})), nil},
		{"namespace unknown, no API reader", fakeReader(), nil},
		{"namespace unknown to cache and API", fakeReader(), fakeReader()},
		{"cache says not opted in, API reader not asked", fakeReader(namespaceObject(testNamespace, nil)),
			fakeReader(namespaceObject(testNamespace, optedIn()))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secrets := &fakeSecrets{}
			h, reg := testHandler(t, secrets, func(o *Options) { o.Namespaces, o.APIReader = tt.namespaces, tt.apiReader })

			resp := serve(t, h, context.Background(), podRequest(t, testNamespace, simplePod(mainImage)))

			assertAllowedUnchanged(t, resp)
			if len(secrets.Calls()) != 0 {
				t.Errorf("Ensure called: %v", secrets.Calls())
			}
			if got := admissions(t, reg, metrics.OutcomeSkippedNamespace); got != 1 {
				t.Errorf("skipped_namespace = %v, want 1", got)
			}
		})
	}
}

func TestHandleReadsAPIWhenCacheMissesNamespace(t *testing.T) {
	secrets := &fakeSecrets{}
	h, _ := testHandler(t, secrets, func(o *Options) {
		o.Namespaces = fakeReader()
		o.APIReader = fakeReader(namespaceObject(testNamespace, optedIn()))
	})

	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, simplePod(mainImage)))

	if len(resp.Patches) != 1 {
		t.Fatalf("patches = %v, want one", resp.Patches)
	}
}

func TestHandleUsesRequestNamespaceNotPodMetadata(t *testing.T) {
	t.Run("request namespace opted in, pod claims another", func(t *testing.T) {
		secrets := &fakeSecrets{}
		h, _ := testHandler(t, secrets, nil)
		pod := simplePod(mainImage)
		pod["metadata"].(map[string]any)["namespace"] = "elsewhere"

		resp := serve(t, h, context.Background(), podRequest(t, testNamespace, pod))

		calls := secrets.Calls()
		if len(calls) != 1 || calls[0].namespace != testNamespace {
			t.Fatalf("Ensure calls = %v, want one in %q", calls, testNamespace)
		}
		if len(resp.Patches) != 1 {
			t.Errorf("patches = %v, want one", resp.Patches)
		}
	})
	t.Run("request namespace not opted in, pod claims an opted-in one", func(t *testing.T) {
		secrets := &fakeSecrets{}
		h, _ := testHandler(t, secrets, func(o *Options) {
			o.Namespaces = fakeReader(namespaceObject(testNamespace, optedIn()), namespaceObject("plain", nil))
		})
		pod := simplePod(mainImage)
		pod["metadata"].(map[string]any)["namespace"] = testNamespace

		resp := serve(t, h, context.Background(), podRequest(t, "plain", pod))

		assertAllowedUnchanged(t, resp)
		if len(secrets.Calls()) != 0 {
			t.Errorf("Ensure called: %v", secrets.Calls())
		}
	})
}

func TestHandleAdmitsMalformedPodWithWarning(t *testing.T) {
	for name, raw := range map[string]string{
		"not json":           `{"spec": {`,
		"wrong field type":   `{"spec": {"containers": "nginx"}}`,
		"wrong image type":   `{"spec": {"containers": [{"image": 42}]}}`,
		"wrong object type":  `"a pod"`,
		"empty object bytes": ``,
	} {
		t.Run(name, func(t *testing.T) {
			secrets := &fakeSecrets{}
			h, reg := testHandler(t, secrets, nil)

			var resp admission.Response
			if name == "not json" {
				// A review cannot carry it (its body would not be JSON): the
				// decoding failure reaches admit only through the oracle's
				// adapter, which takes the object as bytes.
				resp = oracleHandler{h}.Handle(context.Background(), podRequest(t, testNamespace, []byte(raw)))
			} else {
				resp = serve(t, h, context.Background(), podRequest(t, testNamespace, []byte(raw)))
			}

			if !resp.Allowed || len(resp.Patches) != 0 {
				t.Fatalf("want allowed without patch, got allowed=%v patches=%v", resp.Allowed, resp.Patches)
			}
			assertWarning(t, resp, "could not decode the pod")
			if got := admissions(t, reg, metrics.OutcomeFailedOpen); got != 1 {
				t.Errorf("failed_open = %v, want 1", got)
			}
		})
	}
}

func TestHandleEnsureErrorFailsOpenWithWarningAndEvent(t *testing.T) {
	secrets := &fakeSecrets{ensure: func(_ context.Context, inst config.Instance) (pullsecret.Result, error) {
		return pullsecret.Result{}, fmt.Errorf("exchanging token with artifactory.example.com: 401 Unauthorized")
	}}
	rec := events.NewFakeRecorder(10)
	h, reg := testHandler(t, secrets, func(o *Options) { o.Recorder = rec })

	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, simplePod(mainImage)))

	assertAllowedUnchanged(t, resp)
	assertWarning(t, resp, "artifactory-pull-webhook: no pull secret for instance main: exchanging token with artifactory.example.com: 401 Unauthorized")
	select {
	case e := <-rec.Events:
		if !strings.HasPrefix(e, "Warning TokenExchangeFailed ") || !strings.Contains(e, "instance main") {
			t.Errorf("event = %q", e)
		}
	default:
		t.Error("no Event recorded")
	}
	if got := admissions(t, reg, metrics.OutcomeFailedOpen); got != 1 {
		t.Errorf("failed_open = %v, want 1", got)
	}
}

// TestHandleExchangeFailureSaysWhatToFix: the warning and the Event of a
// refused exchange carry the fix of credentials.Explain's table, after the
// reason Artifactory gave.
func TestHandleExchangeFailureSaysWhatToFix(t *testing.T) {
	const role = "arn:aws:iam::123456789012:role/puller"
	refused := &credentials.ExchangeError{Instance: "main", Host: "artifactory.example.com", Status: 401, Exchange: credentials.ExchangeAWS,
		Reason: "Artifactory refused the exchange", Body: `{"errors":[{"status":401,"message":"no user is mapped to IAM role ` + role + `"}]}`}
	secrets := &fakeSecrets{ensure: func(context.Context, config.Instance) (pullsecret.Result, error) {
		return pullsecret.Result{}, fmt.Errorf("pull secret x: %w: %w", pullsecret.ErrNoToken, refused)
	}}
	rec := events.NewFakeRecorder(10)
	h, _ := testHandler(t, secrets, func(o *Options) { o.Recorder = rec })

	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, simplePod(mainImage)))

	assertAllowedUnchanged(t, resp)
	fix := `to fix: map the role to an Artifactory user: PUT /access/api/v1/aws/iam_role {"username":"<user>","iam_role":"` + role + `"}`
	// The warning names the fix before the error body: the API server cuts
	// each warning to 256 characters when a response's warnings pass 4 KiB.
	assertWarning(t, resp, "artifactory-pull-webhook: no pull secret for instance main ("+fix+"): pull secret x")
	assertWarning(t, resp, "no user is mapped to IAM role "+role)
	select {
	case e := <-rec.Events:
		if !strings.HasPrefix(e, "Warning TokenExchangeFailed ") || !strings.HasSuffix(e, "; "+fix) {
			t.Errorf("event = %q, want the fix at its end", e)
		}
	default:
		t.Error("no Event recorded")
	}
}

func TestHandlePatchesHealthyInstanceWhenAnotherFails(t *testing.T) {
	secrets := &fakeSecrets{ensure: func(_ context.Context, inst config.Instance) (pullsecret.Result, error) {
		if inst.Name == "cloud" {
			return pullsecret.Result{}, errors.New("exchanging token with team.jfrog.example.io: timeout")
		}
		return pullsecret.Result{SecretName: inst.SecretName}, nil
	}}
	h, reg := testHandler(t, secrets, nil)

	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, simplePod(mainImage, "team.jfrog.example.io/app")))

	if got := string(mustJSON(t, resp.Patches)); got != `[{"op":"add","path":"/spec/imagePullSecrets","value":[{"name":"artifactory-main"}]}]` {
		t.Errorf("patch = %s", got)
	}
	assertWarning(t, resp, "no pull secret for instance cloud")
	if got := admissions(t, reg, metrics.OutcomePatched); got != 1 {
		t.Errorf("patched = %v, want 1", got)
	}
}

func TestHandleForeignSecretWarnsWithoutPatch(t *testing.T) {
	secrets := &fakeSecrets{ensure: func(_ context.Context, inst config.Instance) (pullsecret.Result, error) {
		return pullsecret.Result{}, fmt.Errorf("secret %s/%s: %w", testNamespace, inst.SecretName, pullsecret.ErrForeignSecret)
	}}
	rec := events.NewFakeRecorder(10)
	h, _ := testHandler(t, secrets, func(o *Options) { o.Recorder = rec })

	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, simplePod(mainImage)))

	assertAllowedUnchanged(t, resp)
	assertWarning(t, resp, `a Secret named "artifactory-main" exists in namespace "team-a" that the webhook does not manage`)
	if len(rec.Events) != 0 {
		t.Errorf("unexpected Event %q", <-rec.Events)
	}
}

func TestHandleSecretOfAnotherInstallationNamesItAndTheFix(t *testing.T) {
	secrets := &fakeSecrets{ensure: func(_ context.Context, inst config.Instance) (pullsecret.Result, error) {
		return pullsecret.Result{}, fmt.Errorf("secret %s/%s: %w", testNamespace, inst.SecretName,
			&pullsecret.InstallationConflictError{Installation: "team-b-puller"})
	}}
	rec := events.NewFakeRecorder(10)
	h, _ := testHandler(t, secrets, func(o *Options) { o.Recorder = rec })

	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, simplePod(mainImage)))

	assertAllowedUnchanged(t, resp)
	assertWarning(t, resp, `the Secret named "artifactory-main" in namespace "team-a" belongs to another installation of the webhook ("team-b-puller")`)
	assertWarning(t, resp, "give this instance another secretName")
	if len(rec.Events) != 0 {
		t.Errorf("unexpected Event %q", <-rec.Events)
	}
}

func TestHandleNeverPatchesAnEmptySecretName(t *testing.T) {
	secrets := &fakeSecrets{ensure: func(context.Context, config.Instance) (pullsecret.Result, error) {
		return pullsecret.Result{Action: pullsecret.ActionReused}, nil
	}}
	h, reg := testHandler(t, secrets, nil)

	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, simplePod(mainImage)))

	assertAllowedUnchanged(t, resp)
	assertWarning(t, resp, "no pull secret for instance main: no Secret name returned")
	if got := admissions(t, reg, metrics.OutcomeFailedOpen); got != 1 {
		t.Errorf("failed_open = %v, want 1", got)
	}
}

func TestHandleAddsResultWarning(t *testing.T) {
	secrets := &fakeSecrets{ensure: func(_ context.Context, inst config.Instance) (pullsecret.Result, error) {
		return pullsecret.Result{SecretName: inst.SecretName, Action: pullsecret.ActionFallback, Warning: "using the previous token"}, nil
	}}
	h, _ := testHandler(t, secrets, nil)

	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, simplePod(mainImage)))

	if len(resp.Patches) != 1 {
		t.Errorf("patches = %v, want one", resp.Patches)
	}
	assertWarning(t, resp, "using the previous token")
}

func TestHandlePassesDryRun(t *testing.T) {
	yes, no := true, false
	for _, tt := range []struct {
		name   string
		dryRun *bool
		want   bool
	}{{"unset", nil, false}, {"false", &no, false}, {"true", &yes, true}} {
		t.Run(tt.name, func(t *testing.T) {
			secrets := &fakeSecrets{}
			h, _ := testHandler(t, secrets, nil)
			req := podRequest(t, testNamespace, simplePod(mainImage))
			req.DryRun = tt.dryRun

			serve(t, h, context.Background(), req)

			if calls := secrets.Calls(); len(calls) != 1 || calls[0].dryRun != tt.want {
				t.Errorf("Ensure calls = %v, want one with dryRun=%v", calls, tt.want)
			}
		})
	}
}

func TestHandleAnswersWithinRequestTimeoutWhenEnsureBlocks(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	secrets := &fakeSecrets{ensure: func(context.Context, config.Instance) (pullsecret.Result, error) {
		<-release // ignores the context on purpose
		return pullsecret.Result{SecretName: "late"}, nil
	}}
	h, reg := testHandler(t, secrets, func(o *Options) {
		o.Config.RequestTimeout.Duration = 100 * time.Millisecond
	})

	var resp admission.Response
	start := time.Now()
	waitFor(t, 2*time.Second, func() {
		resp = serve(t, h, context.Background(), podRequest(t, testNamespace, simplePod(mainImage)))
	})

	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("answered after %s, before the timeout", took)
	}
	assertAllowedUnchanged(t, resp)
	assertWarning(t, resp, "no pull secret for instance main: timed out after 100ms")
	if got := admissions(t, reg, metrics.OutcomeFailedOpen); got != 1 {
		t.Errorf("failed_open = %v, want 1", got)
	}
}

func TestHandleRecoversPanics(t *testing.T) {
	t.Run("in Secrets", func(t *testing.T) {
		secrets := &fakeSecrets{ensure: func(context.Context, config.Instance) (pullsecret.Result, error) {
			panic("boom")
		}}
		h, reg := testHandler(t, secrets, nil)

		resp := serve(t, h, context.Background(), podRequest(t, testNamespace, simplePod(mainImage)))

		assertAllowedUnchanged(t, resp)
		assertWarning(t, resp, "no pull secret for instance main: internal error")
		if got := admissions(t, reg, metrics.OutcomeFailedOpen); got != 1 {
			t.Errorf("failed_open = %v, want 1", got)
		}
	})
	t.Run("in the handler", func(t *testing.T) {
		h, reg := testHandler(t, &fakeSecrets{}, func(o *Options) { o.Namespaces = panickingReader{} })

		resp := serve(t, h, context.Background(), podRequest(t, testNamespace, simplePod(mainImage)))

		assertAllowedUnchanged(t, resp)
		assertWarning(t, resp, "internal error")
		if got := admissions(t, reg, metrics.OutcomeFailedOpen); got != 1 {
			t.Errorf("failed_open = %v, want 1", got)
		}
	})
}

func TestHandleFailsOpenWhenNamespaceUnreadable(t *testing.T) {
	secrets := &fakeSecrets{}
	h, reg := testHandler(t, secrets, func(o *Options) { o.Namespaces = errReader{} })

	resp := serve(t, h, context.Background(), podRequest(t, testNamespace, simplePod(mainImage)))

	assertAllowedUnchanged(t, resp)
	assertWarning(t, resp, "could not read the namespace")
	if got := admissions(t, reg, metrics.OutcomeFailedOpen); got != 1 {
		t.Errorf("failed_open = %v, want 1", got)
	}
}

func TestNewHandlerRejectsIncompleteOptions(t *testing.T) {
	valid := func() Options {
		return Options{Config: testConfig(t), Namespaces: fakeReader(), Secrets: &fakeSecrets{}, Log: logr.Discard()}
	}
	for name, mod := range map[string]func(*Options){
		"no config":         func(o *Options) { o.Config = nil },
		"no namespaces":     func(o *Options) { o.Namespaces = nil },
		"no secrets":        func(o *Options) { o.Secrets = nil },
		"zero timeout":      func(o *Options) { o.Config.RequestTimeout.Duration = 0 },
		"bad opt-in label":  func(o *Options) { o.Config.NamespaceLabel = "no-equals" },
		"bad opt-out label": func(o *Options) { o.Config.PodOptOutLabel = "a b=c" },
	} {
		t.Run(name, func(t *testing.T) {
			o := valid()
			mod(&o)
			if _, err := NewHandler(o); err == nil {
				t.Error("NewHandler succeeded")
			}
		})
	}
	if _, err := NewHandler(valid()); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

type panickingReader struct{ client.Reader }

func (panickingReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	panic("reader exploded")
}

type errReader struct{ client.Reader }

func (errReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return errors.New("cache not synced")
}

func assertAllowedUnchanged(t *testing.T, resp admission.Response) {
	t.Helper()
	if !resp.Allowed {
		t.Fatalf("denied: %+v", resp.Result)
	}
	if len(resp.Patches) != 0 || resp.Patch != nil {
		t.Errorf("unexpected patch %v", resp.Patches)
	}
}

func assertWarning(t *testing.T, resp admission.Response, substr string) {
	t.Helper()
	for _, w := range resp.Warnings {
		if strings.Contains(w, substr) {
			return
		}
	}
	t.Errorf("no warning containing %q in %q", substr, resp.Warnings)
}
