package e2e

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// TestServiceAccountRolesGetTheirOwnArtifactoryUsersOnlyWhenTrusted runs
// the credentials core of per-ServiceAccount identities (issue #11) against
// real components: ServiceAccount tokens from the API server's TokenRequest
// API, the STS emulator checking each against the API server's JWKS and the
// role's trust policy, and the Artifactory emulator replaying the signed
// GetCallerIdentity and mapping the assumed role to a user.
//
// Two ServiceAccounts of one role share one token and one exchange; another
// role is another user; a ServiceAccount that names a role whose trust
// policy does not name it gets nothing and costs no exchange.
func TestServiceAccountRolesGetTheirOwnArtifactoryUsersOnlyWhenTrusted(t *testing.T) {
	ctx := context.Background()
	cs, err := stack.Cluster.Clientset(nil)
	if err != nil {
		t.Fatal(err)
	}
	teamA, teamB := namespace(t, nil), namespace(t, nil)
	for _, sa := range []struct{ ns, name string }{{teamA, "api"}, {teamA, "worker"}, {teamB, "api"}} {
		if err := stack.Cluster.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: sa.ns, Name: sa.name}}); err != nil {
			t.Fatal(err)
		}
	}
	roleA := "arn:aws:iam::111122223333:role/" + teamA + "-puller"
	roleB := "arn:aws:iam::111122223333:role/" + teamB + "-puller"
	stack.Emu.STS.SetTrust(roleA, "system:serviceaccount:"+teamA+":*")
	stack.Emu.STS.SetTrust(roleB, "system:serviceaccount:"+teamB+":api")
	stack.Emu.Artifactory.SetMapping(roleA, "team-a-puller")
	stack.Emu.Artifactory.SetMapping(roleB, "team-b-puller")
	t.Cleanup(func() {
		stack.Emu.STS.SetTrust(roleA)
		stack.Emu.STS.SetTrust(roleB)
		stack.Emu.Artifactory.RemoveMapping(roleA)
		stack.Emu.Artifactory.RemoveMapping(roleB)
	})

	tokens := func(ctx context.Context, ns, name string) (string, error) {
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"sts.amazonaws.com"}, ExpirationSeconds: ptr.To[int64](600)},
		}, metav1.CreateOptions{})
		if err != nil {
			return "", err
		}
		return tr.Status.Token, nil
	}
	roles, err := credentials.NewRoleCredentials(credentials.AWSOptions{STSEndpoint: stack.Emu.STS.URL()}, tokens)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := credentials.NewHTTPClient(filepath.Join(stack.Dir, "artifactory-ca.pem"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := credentials.NewExchanger(credentials.ExchangeOptions{Instance: "per-sa", URL: stack.Emu.Artifactory.URL(),
		TTL: time.Hour, HTTPClient: hc,
		Credentials: awscreds.NewStaticCredentialsProvider("unused", "unused", "")}) // the webhook's own: not used here
	if err != nil {
		t.Fatal(err)
	}
	cache := credentials.NewCache(func(context.Context, credentials.Key) (credentials.Credential, error) {
		return credentials.Credential{}, errors.New("the webhook's own identity is not used here")
	}, credentials.CacheOptions{
		MintAs: func(ctx context.Context, _ credentials.Key, id credentials.Identity) (credentials.Credential, error) {
			return ex.ExchangeWith(ctx, roles.Provider(id))
		},
		Prove: roles.Prove,
	})
	identity := func(ns, name, role string) credentials.Identity {
		id, err := credentials.ServiceAccountIdentity(ns, name, map[string]string{credentials.RoleARNAnnotation: role}, "")
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	get := func(id credentials.Identity) (credentials.Credential, error) {
		return cache.GetAs(ctx, id, id.Key("per-sa", "fp"))
	}

	before := exchangesOf("team-a-puller", "team-b-puller")
	api, err := get(identity(teamA, "api", roleA))
	if err != nil || api.Username != "team-a-puller" {
		t.Fatalf("team A's api: %q, %v; want a token of team-a-puller", api.Username, err)
	}
	worker, err := get(identity(teamA, "worker", roleA))
	if err != nil || worker.Token.Reveal() != api.Token.Reveal() {
		t.Fatalf("team A's worker: %v; want the role's token, shared", err)
	}
	b, err := get(identity(teamB, "api", roleB))
	if err != nil || b.Username != "team-b-puller" || b.Token.Reveal() == api.Token.Reveal() {
		t.Fatalf("team B's api: %q, %v; want a token of team-b-puller of its own", b.Username, err)
	}
	if d := exchangesOf("team-a-puller", "team-b-puller") - before; d != 2 {
		t.Errorf("%d exchanges for three ServiceAccounts of two roles, want 2", d)
	}

	// Team B's ServiceAccount names team A's role: STS refuses it, and the
	// role's cached token is not handed out.
	intruder, err := get(identity(teamB, "api", roleA))
	if err == nil || !intruder.Token.IsZero() || !strings.Contains(err.Error(), "AccessDenied") || !strings.Contains(err.Error(), teamB+"/api") {
		t.Errorf("team B claiming team A's role: %v; want AccessDenied naming %s/api and no token", err, teamB)
	}
	// A ServiceAccount that does not exist (pods may come first): the
	// TokenRequest fails, naming it.
	if _, err := get(identity(teamA, "ghost", roleA)); err == nil || !strings.Contains(err.Error(), teamA+"/ghost") {
		t.Errorf("a missing ServiceAccount: %v; want an error naming it", err)
	}
	if d := exchangesOf("team-a-puller", "team-b-puller") - before; d != 2 {
		t.Errorf("refused ServiceAccounts cost %d exchanges, want none", d-2)
	}
}
