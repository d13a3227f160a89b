package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// perSAConfig has two instances minting per ServiceAccount: team (on the
// registry's own host, fallback none) and shared (on its localhost alias,
// fallback webhook). Tokens live 24 s and are refreshed at half-life, so a
// refresh happens within the test.
func perSAConfig(run string) string {
	return fmt.Sprintf(`instances:
- name: team%[1]s
  url: %[2]s
  registryHosts: [%[3]q]
  tokenTTL: 24s
  caBundle: %[5]s
  secretName: team-%[1]s
  identity: serviceAccount
- name: shared%[1]s
  url: %[2]s
  registryHosts: [%[4]q]
  tokenTTL: 24s
  caBundle: %[5]s
  secretName: shared-%[1]s
  identity: serviceAccount
  fallback: webhook
aws:
  authType: podIdentity
  stsEndpoint: %[6]s
refreshThreshold: 0.5
requestTimeout: 2s
provisionOnOptIn: false
backoffCap: 4s
`, run, stack.Emu.Artifactory.URL(), stack.Emu.Registry.Host(), stack.BurstHost,
		filepath.Join(stack.Dir, "artifactory-ca.pem"), stack.Emu.STS.URL())
}

// team is one tenant: a namespace, its IAM role (trusted by the
// namespace's ServiceAccounts), the Artifactory user the role is mapped to,
// and a repository only that user may pull.
type team struct {
	ns, role, user, repo, image string
}

func newTeam(t *testing.T, name string) team {
	t.Helper()
	return newTeamIn(t, optedIn(t), name)
}

// newTeamIn is newTeam in namespace ns.
func newTeamIn(t *testing.T, ns, name string) team {
	t.Helper()
	tm := team{ns: ns, role: "arn:aws:iam::111122223333:role/" + ns + "-" + name, user: ns + "-" + name + "-puller", repo: ns + "/app"}
	tm.image = stack.Emu.Registry.Host() + "/" + tm.repo + ":1.0"
	if _, err := stack.Emu.Registry.PushRandomImage(context.Background(), tm.repo, "1.0", stack.Emu.AdminUser, stack.Emu.AdminPassword); err != nil {
		t.Fatal(err)
	}
	stack.Emu.STS.SetTrust(tm.role, "system:serviceaccount:"+ns+":*")
	stack.Emu.Artifactory.SetMapping(tm.role, tm.user)
	stack.Emu.Artifactory.SetRepositoryPermissions(tm.user, ns+"/*")
	t.Cleanup(func() {
		stack.Emu.STS.SetTrust(tm.role)
		stack.Emu.Artifactory.RemoveMapping(tm.role)
		stack.Emu.Artifactory.ClearRepositoryPermissions(tm.user)
	})
	return tm
}

func createServiceAccount(t *testing.T, ns, name string, annotations map[string]string) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations}}
	if err := stack.Cluster.Client.Create(context.Background(), sa); err != nil {
		t.Fatal(err)
	}
}

func podAs(name, serviceAccount string, images ...string) *corev1.Pod {
	p := pod(name, images...)
	p.Spec.ServiceAccountName = serviceAccount
	return p
}

// TestEachServiceAccountPullsAsItsOwnRoleAndNothingElse runs issue #11's
// main scenario through admission: two teams, two roles, two Artifactory
// users with different repository permissions. Each pod's Secret is its
// ServiceAccount's, pulls its team's repository through the kubelet
// keychain and is denied the other team's; two ServiceAccounts of one role
// share one exchange; the refresher keeps per-ServiceAccount Secrets fresh
// and deletes them when their ServiceAccount goes or drops its role.
func TestEachServiceAccountPullsAsItsOwnRoleAndNothingElse(t *testing.T) {
	run := runInstance("sa")
	startLifecycleWebhook(t, perSAConfig(run))
	a, b := newTeam(t, "a"), newTeam(t, "b")
	role := func(tm team) map[string]string { return map[string]string{config.RoleARNAnnotation: tm.role} }
	createServiceAccount(t, a.ns, "api", role(a))
	createServiceAccount(t, a.ns, "worker", role(a))
	createServiceAccount(t, b.ns, "api", role(b))
	secret := "team-" + run

	before := exchangesOf(a.user, b.user)
	for _, tc := range []struct {
		tm, other team
		sa        string
	}{{a, b, "api"}, {b, a, "api"}} {
		got, warnings := createPod(t, tc.tm.ns, podAs("app", tc.sa, tc.tm.image))
		want := secret + "-" + tc.sa
		if n := pullSecretNames(got); !slices.Equal(n, []string{want}) {
			t.Fatalf("%s/%s: imagePullSecrets %v, want [%s] (warnings %v)", tc.tm.ns, tc.sa, n, want, warnings)
		}
		if len(warnings) != 0 {
			t.Errorf("warnings %v", warnings)
		}
		s, ok := getSecret(t, tc.tm.ns, want)
		if !ok || s.Labels[pullsecret.LabelPerServiceAccount] != "true" || s.Annotations[pullsecret.AnnotationServiceAccount] != tc.sa ||
			s.Annotations[pullsecret.AnnotationIdentity] != "role:"+tc.tm.role {
			t.Fatalf("Secret %s/%s: labels %v annotations %v", tc.tm.ns, want, s.Labels, s.Annotations)
		}
		if err := pull(tc.tm.ns, tc.tm.image, []string{want}); err != nil {
			t.Errorf("%s pulling its own team's image: %v", tc.tm.user, err)
		}
		if err := pull(tc.tm.ns, tc.other.image, []string{want}); err == nil {
			t.Errorf("%s pulled the other team's image %s", tc.tm.user, tc.other.image)
		}
	}
	if d := exchangesOf(a.user, b.user) - before; d != 2 {
		t.Errorf("%d exchanges for two roles, want 2", d)
	}

	// A second ServiceAccount of team A's role: its own Secret, the role's
	// token, no exchange. A second pod of it: warm.
	before = exchangesOf(a.user, b.user)
	for i := range 2 {
		got, _ := createPod(t, a.ns, podAs(fmt.Sprintf("worker%d", i), "worker", a.image))
		if n := pullSecretNames(got); !slices.Equal(n, []string{secret + "-worker"}) {
			t.Fatalf("worker: imagePullSecrets %v", n)
		}
	}
	if d := exchangesOf(a.user, b.user) - before; d != 0 {
		t.Errorf("%d exchanges for a second ServiceAccount of a role whose token is cached, want 0", d)
	}
	api, _ := getSecret(t, a.ns, secret+"-api")
	worker, _ := getSecret(t, a.ns, secret+"-worker")
	if token(t, api) == "" || token(t, api) != token(t, worker) {
		t.Error("two ServiceAccounts of one role do not share the role's token")
	}

	// The refresher rewrites per-ServiceAccount Secrets with a new token
	// past their refresh point (12 s), one exchange per role.
	old := token(t, api)
	eventually(t, 30*time.Second, "team A's Secrets refreshed", func() bool {
		api, _ := getSecret(t, a.ns, secret+"-api")
		worker, _ := getSecret(t, a.ns, secret+"-worker")
		return api != nil && worker != nil && token(t, api) != old && token(t, api) == token(t, worker)
	})
	api, _ = getSecret(t, a.ns, secret+"-api")
	if err := pull(a.ns, a.image, []string{secret + "-api"}); err != nil {
		t.Errorf("refreshed Secret: %v", err)
	}

	// Deleting a ServiceAccount deletes its Secret; one that drops its
	// role annotation loses its Secret too.
	if err := stack.Cluster.Client.Delete(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: "worker"}}); err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{}
	if err := stack.Cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: b.ns, Name: "api"}, sa); err != nil {
		t.Fatal(err)
	}
	delete(sa.Annotations, config.RoleARNAnnotation)
	if err := stack.Cluster.Client.Update(context.Background(), sa); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the Secrets of the deleted and the unannotated ServiceAccount deleted", func() bool {
		_, w := getSecret(t, a.ns, secret+"-worker")
		_, bb := getSecret(t, b.ns, secret+"-api")
		return !w && !bb
	})
	if _, ok := getSecret(t, a.ns, secret+"-api"); !ok {
		t.Error("team A's api Secret was deleted with another ServiceAccount's")
	}
}

// TestServiceAccountWithoutRoleGetsTheConfiguredFallback: without a role
// annotation, fallback none gives no Secret and a warning saying what to
// annotate; fallback webhook gives the webhook's own Secret. Once the
// ServiceAccount is annotated, the next pod gets its own Secret. A
// ServiceAccount created just before its pod (not yet in the webhook's
// cache) is read from the API server.
func TestServiceAccountWithoutRoleGetsTheConfiguredFallback(t *testing.T) {
	run := runInstance("fb")
	startLifecycleWebhook(t, perSAConfig(run))
	a := newTeam(t, "a")
	createServiceAccount(t, a.ns, "plain", nil)
	sharedImage := stack.BurstHost + "/" + harness.ImageRepo + ":" + harness.ImageTag

	got, warnings := createPod(t, a.ns, podAs("plain", "plain", a.image, sharedImage))
	if n := pullSecretNames(got); !slices.Equal(n, []string{"shared-" + run}) {
		t.Errorf("imagePullSecrets %v, want only the webhook's Secret of the fallback-webhook instance", n)
	}
	w := strings.Join(warnings, "\n")
	for _, want := range []string{"no pull secret for instance team" + run + ", which pulls as the pod's ServiceAccount",
		"ServiceAccount " + a.ns + "/plain has no eks.amazonaws.com/role-arn annotation",
		"annotate ServiceAccount plain with eks.amazonaws.com/role-arn: <IAM role ARN>, or set the instance's fallback: webhook"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q do not say %q", warnings, want)
		}
	}
	if err := pull(a.ns, sharedImage, []string{"shared-" + run}); err != nil {
		t.Errorf("the fallback Secret: %v", err)
	}

	// Annotated later: the next pod gets its own Secrets.
	sa := &corev1.ServiceAccount{}
	if err := stack.Cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: a.ns, Name: "plain"}, sa); err != nil {
		t.Fatal(err)
	}
	sa.Annotations = map[string]string{config.RoleARNAnnotation: a.role}
	if err := stack.Cluster.Client.Update(context.Background(), sa); err != nil {
		t.Fatal(err)
	}
	want := []string{"team-" + run + "-plain", "shared-" + run + "-plain"}
	eventually(t, 10*time.Second, "a pod of the annotated ServiceAccount getting its own Secrets", func() bool {
		got, _ := createPod(t, a.ns, podAs(fmt.Sprintf("plain-%d", time.Now().UnixNano()%1e6), "plain", a.image, sharedImage))
		return slices.Equal(pullSecretNames(got), want)
	})
	if err := pull(a.ns, a.image, want[:1]); err != nil {
		t.Errorf("the ServiceAccount's own Secret: %v", err)
	}

	// Created right before its pod: read from the API server if the
	// informer has not seen it yet; never a missing-ServiceAccount warning.
	for i := range 3 {
		name := fmt.Sprintf("fresh%d", i)
		createServiceAccount(t, a.ns, name, map[string]string{config.RoleARNAnnotation: a.role})
		got, warnings := createPod(t, a.ns, podAs(name, name, a.image))
		if n := pullSecretNames(got); !slices.Equal(n, []string{"team-" + run + "-" + name}) {
			t.Errorf("pod of a ServiceAccount created just before: imagePullSecrets %v, warnings %v", n, warnings)
		}
	}
}

// TestServiceAccountNamingAnotherTeamsRoleGetsNothing: a ServiceAccount
// annotated with a role whose trust policy does not name it is refused by
// STS; the pod is admitted without a Secret, the warning names the
// ServiceAccount, the role and STS's reason, and the role's cached token is
// not handed out.
func TestServiceAccountNamingAnotherTeamsRoleGetsNothing(t *testing.T) {
	run := runInstance("in")
	startLifecycleWebhook(t, perSAConfig(run))
	a, b := newTeam(t, "a"), newTeam(t, "b")
	createServiceAccount(t, a.ns, "api", map[string]string{config.RoleARNAnnotation: a.role})
	createServiceAccount(t, b.ns, "intruder", map[string]string{config.RoleARNAnnotation: a.role})
	if got, w := createPod(t, a.ns, podAs("app", "api", a.image)); len(pullSecretNames(got)) != 1 {
		t.Fatalf("team A's own pod: %v %v", pullSecretNames(got), w)
	}
	before := exchangesOf(a.user, b.user)
	got, warnings := createPod(t, b.ns, podAs("app", "intruder", a.image))
	if n := pullSecretNames(got); len(n) != 0 {
		t.Errorf("a ServiceAccount naming another team's role got %v", n)
	}
	w := strings.Join(warnings, "\n")
	for _, want := range []string{"as ServiceAccount intruder (role " + a.role + ")", "AccessDenied"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q do not say %q", warnings, want)
		}
	}
	if _, ok := getSecret(t, b.ns, "team-"+run+"-intruder"); ok {
		t.Error("a Secret was written for the refused ServiceAccount")
	}
	if d := exchangesOf(a.user, b.user) - before; d != 0 {
		t.Errorf("a refused ServiceAccount cost %d exchanges", d)
	}
}

// TestAssumeRoleIsChainedOnEitherIdentity: with aws.assumeRole, the role
// resolved for a pod — its ServiceAccount's, or the webhook's own through
// fallback webhook — assumes a central role (sts:AssumeRole, checked by
// the STS emulator against the central role's trust policy and external
// ID), and Artifactory sees only the central role: one mapping serves every
// source role.
func TestAssumeRoleIsChainedOnEitherIdentity(t *testing.T) {
	run := runInstance("ch")
	a := newTeam(t, "a")
	central := "arn:aws:iam::444455556666:role/" + a.ns + "-central-puller"
	centralUser := a.ns + "-central"
	stack.Emu.STS.SetAssumeTrust(central, "fleet-"+run, a.role, stack.Emu.RoleARN)
	stack.Emu.Artifactory.SetMapping(central, centralUser)
	stack.Emu.Artifactory.RemoveMapping(a.role) // the team's own role gets nothing directly
	t.Cleanup(func() {
		stack.Emu.STS.SetAssumeTrust(central, "")
		stack.Emu.Artifactory.RemoveMapping(central)
	})
	cfg := strings.Replace(perSAConfig(run), "  fallback: webhook\n", "  fallback: webhook\n  aws:\n    assumeRole: {roleARN: \""+central+"\", externalID: fleet-"+run+"}\n", 1)
	startLifecycleWebhook(t, cfg)
	createServiceAccount(t, a.ns, "api", map[string]string{config.RoleARNAnnotation: a.role})
	createServiceAccount(t, a.ns, "plain", nil)
	sharedImage := stack.BurstHost + "/" + harness.ImageRepo + ":" + harness.ImageTag

	for _, c := range []struct{ sa, secret string }{{"api", "shared-" + run + "-api"}, {"plain", "shared-" + run}} {
		got, warnings := createPod(t, a.ns, podAs("p-"+c.sa, c.sa, sharedImage))
		if n := pullSecretNames(got); !slices.Equal(n, []string{c.secret}) {
			t.Fatalf("ServiceAccount %s: imagePullSecrets %v, want [%s] (warnings %v)", c.sa, n, c.secret, warnings)
		}
		s, _ := getSecret(t, a.ns, c.secret)
		user, _, err := pullsecret.ParseDockerConfigJSON(s.Data[corev1.DockerConfigJsonKey], stack.BurstHost)
		if err != nil || user != centralUser {
			t.Errorf("ServiceAccount %s: Secret of user %q (%v), want the central role's %q", c.sa, user, err, centralUser)
		}
		if err := pull(a.ns, sharedImage, []string{c.secret}); err != nil {
			t.Errorf("ServiceAccount %s: %v", c.sa, err)
		}
	}
	// The instance without assumeRole is unaffected: the team's role, not
	// mapped here, gets no token.
	got, warnings := createPod(t, a.ns, podAs("p-direct", "api", a.image))
	if n := pullSecretNames(got); len(n) != 0 || !strings.Contains(strings.Join(warnings, " "), "as ServiceAccount api") {
		t.Errorf("instance without assumeRole: %v, warnings %v; want no Secret and a warning (its role is not mapped)", n, warnings)
	}
}

// exchangesOf is the number of tokens Artifactory issued for users: other
// webhooks of the suite (a refresher starting after a restart) exchange
// for other users meanwhile.
func exchangesOf(users ...string) int {
	n := 0
	for _, u := range users {
		n += stack.Emu.Artifactory.ExchangesFor(u)
	}
	return n
}

// TestPodsNamingAMissingServiceAccountFailOpenWithoutATokenRequestStorm:
// pods may be created before their ServiceAccount (the API server admits
// them). They are admitted with a warning naming the ServiceAccount, the
// fallback-webhook instance gives its own Secret, and a burst of them asks
// STS nothing (no TokenRequest is made for a ServiceAccount found nowhere).
func TestPodsNamingAMissingServiceAccountFailOpenWithoutATokenRequestStorm(t *testing.T) {
	run := runInstance("ms")
	startLifecycleWebhook(t, perSAConfig(run))
	a := newTeam(t, "a")
	sharedImage := stack.BurstHost + "/" + harness.ImageRepo + ":" + harness.ImageTag
	sent := len(stack.Emu.STS.WebIdentityTokens())
	for i := range 5 {
		got, warnings := createPod(t, a.ns, podAs(fmt.Sprintf("ghost%d", i), "ghost", a.image, sharedImage))
		if n := pullSecretNames(got); !slices.Equal(n, []string{"shared-" + run}) {
			t.Errorf("pod of a missing ServiceAccount: imagePullSecrets %v, want only the fallback-webhook instance's", n)
		}
		if w := strings.Join(warnings, "\n"); !strings.Contains(w, "ServiceAccount not found: "+a.ns+"/ghost") {
			t.Errorf("warnings %q do not name the missing ServiceAccount", warnings)
		}
	}
	if d := len(stack.Emu.STS.WebIdentityTokens()) - sent; d != 0 {
		t.Errorf("%d ServiceAccount tokens sent to STS for pods of a missing ServiceAccount, want none", d)
	}
	if _, ok := getSecret(t, a.ns, "team-"+run+"-ghost"); ok {
		t.Error("a Secret was written for a missing ServiceAccount")
	}
	// Once it exists (with its role), the next pod gets its own Secret.
	createServiceAccount(t, a.ns, "ghost", map[string]string{config.RoleARNAnnotation: a.role})
	eventually(t, 15*time.Second, "a pod of the now created ServiceAccount getting its Secret", func() bool {
		got, _ := createPod(t, a.ns, podAs(fmt.Sprintf("ghost-%d", time.Now().UnixNano()%1e6), "ghost", a.image))
		return slices.Equal(pullSecretNames(got), []string{"team-" + run + "-ghost"})
	})
}
