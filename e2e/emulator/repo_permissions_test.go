package emulator

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	corev1 "k8s.io/api/core/v1"
)

// userToken exchanges a signed GetCallerIdentity of env's role for an access token of env.Username.
func userToken(t *testing.T, env *Env) tokenAnswer {
	t.Helper()
	creds := env.STS.IssueCredentials(env.RoleARN, "webhook", time.Hour)
	f := &exchangeFixture{art: env.Artifactory}
	status, body := f.exchange(t, TokenExchangePath, signGetCallerIdentity(t, creds, "sts.amazonaws.com", "*", time.Now()), `{"expires_in": 600}`)
	if status != http.StatusOK {
		t.Fatalf("exchange: %d %s", status, body)
	}
	var tok tokenAnswer
	if err := json.Unmarshal([]byte(body), &tok); err != nil {
		t.Fatal(err)
	}
	return tok
}

// realmGrants asks the Docker token realm for scopes as user:pass and returns the granted actions
// by repository, from the (verified) registry token.
func realmGrants(t *testing.T, art *Artifactory, user, pass string, scopes ...string) map[string][]string {
	t.Helper()
	q := url.Values{"service": {RegistryService}, "scope": scopes}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, art.URL()+"/v2/token?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, pass)
	resp, err := art.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("realm answered %s", resp.Status)
	}
	var answer struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseSigned(answer.Token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Access []resourceActions `json:"access"`
	}
	if err := tok.Claims(&art.key.PublicKey, &claims); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, ra := range claims.Access {
		out[ra.Name] = ra.Actions
	}
	return out
}

func TestRepositoryPermissionsThroughTheRegistry(t *testing.T) {
	env, err := Start(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	for _, repo := range []string{"team-a/app", "team-b/app", "libs/base", "libs/x/y"} {
		if _, err := env.Registry.PushRandomImage(t.Context(), repo, "v1", env.AdminUser, env.AdminPassword); err != nil {
			t.Fatalf("admin push %s: %v", repo, err)
		}
	}
	tok := userToken(t, env)
	host := env.Registry.Host()
	secrets := []corev1.Secret{pullSecret(t, host, tok.Username, tok.AccessToken)}
	pull := func(repo string) error { return env.Registry.PullManifest(t.Context(), host+"/"+repo+":v1", secrets) }

	// No permissions set: today's behaviour, every repository.
	for _, repo := range []string{"team-a/app", "team-b/app"} {
		if err := pull(repo); err != nil {
			t.Fatalf("unrestricted user pulling %s: %v", repo, err)
		}
	}

	env.Artifactory.SetRepositoryPermissions(env.Username, "team-a/app", "libs/*")
	for _, tc := range []struct {
		repo    string
		allowed bool
	}{
		{"team-a/app", true},
		{"libs/base", true},
		{"libs/x/y", true},
		{"team-b/app", false},
	} {
		err := pull(tc.repo)
		t.Logf("pull %s: %v", tc.repo, err)
		switch {
		case tc.allowed && err != nil:
			t.Errorf("user permitted %s could not pull it: %v", tc.repo, err)
		case !tc.allowed && err == nil:
			t.Errorf("user not permitted %s pulled it", tc.repo)
		case !tc.allowed && !strings.Contains(err.Error(), "UNAUTHORIZED"):
			t.Errorf("pull of %s failed with %v, want the registry's UNAUTHORIZED", tc.repo, err)
		}
	}

	// Permissions are the user's: the admin still pushes anywhere.
	if _, err := env.Registry.PushRandomImage(t.Context(), "team-b/app", "v2", env.AdminUser, env.AdminPassword); err != nil {
		t.Errorf("admin push while the user is restricted: %v", err)
	}

	env.Artifactory.SetRepositoryPermissions(env.Username)
	if err := pull("team-a/app"); err == nil {
		t.Error("user with no permitted repositories pulled team-a/app")
	}

	env.Artifactory.ClearRepositoryPermissions(env.Username)
	if err := pull("team-b/app"); err != nil {
		t.Errorf("after ClearRepositoryPermissions: %v", err)
	}
}

func TestRepositoryPermissionsInRealmTokens(t *testing.T) {
	env, err := Start(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	tok := userToken(t, env)
	art := env.Artifactory
	art.SetRepositoryPermissions(env.Username, "team/app", "libs/*")

	got := realmGrants(t, art, tok.Username, tok.AccessToken,
		"repository:team/app:pull,push",
		"repository:team/app-other:pull repository:team/app/sub:pull",
		"repository:libs/base:pull", "repository:libs/x/y:pull", "repository:libs:pull", "repository:libsx/y:pull",
		"repository:TEAM/APP:pull")
	want := map[string][]string{
		"team/app":       {"pull"}, // push is the admin's only
		"team/app-other": {},       // exact names are not prefixes
		"team/app/sub":   {},
		"libs/base":      {"pull"},
		"libs/x/y":       {"pull"}, // a /* pattern covers any depth
		"libs":           {},       // but not the prefix itself
		"libsx/y":        {},
		"TEAM/APP":       {},
	}
	if len(got) != len(want) {
		t.Errorf("granted %v, want %v", got, want)
	}
	for repo, actions := range want {
		if !slices.Equal(got[repo], actions) {
			t.Errorf("granted %s %v, want %v", repo, got[repo], actions)
		}
	}

	// Restricting the admin limits every action of the admin.
	art.SetRepositoryPermissions(env.AdminUser, "seed/*")
	admin := realmGrants(t, art, env.AdminUser, env.AdminPassword, "repository:seed/img:pull,push", "repository:team/app:pull,push")
	if !slices.Equal(admin["seed/img"], []string{"pull", "push"}) || len(admin["team/app"]) != 0 {
		t.Errorf("restricted admin granted %v, want pull,push on seed/img only", admin)
	}
	art.ClearRepositoryPermissions(env.AdminUser)
	if admin := realmGrants(t, art, env.AdminUser, env.AdminPassword, "repository:team/app:pull,push"); !slices.Equal(admin["team/app"], []string{"pull", "push"}) {
		t.Errorf("admin after ClearRepositoryPermissions granted %v", admin)
	}

	for _, bad := range []string{"*", "/*", "team*", "team/*/x", "team/", ""} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("SetRepositoryPermissions accepted pattern %q", bad)
				}
			}()
			art.SetRepositoryPermissions("someone", bad)
		}()
	}
}
