package pullsecret

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Labels and annotations on managed Secrets.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "artifactory-pull-webhook"
	// LabelPerServiceAccount ("true") marks the Secrets of a
	// ServiceAccount's identity, whose names are not known in advance: the
	// webhook watches them through an informer selected by it.
	LabelPerServiceAccount = "artifactory-pull-webhook/per-service-account"
	// AnnotationInstance names the configured instance the Secret is for.
	AnnotationInstance = "artifactory-pull-webhook/instance"
	// AnnotationIdentity names the AWS identity the token was minted for.
	AnnotationIdentity = "artifactory-pull-webhook/identity"
	// AnnotationServiceAccount names the ServiceAccount whose pods the
	// Secret serves, on Secrets of a ServiceAccount's identity only.
	AnnotationServiceAccount = "artifactory-pull-webhook/service-account"
	// AnnotationFingerprint is the token's credentials.Fingerprint (URL,
	// TTL and signing identity): a Secret of another fingerprint is rewritten.
	AnnotationFingerprint = "artifactory-pull-webhook/token-fingerprint"
	// AnnotationInstallation names the installation (config.Installation)
	// that owns the Secret; one without it belongs to the default one.
	AnnotationInstallation = "artifactory-pull-webhook/installation"
	// AnnotationIssuedAt and AnnotationExpiresAt carry the token's lifetime
	// (RFC 3339), so freshness is known without decoding the data.
	AnnotationIssuedAt  = "artifactory-pull-webhook/issued-at"
	AnnotationExpiresAt = "artifactory-pull-webhook/expires-at"
	// AnnotationHosts lists the registry hosts in the Secret, comma
	// separated, so a change of configured hosts is seen at a glance.
	AnnotationHosts = "artifactory-pull-webhook/hosts"
)

// Action says what Ensure did.
type Action string

const (
	ActionReused   Action = "reused"   // a fresh managed Secret was already there
	ActionCreated  Action = "created"  // a new Secret was written
	ActionUpdated  Action = "updated"  // an existing managed Secret was rewritten
	ActionDryRun   Action = "dry-run"  // a write was needed but the request is a dry run
	ActionFallback Action = "fallback" // minting failed; a still-valid managed Secret is used
)

// Result is the outcome of Ensure.
type Result struct {
	// SecretName is the Secret the pod may reference.
	SecretName string
	Action     Action
	// Warning, when set, explains a degraded outcome (ActionFallback) for
	// the admission response. It never contains token material.
	Warning string
}

// ErrForeignSecret is returned (wrapped) when a Secret of the managed name
// exists but is not managed by the webhook: it is left untouched.
var ErrForeignSecret = errors.New("a Secret with this name exists and is not managed by artifactory-pull-webhook")

// InstallationConflictError is ErrForeignSecret (errors.Is matches it) for
// a Secret that another installation of the webhook manages: two
// installations opt the namespace in and use one Secret name.
type InstallationConflictError struct {
	Installation string // the installation that manages the Secret
}

// NewInstallationConflictError names owner, the installation annotation of
// the Secret. Tenants can write that annotation: a value that is not a
// valid installation name is not repeated.
func NewInstallationConflictError(owner string) *InstallationConflictError {
	if len(validation.IsDNS1123Label(owner)) > 0 {
		owner = "(not a valid installation name)"
	}
	return &InstallationConflictError{Installation: owner}
}

func (e *InstallationConflictError) Error() string {
	return fmt.Sprintf("a Secret with this name exists and is managed by another installation of artifactory-pull-webhook (%q)", e.Installation)
}

// Is makes errors.Is(err, ErrForeignSecret) hold.
func (e *InstallationConflictError) Is(target error) bool { return target == ErrForeignSecret }

// ErrNoToken is returned (wrapped, with the cause) by Sync when the token
// source could not provide a token.
var ErrNoToken = errors.New("no token")
