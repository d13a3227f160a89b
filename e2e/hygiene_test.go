package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/emulator"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/internal/leaktest"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// TestNoSecretReachesLogsMetricsEventsOrWarnings drives a webhook process
// through success and failure (a rejected response that itself carries a
// token) and then searches everything an operator or a namespace owner can
// read — the process's log, its metrics, every Event and every admission
// warning — for any token Artifactory issued, any AWS secret key or session
// token STS issued, and every dockerconfig auth value written.
func TestNoSecretReachesLogsMetricsEventsOrWarnings(t *testing.T) {
	restartWebhook(t, harness.PodIdentity)
	var warnings []string
	ns := optedIn(t)
	got, w := createPod(t, ns, pod("ok", stack.Image))
	warnings = append(warnings, w...)
	if len(got.Spec.ImagePullSecrets) != 1 {
		t.Fatalf("precondition: pod not patched (warnings %v)", w)
	}

	// A failure whose body holds a token: it must be redacted everywhere.
	forgetInstance(t, "faulty", "artifactory-pull-faulty")
	restartWebhook(t, harness.PodIdentity)
	const bodyToken = "QWJDZEVmR2hJaktsTW5PcFFyU3RVdld4WXoxMjM0NTY3ODkwYWJjZGVmZ2hpamts"
	stack.Emu.Artifactory.SetStatus(401, `{"errors":[{"message":"token `+bodyToken+` revoked"}],"access_token":"`+bodyToken+`"}`)
	failNS := optedIn(t)
	_, w = createPod(t, failNS, pod("fail", stack.FaultyHost+"/team/app:1.0"))
	warnings = append(warnings, w...)
	stack.Emu.Artifactory.SetStatus(0, "")
	_, w = createPod(t, failNS, pod("recovered", stack.FaultyHost+"/team/app:1.0"))
	warnings = append(warnings, w...)

	sources := operatorView(t, warnings)
	if !strings.Contains(sources["admission warnings"], "faulty") || !strings.Contains(sources["Events"], "TokenExchangeFailed") {
		t.Fatalf("precondition: the failure left no warning or Event to search: %q", warnings)
	}
	searchForSecrets(t, sources, map[string]string{"a token in a rejected response": bodyToken})
}

// operatorView is everything an operator or a namespace owner can read:
// the webhook's log, its metrics, every Event and the admission warnings.
func operatorView(t *testing.T, warnings []string) map[string]string {
	t.Helper()
	metricsText, err := stack.Webhook.MetricsText()
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"webhook log":        stack.Webhook.Logs(),
		"metrics":            metricsText,
		"admission warnings": strings.Join(warnings, "\n"),
		"Events":             allEventText(t),
	}
}

// searchForSecrets fails t for every secret found in sources, in every
// form a log can hold it in: any token Artifactory issued, any AWS secret
// key or session token STS issued, any ServiceAccount token STS received,
// every dockerconfig auth value written, and extra.
func searchForSecrets(t *testing.T, sources map[string]string, extra map[string]string) {
	t.Helper()
	secrets := map[string]string{}
	maps.Copy(secrets, extra)
	for _, tok := range stack.Emu.Artifactory.IssuedTokens() {
		secrets["an issued access token"+" ("+tok[:4]+"…)"] = tok
	}
	for _, c := range stack.Emu.STS.IssuedCredentials() {
		secrets["an AWS secret key ("+c.AccessKeyID+")"] = c.SecretAccessKey
		secrets["an AWS session token ("+c.AccessKeyID+")"] = c.SessionToken
	}
	for i, jwt := range stack.Emu.STS.WebIdentityTokens() {
		secrets[fmt.Sprintf("a ServiceAccount token sent to STS (#%d)", i)] = jwt
	}
	for i, jwt := range stack.Emu.Artifactory.OIDCSubjectTokens() {
		secrets[fmt.Sprintf("an OIDC subject token sent to Artifactory (#%d)", i)] = jwt
	}
	for name, v := range dockerconfigAuths(t) {
		secrets["dockerconfig auth of "+name] = v
	}
	if len(stack.Emu.Artifactory.IssuedTokens()) == 0 || len(stack.Emu.STS.IssuedCredentials()) == 0 {
		t.Fatal("precondition: no token or AWS credentials were issued, the search proves nothing")
	}
	// Every form a log can hold a secret in, not only verbatim: a logged
	// Secret's Data is base64 of the dockerconfig, the token one decode away.
	names := make([]string, 0, len(secrets))
	values := make([]string, 0, len(secrets))
	for what, secret := range secrets {
		if len(leaktest.Forms(secret)) == 0 {
			t.Fatalf("precondition: %s is too short (%d bytes) to be searched for", what, len(secret))
		}
		names, values = append(names, what), append(values, secret)
	}
	for where, text := range sources {
		for _, f := range leaktest.Find(text, values...) {
			t.Errorf("%s contains %s: %s", where, names[f.Secret], f)
		}
	}
}

// TestPerServiceAccountPathLeaksNoServiceAccountTokenOrCredentials is the
// hygiene search over the per-ServiceAccount path: success, a ServiceAccount
// STS refuses, one without a role, and a refresh.
func TestPerServiceAccountPathLeaksNoServiceAccountTokenOrCredentials(t *testing.T) {
	run := runInstance("hy")
	startLifecycleWebhook(t, perSAConfig(run))
	a := newTeam(t, "a")
	createServiceAccount(t, a.ns, "api", map[string]string{config.RoleARNAnnotation: a.role})
	createServiceAccount(t, a.ns, "plain", nil)
	other := optedIn(t)
	createServiceAccount(t, other, "intruder", map[string]string{config.RoleARNAnnotation: a.role})
	var warnings []string
	for _, c := range []struct{ ns, sa string }{{a.ns, "api"}, {a.ns, "plain"}, {other, "intruder"}} {
		_, w := createPod(t, c.ns, podAs("p-"+c.sa, c.sa, a.image))
		warnings = append(warnings, w...)
	}
	api, _ := getSecret(t, a.ns, "team-"+run+"-api")
	old := token(t, api)
	eventually(t, 30*time.Second, "a refresh of the ServiceAccount's Secret", func() bool {
		s, ok := getSecret(t, a.ns, "team-"+run+"-api")
		return ok && token(t, s) != old
	})
	if len(stack.Emu.STS.WebIdentityTokens()) == 0 {
		t.Fatal("precondition: no ServiceAccount token reached STS")
	}
	sources := operatorView(t, warnings)
	if !strings.Contains(sources["admission warnings"], "AccessDenied") || !strings.Contains(sources["admission warnings"], "plain") {
		t.Fatalf("precondition: the refusal and the missing role left no warning to search: %q", warnings)
	}
	searchForSecrets(t, sources, nil)
}

// dockerconfigAuths returns the auth value of every managed Secret's
// dockerconfig, by Secret, and the token inside it.
func dockerconfigAuths(t *testing.T) map[string]string {
	t.Helper()
	var list corev1.SecretList
	if err := stack.Cluster.Client.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range list.Items {
		if s.Labels[pullsecret.ManagedByLabel] != pullsecret.ManagedByValue {
			continue
		}
		for _, h := range strings.Split(s.Annotations[pullsecret.AnnotationHosts], ",") {
			user, tok, err := pullsecret.ParseDockerConfigJSON(s.Data[corev1.DockerConfigJsonKey], h)
			if err != nil {
				continue
			}
			out[s.Namespace+"/"+s.Name] = base64.StdEncoding.EncodeToString([]byte(user + ":" + tok.Reveal()))
		}
	}
	return out
}

// allEventText is the reason and text of every Event in the cluster, in
// both APIs.
func allEventText(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	var list eventsv1.EventList
	if err := stack.Cluster.Client.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		b.WriteString(e.Reason + " " + e.Note + "\n")
	}
	var core corev1.EventList
	if err := stack.Cluster.Client.List(context.Background(), &core); err != nil {
		t.Fatal(err)
	}
	for _, e := range core.Items {
		b.WriteString(e.Reason + " " + e.Message + "\n")
	}
	return b.String()
}

// TestOIDCPathLeaksNoSubjectToken is the hygiene search over the OIDC
// exchange: success, a ServiceAccount no mapping matches (401), and a
// provider expecting another audience.
func TestOIDCPathLeaksNoSubjectToken(t *testing.T) {
	run := runInstance("ho")
	provider := "k8s-" + run
	stack.Emu.Artifactory.SetOIDCProvider(emulator.OIDCProvider{Name: provider, IssuerURL: stack.Cluster.Issuer(), Audience: stack.Emu.Artifactory.URL()})
	t.Cleanup(func() { stack.Emu.Artifactory.RemoveOIDCProvider(provider) })
	a := newOIDCTeam(t, provider, 1)
	createServiceAccount(t, a.ns, "api", nil)
	unmapped := optedIn(t)
	createServiceAccount(t, unmapped, "api", nil)
	startLifecycleWebhook(t, oidcConfig(run, provider, provider, "/nonexistent"))
	var warnings []string
	for _, ns := range []string{a.ns, unmapped} {
		_, w := createPod(t, ns, podAs("p", "api", a.image))
		warnings = append(warnings, w...)
	}
	if len(stack.Emu.Artifactory.OIDCSubjectTokens()) == 0 {
		t.Fatal("precondition: no subject token reached Artifactory")
	}
	sources := operatorView(t, warnings)
	if !strings.Contains(sources["admission warnings"], "HTTP 401") {
		t.Fatalf("precondition: the unmapped ServiceAccount left no warning to search: %q", warnings)
	}
	searchForSecrets(t, sources, nil)
}
