package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/emulator"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// --oidc: Artifactory's OIDC token exchange (issue #12). Instance "oidc"
// serves the registry under its localhost alias and sends each pod's
// ServiceAccount token (a TokenRequest, audience the instance's url) to
// /access/api/v1/oidc/token; the API server's own issuer is the OIDC
// provider, and identity mappings on sub decide the user. No AWS, no
// annotation.
const (
	oidcInstance   = "oidc"
	oidcSecretName = "artifactory-pull-oidc"
	oidcProvider   = "k8s-demo"
)

// oidcTeam is one tenant: its namespace, ServiceAccount, the identity
// mapping matching the namespace's ServiceAccounts by sub, the Artifactory
// user it maps to, and the repository only that user may pull.
type oidcTeam struct {
	name, ns, sa, mapping, subject, user, repo, image string
	priority                                          int
}

func newOIDCTeam(s *harness.Stack, name, sa string, priority int) oidcTeam {
	t := oidcTeam{name: name, ns: "team-" + name, sa: sa, priority: priority}
	t.mapping = t.ns
	t.subject = "system:serviceaccount:" + t.ns + ":*"
	t.user = t.ns + "-reader"
	t.repo = t.ns + "/app"
	t.image = s.BurstHost + "/" + t.repo + ":1.0"
	return t
}

func (t oidcTeam) secretName() string { return oidcSecretName + "-" + t.sa }

// oidcInstanceYAML is the OIDC instance, as it appears in the webhook's
// configuration.
func oidcInstanceYAML(s *harness.Stack) string {
	return fmt.Sprintf(`- name: %s
  url: %s
  registryHosts: [%q]
  tokenTTL: 1h
  caBundle: %s
  secretName: %s
  identity: serviceAccount
  fallback: none
  exchange: oidc
  oidc:
    providerName: %s
    subjectToken: {source: serviceAccount}  # audience: the url (the default)
`, oidcInstance, s.Emu.Artifactory.URL(), s.BurstHost, filepath.Join(s.Dir, "artifactory-ca.pem"), oidcSecretName, oidcProvider)
}

// oidcConfig is the stack's configuration with instance "oidc" in place of
// "burst"; instance "main", which the first part of the demo shows, is
// unchanged.
func oidcConfig(s *harness.Stack) (string, error) {
	return configInPlaceOfBurst(s, oidcInstanceYAML(s))
}

// showOIDC registers the API server's issuer as an OIDC integration in the
// Artifactory emulator, sets up two teams — namespaces, identity mappings
// by sub to two users with repository permissions, ServiceAccounts without
// any annotation — creates a pod per team, and shows that each pod gets its
// own ServiceAccount's Secret, minted by an OIDC exchange of that
// ServiceAccount's token for its team's user, which pulls its team's image
// and is denied the other's.
func showOIDC(ctx context.Context, s *harness.Stack) error {
	step("OIDC exchange (--oidc): instance %q trades each pod's ServiceAccount token for an Artifactory token", oidcInstance)
	for line := range strings.SplitSeq(strings.TrimSuffix(oidcInstanceYAML(s), "\n"), "\n") {
		fmt.Printf("    %s\n", line)
	}
	fmt.Printf("    (no AWS: the subject is a TokenRequest for the pod's ServiceAccount, audience %s,\n"+
		"     sent to %s%s; no role annotation)\n", s.Emu.Artifactory.URL(), s.Emu.Artifactory.URL(), emulator.OIDCTokenExchangePath)

	issuer, audience := s.Cluster.Issuer(), s.Emu.Artifactory.URL()
	step("the OIDC integration %q: the API server's ServiceAccount issuer as provider", oidcProvider)
	s.Emu.Artifactory.SetOIDCProvider(emulator.OIDCProvider{Name: oidcProvider, IssuerURL: issuer, Audience: audience})
	fmt.Printf("    Artifactory emulator: provider %q, provider URL %s, audience %s\n", oidcProvider, issuer, audience)
	if jwks, err := jwksURI(ctx, s, issuer); err != nil {
		fmt.Printf("    (the issuer's discovery document: %v)\n", err)
	} else {
		fmt.Printf("    it verifies subject tokens against the issuer's discovery document and JWKS: %s\n", jwks)
	}
	fmt.Printf("      (in Artifactory: Administration → General → Manage Integrations → OpenID Connect, or\n"+
		"       POST /access/api/v1/oidc {\"name\": %q, \"provider_type\": \"generic\", \"issuer_url\": %q, \"audience\": %q};\n"+
		"       a real cluster's issuer: EKS `aws eks describe-cluster --query cluster.identity.oidc.issuer`, AKS\n"+
		"       --enable-oidc-issuer, GKE container.googleapis.com/...; Artifactory must reach its discovery and JWKS)\n",
		oidcProvider, issuer, audience)

	teams := []oidcTeam{newOIDCTeam(s, "a", "api", 1), newOIDCTeam(s, "b", "worker", 2)}
	for _, t := range teams {
		step("team %s: namespace %q with label %s=enabled; the admin pushes %s", t.name, t.ns, harness.OptInLabel, t.image)
		if err := s.Cluster.CreateNamespace(ctx, t.ns, map[string]string{harness.OptInLabel: "enabled"}); err != nil {
			return err
		}
		if _, err := s.Emu.Registry.PushRandomImage(ctx, t.repo, "1.0", s.Emu.AdminUser, s.Emu.AdminPassword); err != nil {
			return fmt.Errorf("pushing %s: %w", t.image, err)
		}

		step("team %s: identity mapping %q of provider %q: sub like %q → user %q", t.name, t.mapping, oidcProvider, t.subject, t.user)
		s.Emu.Artifactory.AddOIDCMapping(oidcProvider, emulator.OIDCMapping{Name: t.mapping, Priority: t.priority,
			Claims: map[string]string{"sub": t.subject}, Username: t.user})
		s.Emu.Artifactory.SetRepositoryPermissions(t.user, t.ns+"/*")
		fmt.Printf("    Artifactory emulator: priority %d, claims {\"sub\": %q}, username %q, scope applied-permissions/user, 1h\n",
			t.priority, t.subject, t.user)
		fmt.Printf("      (in Artifactory: POST /access/api/v1/oidc/%s/identity_mappings {\"name\": %q, \"priority\": %d,\n"+
			"       \"claims\": {\"sub\": %q}, \"token_spec\": {\"username\": %q, \"scope\": \"applied-permissions/user\", \"expires_in\": 3600}})\n",
			oidcProvider, t.mapping, t.priority, t.subject, t.user)
		fmt.Printf("    Artifactory emulator: user %q may pull %s/* only (a permission target)\n", t.user, t.ns)

		step("team %s: ServiceAccount %s/%s, no annotation (the ServiceAccount is the identity)", t.name, t.ns, t.sa)
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: t.ns, Name: t.sa}}
		if err := s.Cluster.Client.Create(ctx, sa); err != nil {
			return fmt.Errorf("creating ServiceAccount %s/%s: %w", t.ns, t.sa, err)
		}
	}

	type outcome struct {
		t     oidcTeam
		grant emulator.OIDCGrant
	}
	var results []outcome
	for i, t := range teams {
		other := teams[1-i]
		var warnings harness.Warnings
		cs, err := s.Cluster.Clientset(&warnings)
		if err != nil {
			return err
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: corev1.PodSpec{ServiceAccountName: t.sa,
			Containers: []corev1.Container{{Name: "app", Image: t.image}}}}
		step("team %s: creating pod %s/app (serviceAccountName: %s) with image %s", t.name, t.ns, t.sa, t.image)
		grants, subjects, requests := len(s.Emu.Artifactory.OIDCGrants()), len(s.Emu.Artifactory.OIDCSubjectTokens()), len(s.Emu.Artifactory.OIDCRequests())
		start := time.Now()
		got, err := cs.CoreV1().Pods(t.ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("creating pod %s/app: %w", t.ns, err)
		}
		fmt.Printf("    created in %s; admission warnings: %v\n", time.Since(start).Round(time.Millisecond), warnings.List())
		newGrants := s.Emu.Artifactory.OIDCGrants()[grants:]
		newSubjects := s.Emu.Artifactory.OIDCSubjectTokens()[subjects:]
		newRequests := s.Emu.Artifactory.OIDCRequests()[requests:]

		step("team %s: the stored pod's imagePullSecrets", t.name)
		var names []string
		for _, r := range got.Spec.ImagePullSecrets {
			names = append(names, r.Name)
		}
		fmt.Printf("    %v  (<secretName>-<ServiceAccount>: %s's own, patched onto its pods only)\n", names, t.sa)
		if !slices.Equal(names, []string{t.secretName()}) {
			return fmt.Errorf("pod %s/app: imagePullSecrets %v, want [%s]", t.ns, names, t.secretName())
		}

		step("team %s: the Secret the webhook wrote as ServiceAccount %s (token redacted)", t.name, t.sa)
		sec, err := cs.CoreV1().Secrets(t.ns).Get(ctx, t.secretName(), metav1.GetOptions{})
		if err != nil {
			return err
		}
		printSecret(sec, s.BurstHost, pullsecret.AnnotationServiceAccount, pullsecret.AnnotationIdentity)
		user, _, err := pullsecret.ParseDockerConfigJSON(sec.Data[corev1.DockerConfigJsonKey], s.BurstHost)
		if err != nil {
			return fmt.Errorf("Secret %s/%s: %w", t.ns, sec.Name, err)
		}
		if user != t.user {
			return fmt.Errorf("Secret %s/%s holds user %q, want team %s's %q", t.ns, sec.Name, user, t.name, t.user)
		}

		step("team %s: the OIDC token exchange of ServiceAccount %s's token", t.name, t.sa)
		if len(newGrants) != 1 {
			return fmt.Errorf("pod %s/app: %d OIDC exchanges answered, want 1", t.ns, len(newGrants))
		}
		g, wantSub := newGrants[0], "system:serviceaccount:"+t.ns+":"+t.sa
		if g.Subject != wantSub || g.Provider != oidcProvider || g.Mapping != t.mapping || g.Username != t.user {
			return fmt.Errorf("pod %s/app: OIDC grant %+v, want sub %s, provider %s, mapping %s, user %s",
				t.ns, g, wantSub, oidcProvider, t.mapping, t.user)
		}
		fmt.Printf("    OIDC exchanges answered by the Artifactory emulator: %d\n", len(newGrants))
		for _, r := range newRequests {
			fmt.Printf("    request: POST %s grant_type=%s\n             subject_token_type=%s provider_name=%s subject_token=[redacted]\n",
				emulator.OIDCTokenExchangePath, r.GrantType, r.SubjectTokenType, r.ProviderName)
		}
		if len(newSubjects) > 0 {
			fmt.Printf("    subject token (a TokenRequest for %s/%s): %s\n", t.ns, t.sa, describeJWT(newSubjects[len(newSubjects)-1]))
		}
		fmt.Printf("    grant: sub %q, provider %q, mapping %q (priority %d) → user %q, scope %s, expires_in %ds\n",
			g.Subject, g.Provider, g.Mapping, t.priority, g.Username, g.Scope, g.ExpiresIn)
		fmt.Printf("    (Artifactory verified the token's signature against the issuer's JWKS, its iss (the provider URL)\n"+
			"     and aud (%s), then took the first mapping by priority whose claims match: %q matches %q)\n",
			audience, g.Subject, t.subject)

		step("team %s: pulling with %s, the way kubelet resolves pull secrets", t.name, sec.Name)
		if err := s.Emu.Registry.PullManifest(ctx, t.image, []corev1.Secret{*sec}); err != nil {
			return fmt.Errorf("%s pulling its own team's image %s: %w", t.user, t.image, err)
		}
		fmt.Printf("    %s (team %s's own): manifest fetched: OK\n", t.image, t.name)
		err = s.Emu.Registry.PullManifest(ctx, other.image, []corev1.Secret{*sec})
		if err == nil {
			return fmt.Errorf("%s pulled team %s's image %s", t.user, other.name, other.image)
		}
		fmt.Printf("    %s (team %s's): denied, as it should be\n", other.image, other.name)
		fmt.Printf("      the registry answered %q (the token realm gave %s's token no pull on %s)\n", denialReason(err), t.user, other.repo)
		results = append(results, outcome{t: t, grant: g})
	}

	step("OIDC summary")
	for i, r := range results {
		other := teams[1-i]
		fmt.Printf("    pod %s/app (ServiceAccount %s) → sub %s → mapping %q → Secret %s, user %q: pulls %s, denied %s\n",
			r.t.ns, r.t.sa, r.grant.Subject, r.grant.Mapping, r.t.secretName(), r.grant.Username, r.t.repo, other.repo)
	}
	return nil
}

// jwksURI is the jwks_uri of issuer's OIDC discovery document, read as
// Artifactory reads it.
func jwksURI(ctx context.Context, s *harness.Stack, issuer string) (string, error) {
	hc, err := s.Cluster.HTTPClient()
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return "", err
	}
	return doc.JWKSURI, nil
}

// describeJWT is a JWT's iss, aud, sub and lifetime, read without
// verification (for display; the token itself is never printed).
func describeJWT(raw string) string {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "not a JWT"
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "unreadable payload"
	}
	var c struct {
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
		Sub string          `json:"sub"`
		Iat int64           `json:"iat"`
		Exp int64           `json:"exp"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return "unreadable claims"
	}
	return fmt.Sprintf("iss %s, aud %s, sub %s, lifetime %s", c.Iss, c.Aud, c.Sub, time.Duration(c.Exp-c.Iat)*time.Second)
}
