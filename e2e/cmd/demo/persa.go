package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// --per-sa: per-ServiceAccount identities (issue #11). Instance "teams"
// serves the registry under its localhost alias and mints as each pod's
// ServiceAccount's IAM role (IRSA): a TokenRequest for the ServiceAccount,
// sts:AssumeRoleWithWebIdentity, then the signed exchange as that role.
const (
	teamsInstance   = "teams"
	teamsSecretName = "artifactory-pull-team"
	demoAccount     = "111122223333"
)

// demoTeam is one tenant: its namespace, ServiceAccount, IAM role, the
// Artifactory user the role is mapped to, and the repository only that user
// may pull.
type demoTeam struct {
	name, ns, sa, role, user, repo, image string
}

func newDemoTeam(s *harness.Stack, name, sa string) demoTeam {
	t := demoTeam{name: name, ns: "team-" + name, sa: sa}
	t.role = "arn:aws:iam::" + demoAccount + ":role/" + t.ns + "-puller"
	t.user = t.ns + "-puller"
	t.repo = t.ns + "/app"
	t.image = s.BurstHost + "/" + t.repo + ":1.0"
	return t
}

func (t demoTeam) secretName() string { return teamsSecretName + "-" + t.sa }

// teamsInstanceYAML is the per-ServiceAccount instance, as it appears in
// the webhook's configuration.
func teamsInstanceYAML(s *harness.Stack) string {
	return fmt.Sprintf(`- name: %s
  url: %s
  registryHosts: [%q]
  tokenTTL: 1h
  caBundle: %s
  secretName: %s
  identity: serviceAccount
  fallback: none
`, teamsInstance, s.Emu.Artifactory.URL(), s.BurstHost, filepath.Join(s.Dir, "artifactory-ca.pem"), teamsSecretName)
}

// perSAConfig is the stack's configuration with instance "teams" in place
// of "burst" (the instance on the registry's localhost alias, which the
// demo does not otherwise use); instance "main", which the first part of
// the demo shows, is unchanged.
func perSAConfig(s *harness.Stack) (string, error) {
	return configInPlaceOfBurst(s, teamsInstanceYAML(s))
}

// configInPlaceOfBurst is the stack's configuration with instance (YAML,
// one list item) in place of "burst"; every other instance is unchanged.
func configInPlaceOfBurst(s *harness.Stack, instance string) (string, error) {
	cfg := s.Config(harness.PodIdentity)
	start := strings.Index(cfg, "- name: burst\n")
	if start < 0 {
		return "", fmt.Errorf("the stack's configuration has no instance burst to replace:\n%s", cfg)
	}
	end := strings.Index(cfg[start+1:], "\n- name: ")
	if end < 0 {
		return "", fmt.Errorf("the stack's configuration has no instance after burst:\n%s", cfg)
	}
	return cfg[:start] + instance + cfg[start+1+end+1:], nil
}

// showPerServiceAccount sets up two teams — namespaces, IAM roles trusted
// by their namespace's ServiceAccounts, Artifactory users with repository
// permissions, annotated ServiceAccounts — creates a pod per team, and shows
// that each pod gets its own ServiceAccount's Secret, minted for its team's
// user, which pulls its team's image and is denied the other's.
func showPerServiceAccount(ctx context.Context, s *harness.Stack) error {
	step("per-ServiceAccount identities (--per-sa): instance %q pulls as each pod's ServiceAccount's IAM role", teamsInstance)
	for line := range strings.SplitSeq(strings.TrimSuffix(teamsInstanceYAML(s), "\n"), "\n") {
		fmt.Printf("    %s\n", line)
	}

	teams := []demoTeam{newDemoTeam(s, "a", "api"), newDemoTeam(s, "b", "worker")}
	for _, t := range teams {
		step("team %s: namespace %q with label %s=enabled; the admin pushes %s", t.name, t.ns, harness.OptInLabel, t.image)
		if err := s.Cluster.CreateNamespace(ctx, t.ns, map[string]string{harness.OptInLabel: "enabled"}); err != nil {
			return err
		}
		if _, err := s.Emu.Registry.PushRandomImage(ctx, t.repo, "1.0", s.Emu.AdminUser, s.Emu.AdminPassword); err != nil {
			return fmt.Errorf("pushing %s: %w", t.image, err)
		}

		subject := "system:serviceaccount:" + t.ns + ":*"
		step("team %s: IAM role %s", t.name, t.role)
		s.Emu.STS.SetTrust(t.role, subject)
		fmt.Printf("    trust policy (STS emulator): tokens of issuer %s (the API server), aud sts.amazonaws.com, sub like %q\n",
			s.Cluster.Issuer(), subject)
		s.Emu.Artifactory.SetMapping(t.role, t.user)
		s.Emu.Artifactory.SetRepositoryPermissions(t.user, t.ns+"/*")
		fmt.Printf("    Artifactory emulator: the role is mapped to user %q\n", t.user)
		fmt.Printf("      (in Artifactory: PUT /access/api/v1/aws/iam_role {\"iam_role\": %q, \"username\": %q})\n", t.role, t.user)
		fmt.Printf("    Artifactory emulator: user %q may pull %s/* only (a permission target)\n", t.user, t.ns)

		step("team %s: ServiceAccount %s/%s annotated %s: %s", t.name, t.ns, t.sa, config.RoleARNAnnotation, t.role)
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: t.ns, Name: t.sa,
			Annotations: map[string]string{config.RoleARNAnnotation: t.role}}}
		if err := s.Cluster.Client.Create(ctx, sa); err != nil {
			return fmt.Errorf("creating ServiceAccount %s/%s: %w", t.ns, t.sa, err)
		}
	}

	type outcome struct {
		t         demoTeam
		user      string
		exchanges int
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
		exchanges, assumed := s.Emu.Artifactory.Exchanges(), len(s.Emu.STS.WebIdentityTokens())
		start := time.Now()
		got, err := cs.CoreV1().Pods(t.ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("creating pod %s/app: %w", t.ns, err)
		}
		fmt.Printf("    created in %s; admission warnings: %v\n", time.Since(start).Round(time.Millisecond), warnings.List())
		exchanges, assumed = s.Emu.Artifactory.Exchanges()-exchanges, len(s.Emu.STS.WebIdentityTokens())-assumed

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

		step("team %s: the token exchange as the ServiceAccount's role", t.name)
		fmt.Printf("    sts:AssumeRoleWithWebIdentity calls: %d; exchanges answered by the Artifactory emulator: %d\n", assumed, exchanges)
		fmt.Printf("    (the webhook requested a token for ServiceAccount %s/%s from the TokenRequest API, audience\n"+
			"     sts.amazonaws.com, and assumed %s with it: STS verified the token\n"+
			"     and the role's trust policy; the webhook then signed sts:GetCallerIdentity as that role with SigV4A,\n"+
			"     and Artifactory mapped the role to user %q and issued its token)\n", t.ns, t.sa, t.role, t.user)

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
		results = append(results, outcome{t: t, user: user, exchanges: exchanges})
	}

	step("per-ServiceAccount summary")
	for i, r := range results {
		other := teams[1-i]
		fmt.Printf("    pod %s/app (ServiceAccount %s) → Secret %s, Artifactory user %q: pulls %s, denied %s\n",
			r.t.ns, r.t.sa, r.t.secretName(), r.user, r.t.repo, other.repo)
	}
	return nil
}

// denialReason is the registry's error code and message in a failed
// pull's error ("UNAUTHORIZED: authentication required"), else the whole
// error.
func denialReason(err error) string {
	msg := err.Error()
	for _, code := range []string{"UNAUTHORIZED", "DENIED"} {
		if i := strings.Index(msg, code+": "); i >= 0 {
			msg, _, _ = strings.Cut(msg[i:], ";")
			return msg
		}
	}
	return msg
}
