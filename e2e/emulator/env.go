package emulator

import (
	"context"
	"net/http"
	"time"
)

// Defaults of the environment Start builds.
const (
	DefaultAccount = "123456789012"
	DefaultRole    = "artifactory-puller"
	DefaultUser    = "k8s-puller"
	DefaultAdmin   = "admin"
)

// Options configures Start. The zero value works for tests that use only Pod Identity.
type Options struct {
	// Issuer is the OIDC issuer trusted for IRSA (the API server's service-account issuer), and
	// IssuerClient fetches its discovery document and JWKS, for STS and for the Artifactory OIDC
	// providers set without a Client of their own.
	Issuer       string
	IssuerClient *http.Client
	// Subjects are the web-identity subjects the role trusts. Default: every service account.
	Subjects []string
	// Now is the clock of STS and Artifactory. Default: time.Now.
	Now func() time.Time
}

// Env is STS, a Pod Identity agent, Artifactory and a registry wired together: the role
// arn:aws:iam::123456789012:role/artifactory-puller is assumable and mapped to user k8s-puller, and the
// admin may push to the registry.
type Env struct {
	STS         *STS
	PodIdentity *PodIdentityAgent
	Artifactory *Artifactory
	Registry    *Registry

	// RoleARN is the IAM role the Pod Identity agent and IRSA hand out.
	RoleARN string
	// PodIdentityToken is what the agent requires in Authorization (the projected token file's content).
	PodIdentityToken string
	// Username is the Artifactory user RoleARN maps to.
	Username string
	// AdminUser and AdminPassword may push to the registry.
	AdminUser, AdminPassword string
}

// Start starts and wires every emulator. Close it when done.
func Start(ctx context.Context, o Options) (*Env, error) {
	if len(o.Subjects) == 0 {
		o.Subjects = []string{"system:serviceaccount:*:*"}
	}
	e := &Env{
		RoleARN:          "arn:aws:iam::" + DefaultAccount + ":role/" + DefaultRole,
		PodIdentityToken: randomBase64URL(32),
		Username:         DefaultUser,
		AdminUser:        DefaultAdmin,
		AdminPassword:    randomBase64URL(16),
	}
	e.STS = NewSTS(STSOptions{
		Issuer:     o.Issuer,
		HTTPClient: o.IssuerClient,
		Roles:      map[string][]string{e.RoleARN: o.Subjects},
		Now:        o.Now,
	})
	e.PodIdentity = NewPodIdentityAgent(e.STS, e.RoleARN, e.PodIdentityToken)
	var err error
	e.Artifactory, err = NewArtifactory(ArtifactoryOptions{
		STS:           e.STS,
		Mappings:      map[string]string{e.RoleARN: e.Username},
		Now:           o.Now,
		AdminUser:     e.AdminUser,
		AdminPassword: e.AdminPassword,
		IssuerClient:  o.IssuerClient,
	})
	if err != nil {
		e.Close()
		return nil, err
	}
	e.Registry, err = StartRegistry(ctx, e.Artifactory.RegistryOptions())
	if err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Close stops every emulator that was started.
func (e *Env) Close() {
	if e.Registry != nil {
		e.Registry.Close()
	}
	if e.Artifactory != nil {
		e.Artifactory.Close()
	}
	if e.PodIdentity != nil {
		e.PodIdentity.Close()
	}
	if e.STS != nil {
		e.STS.Close()
	}
}
