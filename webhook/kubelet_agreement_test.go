package webhook

import (
	"context"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	kauth "github.com/google/go-containerregistry/pkg/authn/kubernetes"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// TestMatcherAgreesWithKubeletKeyring proves that the Matcher picks instance
// X for an image exactly when kubelet, given the pull Secrets the product
// writes, pulls that image with X's credentials. Kubelet's side is
// go-containerregistry's kubernetes keychain, which carries kubelet's keyring
// matching (pkg/credentialprovider/keyring.go: same port, same number of
// labels, each label globbed).
// That includes case: kubelet compares hosts case-sensitively and the
// Secret keys are lowercase, so an image host in upper case matches nothing.
func TestMatcherAgreesWithKubeletKeyring(t *testing.T) {
	for _, set := range []struct {
		name      string
		instances []config.Instance
		cases     []matchCase
	}{
		{"config", matcherConfig(t).Instances, matchCases},
		{"ipv6", ipv6Instances, ipv6Cases},
	} {
		m := config.NewMatcher(set.instances)
		secrets := make([]corev1.Secret, len(set.instances))
		for i, in := range set.instances {
			secrets[i] = pullSecret(t, in)
		}
		all := keychain(t, secrets...)
		for _, tt := range set.cases {
			t.Run(set.name+"/"+tt.name, func(t *testing.T) {
				want, _, err := m.Match(tt.image)
				target, perr := kubeletTarget(tt.image)
				if err != nil || perr != nil {
					// kubelet rejects the image (InvalidImageName): no pull.
					if (err == nil) != (perr == nil) {
						t.Fatalf("Match error %v, kubelet's parse error %v", err, perr)
					}
					return
				}
				if got := kubeletPick(t, all, target, set.instances); got != want {
					t.Errorf("image %q: Matcher says %q, kubelet (every instance's Secret) pulls with %q", tt.image, want, orAnonymous(got))
				}
				// The pod gets only the matched instance's Secret: it must
				// serve the pull on its own.
				for i, in := range set.instances {
					got := kubeletPick(t, keychain(t, secrets[i]), target, set.instances)
					if in.Name == want && got != want {
						t.Errorf("image %q: Matcher says %q, but kubelet given only its Secret pulls anonymously", tt.image, want)
					}
					if want == "" && got != "" {
						t.Errorf("image %q: Matcher says no instance, but kubelet would use the Secret of %q", tt.image, got)
					}
				}
			})
		}
	}
}

// TestKubeletTargetIsWhatGoContainerRegistryResolves guards the target the
// agreement test resolves: kubelet looks credentials up for the normalized
// repository name (parsers.ParseImageName: reference.ParseNormalizedNamed,
// then Name()). go-containerregistry's name.ParseReference yields the same
// repository, except that it rewrites docker.io to index.docker.io (which
// kubelet does not; its keyring then misses a "docker.io" key) and accepts
// some names kubelet rejects.
func TestKubeletTargetIsWhatGoContainerRegistryResolves(t *testing.T) {
	for _, tt := range append(append([]matchCase(nil), matchCases...), ipv6Cases...) {
		target, err := kubeletTarget(tt.image)
		if err != nil {
			continue
		}
		ref, err := name.ParseReference(tt.image)
		if err != nil {
			continue // e.g. UPPER/case: go-containerregistry wants a lowercase repository
		}
		got := ref.Context().String()
		if ref.Context().RegistryStr() == name.DefaultRegistry {
			got = "docker.io" + strings.TrimPrefix(got, name.DefaultRegistry)
		}
		if got != target {
			t.Errorf("%s: go-containerregistry resolves %q, kubelet looks up %q", tt.name, got, target)
		}
	}
}

// pullSecret builds instance in's Secret as the product does; its token
// names the instance.
func pullSecret(t *testing.T, in config.Instance) corev1.Secret {
	t.Helper()
	data, err := pullsecret.DockerConfigJSON(in.RegistryHosts, "user-"+in.Name, credentials.NewToken("token-"+in.Name))
	if err != nil {
		t.Fatal(err)
	}
	return corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: in.SecretName, Namespace: testNamespace},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: data},
	}
}

func keychain(t *testing.T, secrets ...corev1.Secret) authn.Keychain {
	t.Helper()
	kc, err := kauth.NewFromPullSecrets(context.Background(), secrets)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// kubeletTarget is the string kubelet's keyring matches keys against.
func kubeletTarget(image string) (string, error) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", err
	}
	return named.Name(), nil
}

// kubeletPick returns the instance whose credentials kc resolves for target
// (kubelet tries that one first), or "" for an anonymous pull.
func kubeletPick(t *testing.T, kc authn.Keychain, target string, instances []config.Instance) string {
	t.Helper()
	auth, err := kc.Resolve(repository(target))
	if err != nil {
		t.Fatalf("resolving %q: %v", target, err)
	}
	if auth == authn.Anonymous {
		return ""
	}
	cfg, err := auth.Authorization()
	if err != nil {
		t.Fatalf("credentials for %q: %v", target, err)
	}
	for _, in := range instances {
		if cfg.Password == "token-"+in.Name && cfg.Username == "user-"+in.Name {
			return in.Name
		}
	}
	t.Fatalf("credentials for %q belong to no instance: user %q", target, cfg.Username)
	return ""
}

// repository is a normalized repository name, "domain/path", as an
// authn.Resource.
type repository string

func (r repository) String() string { return string(r) }

func (r repository) RegistryStr() string {
	domain, _, _ := strings.Cut(string(r), "/")
	return domain
}

func orAnonymous(instance string) string {
	if instance == "" {
		return "anonymous"
	}
	return instance
}
