package credentials

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
)

const (
	teamARole = "arn:aws:iam::123456789012:role/team-a-puller"
	teamBRole = "arn:aws:iam::123456789012:role/team-b-puller"
)

func TestIdentityKeysTheCacheByRoleNotByServiceAccount(t *testing.T) {
	a := Identity{RoleARN: teamARole, Namespace: "team-a", ServiceAccount: "api"}
	a2 := Identity{RoleARN: teamARole, Namespace: "team-a", ServiceAccount: "worker"}
	b := Identity{RoleARN: teamBRole, Namespace: "team-b", ServiceAccount: "api"}
	if a.Key("main", "fp") != a2.Key("main", "fp") {
		t.Error("two ServiceAccounts of one role have different cache keys: they would mint twice")
	}
	if a.Key("main", "fp") == b.Key("main", "fp") || a.Key("main", "fp") == (Identity{}).Key("main", "fp") {
		t.Error("different roles, or a role and the webhook, share a cache key")
	}
	if got := (Identity{}).Key("main", "fp"); got != (Key{Instance: "main", Identity: WebhookIdentity, Fingerprint: "fp"}) {
		t.Errorf("webhook identity key = %+v, want today's key", got)
	}
	if !(Identity{}).IsWebhook() || a.IsWebhook() {
		t.Error("IsWebhook is wrong")
	}
	if s := a.String(); !strings.Contains(s, teamARole) || !strings.Contains(s, "team-a/api") {
		t.Errorf("String() = %q, want the role and the ServiceAccount", s)
	}
}

func TestSessionNameIsValidForSTSAndNamesTheServiceAccount(t *testing.T) {
	long := strings.Repeat("n", 63)
	for _, tc := range []struct {
		id   Identity
		want string
	}{
		{Identity{RoleARN: teamARole, Namespace: "team-a", ServiceAccount: "api"}, "apw@team-a.api"},
	} {
		got := SessionName(tc.id)
		if got != tc.want || len(got) > 64 || !strings.ContainsAny(got, "@") {
			t.Errorf("SessionName(%s/%s) = %q, want %q", tc.id.Namespace, tc.id.ServiceAccount, got, tc.want)
		}
	}
	// A long namespace: cut to 64, and two ServiceAccounts in it stay apart.
	a := SessionName(Identity{RoleARN: teamARole, Namespace: long, ServiceAccount: "api"})
	b := SessionName(Identity{RoleARN: teamARole, Namespace: long, ServiceAccount: "worker"})
	if len(a) != 64 || len(b) != 64 || a == b || !strings.HasPrefix(a, "apw@nnn") {
		t.Errorf("long-namespace session names %q and %q: want 64 characters each, distinct", a, b)
	}
}

// fakeSTS answers AssumeRoleWithWebIdentity with the test credentials for
// the tokens it was given, as STS would after checking the role's trust
// policy (the e2e STS emulator checks that part).
type fakeSTS struct {
	mu          sync.Mutex
	calls       []url.Values
	deny        bool
	unavailable bool      // answer 503, as STS does under load
	expiration  time.Time // of the credentials; 2030-01-01 when zero
}

func (f *fakeSTS) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeSTS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.calls = append(f.calls, r.PostForm)
	deny, unavailable, expiration := f.deny, f.unavailable, f.expiration
	f.mu.Unlock()
	if expiration.IsZero() {
		expiration = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	w.Header().Set("Content-Type", "text/xml")
	if unavailable {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `<ErrorResponse><Error><Type>Receiver</Type><Code>ServiceUnavailable</Code><Message>try again</Message></Error><RequestId>r</RequestId></ErrorResponse>`)
		return
	}
	if deny || r.PostForm.Get("Action") != "AssumeRoleWithWebIdentity" {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error><RequestId>r</RequestId></ErrorResponse>`)
		return
	}
	fmt.Fprintf(w, `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult>
<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey><SessionToken>%s</SessionToken><Expiration>%s</Expiration></Credentials>
<AssumedRoleUser><Arn>x</Arn><AssumedRoleId>y</AssumedRoleId></AssumedRoleUser></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>`,
		testAccessKey, testSecretKey, testSessionToken, expiration.Format(time.RFC3339))
}

func TestExchangeAsAServiceAccountAssumesItsRoleWithItsToken(t *testing.T) {
	stsFake := &fakeSTS{}
	stsSrv := httptest.NewServer(stsFake)
	t.Cleanup(stsSrv.Close)
	var asked []string
	tokens := func(_ context.Context, ns, name string) (string, error) {
		asked = append(asked, ns+"/"+name)
		if name == "missing" {
			return "", errors.New(`serviceaccounts "missing" not found`)
		}
		return "jwt-of-" + ns + "-" + name, nil
	}
	roles, err := NewRoleCredentials(AWSOptions{STSEndpoint: stsSrv.URL}, tokens)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeArtifactory(t)
	e := newTestExchanger(t, f, nil)
	id := Identity{RoleARN: teamARole, Namespace: "team-a", ServiceAccount: "api"}

	cred, err := e.ExchangeWith(context.Background(), roles.Provider(id))
	if err != nil || cred.Token.Reveal() != testRawToken {
		t.Fatalf("ExchangeWith = %v; want the token, signed with the role's credentials", err)
	}
	if len(stsFake.calls) != 1 {
		t.Fatalf("%d STS calls, want 1", len(stsFake.calls))
	}
	call := stsFake.calls[0]
	if call.Get("RoleArn") != teamARole || call.Get("WebIdentityToken") != "jwt-of-team-a-api" ||
		call.Get("RoleSessionName") != "apw@team-a.api" || call.Get("DurationSeconds") != "3600" {
		t.Errorf("AssumeRoleWithWebIdentity form = %v", call)
	}

	// The reasons a ServiceAccount's exchange fails name it and its role.
	missing := Identity{RoleARN: teamARole, Namespace: "team-a", ServiceAccount: "missing"}
	if _, err := e.ExchangeWith(context.Background(), roles.Provider(missing)); err == nil ||
		!strings.Contains(err.Error(), "ServiceAccount team-a/missing") || FailureClass(err) != "credentials" {
		t.Errorf("exchange without a ServiceAccount token: %v (class %s)", err, FailureClass(err))
	}
	stsFake.deny = true
	other := Identity{RoleARN: teamARole, Namespace: "team-b", ServiceAccount: "api"}
	if _, err := e.ExchangeWith(context.Background(), roles.Provider(other)); err == nil ||
		!strings.Contains(err.Error(), "AccessDenied") || !strings.Contains(err.Error(), teamARole) {
		t.Errorf("exchange with the role's trust denied: %v", err)
	}
	if _, err := roles.Provider(Identity{}).Retrieve(context.Background()); err == nil {
		t.Error("RoleCredentials gave credentials for the webhook's own identity")
	}
	if len(asked) != 3 {
		t.Errorf("ServiceAccount tokens asked %v, want one per ServiceAccount", asked)
	}
}

// A proof holds while the credentials STS answered do, and is the
// ServiceAccount's own: another ServiceAccount of the role proves itself.
func TestProveIsPerServiceAccountAndLastsAsLongAsItsCredentials(t *testing.T) {
	stsFake := &fakeSTS{}
	stsSrv := httptest.NewServer(stsFake)
	t.Cleanup(stsSrv.Close)
	roles, err := NewRoleCredentials(AWSOptions{STSEndpoint: stsSrv.URL}, func(_ context.Context, ns, name string) (string, error) {
		return "jwt-of-" + ns + "-" + name, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2029, 12, 31, 0, 0, 0, 0, time.UTC) // kept until now + 1h (the fake says 2030)
	roles.now = func() time.Time { return now }
	reg := prometheus.NewRegistry()
	roles.Metrics = metrics.New(reg)
	api := Identity{RoleARN: teamARole, Namespace: "team-a", ServiceAccount: "api"}
	worker := Identity{RoleARN: teamARole, Namespace: "team-a", ServiceAccount: "worker"}
	ctx := context.Background()
	for range 3 {
		if err := roles.Prove(ctx, api); err != nil {
			t.Fatal(err)
		}
	}
	if stsFake.count() != 1 {
		t.Fatalf("%d STS calls for three proofs of one ServiceAccount, want 1", stsFake.count())
	}
	if err := roles.Prove(ctx, worker); err != nil || stsFake.count() != 2 {
		t.Fatalf("proof of a second ServiceAccount: %v, %d STS calls; want its own call", err, stsFake.count())
	}
	// Near the credentials' expiry (kept at most an hour), STS failing for
	// a while: the proof holds until they expire.
	now = now.Add(59 * time.Minute)
	stsFake.mu.Lock()
	stsFake.unavailable = true
	stsFake.mu.Unlock()
	if err := roles.Prove(ctx, api); err != nil || stsFake.count() < 3 {
		t.Errorf("proof while STS is unavailable: %v, %d STS calls; want the kept proof after a new call", err, stsFake.count())
	}
	// With the trust withdrawn: refused, and not kept.
	stsFake.mu.Lock()
	stsFake.unavailable, stsFake.deny = false, true
	stsFake.mu.Unlock()
	if err := roles.Prove(ctx, api); err == nil {
		t.Error("proof after the trust was withdrawn succeeded")
	}
	// Asked again at once (a burst of pods): the refusal is answered from
	// memory, no TokenRequest, no STS call.
	stsFake.mu.Lock()
	stsFake.deny = false
	stsFake.mu.Unlock()
	before := stsFake.count()
	if err := roles.Prove(ctx, api); err == nil || !strings.Contains(err.Error(), "AccessDenied") || stsFake.count() != before {
		t.Errorf("proof right after a refusal: %v, %d new STS calls; want the refusal again and no call", err, stsFake.count()-before)
	}
	// Once the memory lapses it asks anew — the refused proof's credentials
	// were not kept, though they had not expired.
	now = now.Add(refusalMemory)
	if err := roles.Prove(ctx, api); err != nil || stsFake.count() != before+1 {
		t.Errorf("proof after a refusal: %v, %d new STS calls; want a new proof, not the refused one kept", err, stsFake.count()-before)
	}
	// Every STS call counted once, the role named on success only.
	for _, c := range []struct {
		role, result string
		want         float64
	}{{teamARole, "success", 3}, {metrics.RoleUnproven, metrics.RoleError, 1}, {metrics.RoleUnproven, metrics.RoleRefused, 1}} {
		m := findMetric(t, reg, "artifactory_pull_role_assumptions_total", map[string]string{"role": c.role, "result": c.result})
		if m == nil || m.GetCounter().GetValue() != c.want {
			t.Errorf("role_assumptions_total{role=%q,result=%q} = %v, want %v", c.role, c.result, m.GetCounter().GetValue(), c.want)
		}
	}
	if m := findMetric(t, reg, "artifactory_pull_role_assumptions_total", map[string]string{"role": teamARole, "result": metrics.RoleRefused}); m != nil {
		t.Error("a refused role is named in a label: annotations could add series at will")
	}
}

func TestCacheGetAsMintsAsTheServiceAccountOnceForItsRole(t *testing.T) {
	clock := &fakeClock{now: exchangeNow}
	m := &countingMint{clock: clock, lifetime: 60 * 60e9}
	var as []Identity
	untrusted := Identity{RoleARN: teamARole, Namespace: "team-b", ServiceAccount: "claims-team-a"}
	c := NewCache(m.mint, CacheOptions{Now: clock.Now,
		MintAs: func(ctx context.Context, k Key, id Identity) (Credential, error) {
			as = append(as, id)
			return m.mint(ctx, k)
		},
		Prove: func(_ context.Context, id Identity) error {
			if id == untrusted {
				return errors.New("AccessDenied: not authorized to perform sts:AssumeRoleWithWebIdentity")
			}
			return nil
		}})
	api := Identity{RoleARN: teamARole, Namespace: "team-a", ServiceAccount: "api"}
	worker := Identity{RoleARN: teamARole, Namespace: "team-a", ServiceAccount: "worker"}
	if _, err := c.GetAs(context.Background(), api, api.Key("main", "fp")); err != nil || len(as) != 1 || as[0] != api {
		t.Fatalf("GetAs: %v, minted as %v; want once as team-a/api", err, as)
	}
	// Cached for the role: another ServiceAccount of it mints nothing.
	if _, err := c.GetAs(context.Background(), worker, worker.Key("main", "fp")); err != nil || len(as) != 1 || m.calls.Load() != 1 {
		t.Errorf("GetAs for a second ServiceAccount of the role: %v, minted as %v; want the cached token", err, as)
	}
	// A ServiceAccount that names the role but may not assume it gets
	// nothing, and takes nothing from the others: no mint, no backoff.
	if got, err := c.GetAs(context.Background(), untrusted, untrusted.Key("main", "fp")); err == nil || !got.Token.IsZero() {
		t.Errorf("GetAs for an untrusted ServiceAccount = %v, %v; want a refusal", got.Token.IsZero(), err)
	}
	clock.Advance(50 * time.Minute) // due: the next GetAs mints
	if _, err := c.GetAs(context.Background(), api, api.Key("main", "fp")); err != nil || len(as) != 2 {
		t.Errorf("GetAs after a refused proof: %v, mints as %v; want a mint as team-a/api, not a backoff", err, as)
	}
	// Without MintAs a role is never minted with the webhook's credentials.
	bare := NewCache(m.mint, CacheOptions{Now: clock.Now})
	if _, err := bare.GetAs(context.Background(), api, api.Key("main", "fp")); err == nil || m.calls.Load() != 2 {
		t.Errorf("GetAs without MintAs: %v, mints %d; want an error and no mint", err, m.calls.Load())
	}
	// The webhook's own identity mints with the MintFunc.
	if _, err := c.GetAs(context.Background(), Identity{}, Identity{}.Key("main", "fp")); err != nil || len(as) != 2 || m.calls.Load() != 3 {
		t.Errorf("GetAs for the webhook: %v, MintAs calls %d, mints %d; want the MintFunc", err, len(as), m.calls.Load())
	}
}

func TestServiceAccountIdentityReadsIRSAsAnnotationAndTheOptIn(t *testing.T) {
	role := map[string]string{RoleARNAnnotation: teamARole}
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		optIn       string
		wantRole    string
		wantNoRole  bool
		wantErr     string
	}{
		{name: "role", annotations: role, wantRole: teamARole},
		{name: "no annotation", annotations: nil, wantNoRole: true, wantErr: "has no eks.amazonaws.com/role-arn annotation"},
		{name: "empty role", annotations: map[string]string{RoleARNAnnotation: ""}, wantNoRole: true, wantErr: "has no"},
		{name: "not an ARN", annotations: map[string]string{RoleARNAnnotation: "team-a-puller"}, wantErr: "not an IAM role ARN"},
		{name: "a user ARN", annotations: map[string]string{RoleARNAnnotation: "arn:aws:iam::123456789012:user/bob"}, wantErr: "not an IAM role ARN"},
		{name: "GovCloud role with a path", annotations: map[string]string{RoleARNAnnotation: "arn:aws-us-gov:iam::123456789012:role/pull/team-a"},
			wantRole: "arn:aws-us-gov:iam::123456789012:role/pull/team-a"},
		{name: "a path with punctuation IAM allows", annotations: map[string]string{RoleARNAnnotation: "arn:aws:iam::123456789012:role/team#1!/(ci)/puller"},
			wantRole: "arn:aws:iam::123456789012:role/team#1!/(ci)/puller"},
		{name: "a name longer than 64", annotations: map[string]string{RoleARNAnnotation: "arn:aws:iam::123456789012:role/" + strings.Repeat("n", 65)},
			wantErr: "not an IAM role ARN"},
		{name: "a space in the path", annotations: map[string]string{RoleARNAnnotation: "arn:aws:iam::123456789012:role/a b/puller"},
			wantErr: "not an IAM role ARN"},
		{name: "opt-in required and given", annotations: map[string]string{RoleARNAnnotation: teamARole, "JFrogExchange": "true"},
			optIn: "JFrogExchange", wantRole: teamARole},
		{name: "opt-in required and missing", annotations: role, optIn: "JFrogExchange", wantNoRole: true,
			wantErr: `does not carry the annotation JFrogExchange: "true"`},
		{name: "opt-in false", annotations: map[string]string{RoleARNAnnotation: teamARole, "JFrogExchange": "false"},
			optIn: "JFrogExchange", wantNoRole: true, wantErr: "JFrogExchange"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := ServiceAccountIdentity("team-a", "api", tc.annotations, tc.optIn)
			if tc.wantRole != "" {
				if err != nil || id.RoleARN != tc.wantRole || id.Namespace != "team-a" || id.ServiceAccount != "api" {
					t.Fatalf("= %+v, %v; want role %s", id, err, tc.wantRole)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "team-a/api") ||
				errors.Is(err, ErrNoRole) != tc.wantNoRole {
				t.Errorf("err = %v; want one containing %q naming team-a/api (ErrNoRole: %v)", err, tc.wantErr, tc.wantNoRole)
			}
		})
	}
}

// Credentials that STS says expire sooner than an hour end the proof then.
func TestProveEndsWhenSTSSaysTheCredentialsExpire(t *testing.T) {
	now := time.Date(2029, 6, 1, 0, 0, 0, 0, time.UTC)
	stsFake := &fakeSTS{expiration: now.Add(10 * time.Minute)}
	stsSrv := httptest.NewServer(stsFake)
	t.Cleanup(stsSrv.Close)
	roles, err := NewRoleCredentials(AWSOptions{STSEndpoint: stsSrv.URL}, func(context.Context, string, string) (string, error) { return "jwt", nil })
	if err != nil {
		t.Fatal(err)
	}
	roles.now = func() time.Time { return now }
	id := Identity{RoleARN: teamARole, Namespace: "team-a", ServiceAccount: "api"}
	if err := roles.Prove(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	now = now.Add(9 * time.Minute) // inside the margin of a 10-minute credential
	if err := roles.Prove(context.Background(), id); err != nil || stsFake.count() != 2 {
		t.Errorf("proof 9 minutes into 10-minute credentials: %v, %d STS calls; want a new proof", err, stsFake.count())
	}
}

// A ServiceAccount token request that fails for a while (the API server
// busy) keeps a proof that still holds; one refused (the ServiceAccount
// gone, the request forbidden) withdraws it.
func TestProofSurvivesAPassingTokenFailureButNotARefusal(t *testing.T) {
	stsFake := &fakeSTS{}
	stsSrv := httptest.NewServer(stsFake)
	t.Cleanup(stsSrv.Close)
	var tokenErr error
	roles, err := NewRoleCredentials(AWSOptions{STSEndpoint: stsSrv.URL}, func(context.Context, string, string) (string, error) {
		return "jwt", tokenErr
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2029, 12, 31, 0, 0, 0, 0, time.UTC)
	roles.now = func() time.Time { return now }
	api := Identity{RoleARN: teamARole, Namespace: "team-a", ServiceAccount: "api"}
	ctx := context.Background()
	if err := roles.Prove(ctx, api); err != nil {
		t.Fatal(err)
	}
	now = now.Add(59 * time.Minute) // the kept proof is due, still valid
	tokenErr = errors.New("etcdserver: request timed out")
	if err := roles.Prove(ctx, api); err != nil {
		t.Errorf("proof during a passing token failure: %v; want the kept proof", err)
	}
	tokenErr = fmt.Errorf("%w: serviceaccounts \"api\" not found", ErrServiceAccountTokenRefused)
	if err := roles.Prove(ctx, api); err == nil {
		t.Error("proof after the ServiceAccount's token was refused succeeded")
	}
}
