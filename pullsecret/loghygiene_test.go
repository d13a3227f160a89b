package pullsecret

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/internal/leaktest"
)

// Tokens of the log hygiene tests, each long enough to be searched for in
// every encoding (leaktest.MinLen): the one minted now, the one the Secret
// held before, one a tenant wrote into the managed Secret by hand, and a
// password in a tenant's own Secret that holds the managed name.
var hygieneTokens = map[string]string{
	"the new token":             "eyJ2ZXIiOiIyIiwidHlwIjoiSldUIn0.bmV3LXRva2VuLW9mLXRoZS1yb3RhdGlvbg.c2lnbmF0dXJlLW5ldw",
	"the old token":             "eyJ2ZXIiOiIyIiwidHlwIjoiSldUIn0.b2xkLXRva2VuLXN0aWxsLWluLXRoZS1zZWNyZXQ.c2lnbmF0dXJlLW9sZA",
	"a hand-edited token":       "hand-edited+token/of=a&tenant<0123456789>",
	"a tenant's registry token": "a-tenants-own-registry-password-0123456789",
}

// hygieneSink records everything the code under test tells an operator or
// a namespace owner: its log, written by the webhook's logger (zap, JSON,
// every verbosity), and its Events, through the production note wrapper.
type hygieneSink struct {
	mu     sync.Mutex
	log    bytes.Buffer
	events *events.FakeRecorder
	noted  []string // the Events recorded so far
	passed []string // errors and warnings the code returned to its caller
}

func newHygieneSink() *hygieneSink { return &hygieneSink{events: events.NewFakeRecorder(100)} }

func (s *hygieneSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.Write(p)
}

// logger is the webhook's logger (cmd: controller-runtime's zap), in
// development mode for V(1) lines, with the production JSON encoder.
func (s *hygieneSink) logger() logr.Logger {
	return crzap.New(crzap.WriteTo(s), crzap.UseDevMode(true), crzap.JSONEncoder())
}

func (s *hygieneSink) recorder() events.EventRecorder { return FittingNotes(s.events) }

// pass records what a call returned to its caller (the admission handler
// logs errors and answers warnings; the controller logs errors).
func (s *hygieneSink) pass(res any, err error) {
	s.passed = append(s.passed, fmt.Sprintf("%+v", res))
	if err != nil {
		s.passed = append(s.passed, err.Error())
	}
}

// text is everything recorded so far: log lines, Events and passed results.
func (s *hygieneSink) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for drained := false; !drained; {
		select {
		case e := <-s.events.Events:
			s.noted = append(s.noted, "Event: "+e)
		default:
			drained = true
		}
	}
	return s.log.String() + strings.Join(s.noted, "\n") + "\n" + strings.Join(s.passed, "\n")
}

// onStore and onRefresher make h's Store and Refresher log and record to s.
func (s *hygieneSink) onStore(h *harness) *harness {
	h.store.log = s.logger()
	return h
}

func (s *hygieneSink) onRefresher(h *refresherHarness) *refresherHarness {
	s.onStore(h.harness)
	h.r.log, h.r.recorder = s.logger(), s.recorder()
	return h
}

// dockerconfigOf is the .dockerconfigjson of token for every host of the
// test instance.
func dockerconfigOf(t *testing.T, token string) []byte {
	t.Helper()
	b, err := DockerConfigJSON(instance().RegistryHosts, user, credentials.NewToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hygieneSecret is a managed Secret carrying token, issued at issued.
func hygieneSecret(t *testing.T, issued time.Time, token string) *corev1.Secret {
	return managedSecret(t, credAt(issued, token), instance().RegistryHosts)
}

// tenantSecret is an unmanaged Secret of the managed name holding a
// tenant's own credentials.
func tenantSecret(t *testing.T) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: instance().SecretName, Namespace: ns, Labels: map[string]string{"team": "a"}},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: dockerconfigOf(t, hygieneTokens["a tenant's registry token"])},
	}
}

func forbidden(context.Context, client.WithWatch, client.Object, ...client.UpdateOption) error {
	return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "artifactory-pull", errors.New("denied by policy"))
}

// TestStoreAndRefresherLogAndRecordNoTokenInAnyEncoding runs every path of
// Ensure and of the refresher that logs or records an Event, with a
// recording logger and Event recorder, and searches what they recorded
// (and the errors and warnings returned) for every token involved, in
// every form a log can hold it: plain, base64 at any alignment (a logged
// Secret's Data), hex, escaped.
func TestStoreAndRefresherLogAndRecordNoTokenInAnyEncoding(t *testing.T) {
	newTok, oldTok := hygieneTokens["the new token"], hygieneTokens["the old token"]
	ctx := context.Background()
	cases := []struct {
		name string
		// want is a log message, Event reason or error text the path
		// leaves: proof that it ran.
		want string
		run  func(t *testing.T, s *hygieneSink)
	}{
		{"Ensure creates", "wrote pull secret", func(t *testing.T, s *hygieneSink) {
			h := s.onStore(newHarness(t, interceptor.Funcs{}))
			h.tokens.cred = credAt(t0, newTok)
			s.pass(h.store.Ensure(ctx, ns, instance(), false))
		}},
		{"Ensure updates a Secret due for refresh", `"action":"updated"`, func(t *testing.T, s *hygieneSink) {
			h := s.onStore(newHarness(t, interceptor.Funcs{}, hygieneSecret(t, t0, oldTok)))
			h.now = t0.Add(46 * time.Minute)
			h.tokens.cred = credAt(h.now, newTok)
			s.pass(h.store.Ensure(ctx, ns, instance(), false))
		}},
		{"Ensure falls back when the mint fails", "could not mint a new token", func(t *testing.T, s *hygieneSink) {
			h := s.onStore(newHarness(t, interceptor.Funcs{}, hygieneSecret(t, t0, oldTok)))
			h.now = t0.Add(50 * time.Minute)
			h.tokens.err = errors.New(mintError)
			s.pass(h.store.Ensure(ctx, ns, instance(), false))
		}},
		{"Ensure falls back when the write fails", "could not write the refreshed pull secret", func(t *testing.T, s *hygieneSink) {
			h := s.onStore(newHarness(t, interceptor.Funcs{Update: forbidden}, hygieneSecret(t, t0, oldTok)))
			h.now = t0.Add(50 * time.Minute)
			h.tokens.cred = credAt(h.now, newTok)
			s.pass(h.store.Ensure(ctx, ns, instance(), false))
		}},
		{"Ensure fails to write", "the object has been modified", func(t *testing.T, s *hygieneSink) {
			api := &refusingUpdates{}
			api.refusing.Store(true)
			h := s.onStore(newHarness(t, api.funcs(), hygieneSecret(t, t0, oldTok)))
			h.now = t0.Add(70 * time.Minute) // expired: nothing to fall back to
			h.tokens.cred = credAt(h.now, newTok)
			s.pass(h.store.Ensure(ctx, ns, instance(), false))
		}},
		{"Ensure meets a tenant's Secret", ErrForeignSecret.Error(), func(t *testing.T, s *hygieneSink) {
			h := s.onStore(newHarness(t, interceptor.Funcs{}, tenantSecret(t)))
			h.store.reader = emptyCache{} // so the Store reads it, data and all, from the API server
			h.tokens.cred = credAt(t0, newTok)
			s.pass(h.store.Ensure(ctx, ns, instance(), false))
		}},
		{"Ensure meets another installation's Secret", "another installation", func(t *testing.T, s *hygieneSink) {
			other, err := NewStore(Options{Fingerprints: testPrints, Installation: "team-b-puller"}).build(ns, newTarget(instance(), credentials.Identity{}), credAt(t0, oldTok))
			if err != nil {
				t.Fatal(err)
			}
			h := s.onStore(newHarness(t, interceptor.Funcs{}, other))
			s.pass(h.store.Ensure(ctx, ns, instance(), false))
		}},
		{"Ensure replaces a Secret of the wrong type", "replacing managed pull secret of the wrong type", func(t *testing.T, s *hygieneSink) {
			wrong := hygieneSecret(t, t0, oldTok)
			wrong.Type = corev1.SecretTypeOpaque
			h := s.onStore(newHarness(t, interceptor.Funcs{}, wrong))
			h.now = t0.Add(time.Minute)
			h.tokens.cred = credAt(h.now, newTok)
			s.pass(h.store.Ensure(ctx, ns, instance(), false))
		}},
		{"the refresher refreshes", ReasonRefreshed, func(t *testing.T, s *hygieneSink) {
			h := s.onRefresher(newRefresherHarness(t, true, namespaceWith(optedInLabels), hygieneSecret(t, t0, oldTok)))
			h.now = t0.Add(46 * time.Minute)
			h.tokens.cred = credAt(h.now, newTok)
			h.reconcile(t)
		}},
		{"the refresher restores an edited Secret", ReasonRestored, func(t *testing.T, s *hygieneSink) {
			edited := hygieneSecret(t, t0, newTok)
			edited.Data[corev1.DockerConfigJsonKey] = dockerconfigOf(t, hygieneTokens["a hand-edited token"])
			h := s.onRefresher(newRefresherHarness(t, true, namespaceWith(optedInLabels), edited))
			h.tokens.cred = credAt(t0, newTok)
			h.reconcile(t)
		}},
		{"the refresher restores a deleted Secret", ReasonRestored, func(t *testing.T, s *hygieneSink) {
			h := s.onRefresher(newRefresherHarness(t, true, namespaceWith(optedInLabels)))
			h.r.rememberDeleted(secretKey) // its delete event was seen
			h.tokens.cred = credAt(t0, newTok)
			h.reconcile(t)
		}},
		{"the refresher deletes on opt-out", ReasonDeleted, func(t *testing.T, s *hygieneSink) {
			h := s.onRefresher(newRefresherHarness(t, true, namespaceWith(map[string]string{"team": "a"}), hygieneSecret(t, t0, oldTok)))
			h.reconcile(t)
		}},
		{"the refresher deletes a retired Secret", "deleted retired pull secret", func(t *testing.T, s *hygieneSink) {
			retired := hygieneSecret(t, t0, oldTok)
			retired.Name = "old-pull"
			h := s.onRefresher(newRefresherHarness(t, true, namespaceWith(optedInLabels), retired))
			h.r.retired["old-pull"] = true
			res, err := h.r.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "old-pull"}})
			s.pass(res, err)
		}},
		{"the refresher fails to refresh", ReasonTokenExchangeFailed, func(t *testing.T, s *hygieneSink) {
			h := s.onRefresher(newRefresherHarness(t, true, namespaceWith(optedInLabels), hygieneSecret(t, t0.Add(-2*time.Hour), oldTok)))
			h.tokens.err = errors.New(mintError)
			h.retry.next = h.now.Add(40 * time.Second)
			h.reconcile(t)
		}},
		{"the refresher keeps a still-valid Secret it could not refresh", ReasonTokenExchangeFailed, func(t *testing.T, s *hygieneSink) {
			cred := credAt(t0, oldTok)
			h := s.onRefresher(newRefresherHarness(t, true, namespaceWith(optedInLabels), hygieneSecret(t, t0, oldTok)))
			h.now = t0.Add(50 * time.Minute) // past the refresh point; the cache keeps the due token
			h.tokens.cred, h.retry.err = cred, errors.New(mintError)
			h.reconcile(t)
		}},
		{"the refresher fails to write, then backs off", "backing off after failed writes", func(t *testing.T, s *hygieneSink) {
			api := &refusingUpdates{}
			api.refusing.Store(true)
			h := s.onRefresher(refresherOn(t, newHarness(t, api.funcs(), namespaceWith(optedInLabels), hygieneSecret(t, t0, oldTok)), true))
			h.now = t0.Add(70 * time.Minute)
			h.tokens.cred = credAt(h.now, newTok)
			h.reconcile(t)
			h.now = h.now.Add(time.Second)
			h.reconcile(t)
			if text := s.text(); !strings.Contains(text, ReasonWriteFailed) {
				t.Fatalf("precondition: no %s Event in:\n%s", ReasonWriteFailed, text)
			}
		}},
		{"the refresher meets a tenant's Secret", "taken by an unmanaged Secret", func(t *testing.T, s *hygieneSink) {
			h := s.onRefresher(newRefresherHarness(t, true, namespaceWith(optedInLabels), tenantSecret(t)))
			h.r.rememberDeleted(secretKey)
			h.tokens.cred = credAt(t0, newTok)
			h.reconcile(t)
		}},
	}
	names := make([]string, 0, len(hygieneTokens))
	tokens := make([]string, 0, len(hygieneTokens))
	for name, tok := range hygieneTokens {
		names, tokens = append(names, name), append(tokens, tok)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newHygieneSink()
			c.run(t, s)
			text := s.text()
			if !strings.Contains(text, c.want) {
				t.Fatalf("precondition: the path left no %q; it recorded:\n%s", c.want, text)
			}
			for _, f := range leaktest.Find(text, tokens...) {
				t.Errorf("what was logged, recorded or returned holds %s: %s", names[f.Secret], f)
			}
		})
	}
}

// The sink must catch a leak as the webhook's logger would write it:
// otherwise the test above proves nothing.
func TestHygieneSinkCatchesATokenLoggedEncoded(t *testing.T) {
	tok := hygieneTokens["the new token"]
	sec := hygieneSecret(t, t0, tok)
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + tok))
	for name, leak := range map[string]func(logr.Logger){
		"a Secret's Data":         func(l logr.Logger) { l.Info("wrote pull secret", "data", sec.Data) },
		"a Secret, at V(1)":       func(l logr.Logger) { l.V(1).Info("wrote pull secret", "secret", sec) },
		"the dockerconfig's auth": func(l logr.Logger) { l.Error(errors.New("refused"), "could not write", "auth", auth) },
	} {
		t.Run(name, func(t *testing.T) {
			s := newHygieneSink()
			leak(s.logger())
			text := s.text()
			if strings.Contains(text, tok) {
				t.Fatalf("the logger wrote the token verbatim: this test wants it encoded")
			}
			if len(leaktest.Find(text, tok)) == 0 {
				t.Errorf("the token logged as %s is not found in:\n%s", name, text)
			}
		})
	}
}
