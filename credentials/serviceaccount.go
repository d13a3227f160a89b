package credentials

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"golang.org/x/sync/singleflight"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/metrics"
)

// Identity says whose credentials an exchange is made with: the webhook's
// own (the zero value); the IAM role of a ServiceAccount (IRSA: its
// eks.amazonaws.com/role-arn annotation), assumed with a token of that
// ServiceAccount, for the AWS exchange; or a ServiceAccount itself (no
// role), whose token is the subject of the OIDC exchange. It is meant to be
// resolved once per pod by the request path, and it keys the token cache
// (Key) and names the pull Secret (pullsecret.SecretName).
type Identity struct {
	// RoleARN is the ServiceAccount's IAM role; empty for the webhook's
	// own identity.
	RoleARN string
	// Namespace and ServiceAccount name the ServiceAccount whose token is
	// exchanged. With a RoleARN they are not part of the token cache key:
	// ServiceAccounts of one role share its Artifactory token. Without one
	// (the OIDC exchange) they are: the token is the ServiceAccount's own.
	Namespace, ServiceAccount string
}

// IsWebhook reports whether id is the webhook's own identity.
func (id Identity) IsWebhook() bool { return id.RoleARN == "" && id.ServiceAccount == "" }

// Shared reports whether id's token is shared by every ServiceAccount of
// its role, so that a ServiceAccount must prove the role before it gets it
// (CacheOptions.Prove).
func (id Identity) Shared() bool { return id.RoleARN != "" }

// Prefixes of the cache identity of a ServiceAccount's role and of a
// ServiceAccount itself.
const (
	rolePrefix = "role:"
	// ServiceAccountNamePrefix starts the Name of a ServiceAccount's own
	// identity (the OIDC exchange).
	ServiceAccountNamePrefix = "sa:"
)

// Name is id's part of a token cache Key: WebhookIdentity, "role:" and the
// role ARN, or "sa:<namespace>/<name>".
func (id Identity) Name() string {
	switch {
	case id.IsWebhook():
		return WebhookIdentity
	case id.Shared():
		return rolePrefix + id.RoleARN
	}
	return ServiceAccountNamePrefix + id.Namespace + "/" + id.ServiceAccount
}

// IdentityOfName is the Identity whose Name is name, for the ServiceAccount
// namespace/serviceAccount; ok is false when name is none of theirs.
func IdentityOfName(name, namespace, serviceAccount string) (Identity, bool) {
	if name == WebhookIdentity {
		return Identity{}, true
	}
	if serviceAccount == "" {
		return Identity{}, false
	}
	if role, ok := RoleOfName(name); ok {
		return Identity{RoleARN: role, Namespace: namespace, ServiceAccount: serviceAccount}, true
	}
	id := Identity{Namespace: namespace, ServiceAccount: serviceAccount}
	return id, name == id.Name()
}

// RoleOfName is the role ARN of a Name of a ServiceAccount's identity
// ("role:<arn>"); ok is false for any other name.
func RoleOfName(name string) (role string, ok bool) {
	role, ok = strings.CutPrefix(name, rolePrefix)
	return role, ok && role != ""
}

// Key is the token cache key of id's tokens for instance, whose
// configuration has fingerprint.
func (id Identity) Key(instance, fingerprint string) Key {
	return Key{Instance: instance, Identity: id.Name(), Fingerprint: fingerprint}
}

// String names id for logs, metrics and warnings; it holds no secret.
func (id Identity) String() string {
	switch {
	case id.IsWebhook():
		return WebhookIdentity
	case id.Shared():
		return fmt.Sprintf("role %s (ServiceAccount %s/%s)", id.RoleARN, id.Namespace, id.ServiceAccount)
	}
	return fmt.Sprintf("ServiceAccount %s/%s", id.Namespace, id.ServiceAccount)
}

// RoleARNPattern is an IAM role ARN in any partition, as STS accepts it:
// a path of printable ASCII ('!' through '~', as IAM's API allows) and a
// name of up to 64 of [\w+=,.@-].
var RoleARNPattern = regexp.MustCompile(`^arn:aws(-cn|-us-gov|-iso|-iso-b|-iso-e|-iso-f|-eusc)?:iam::\d{12}:role/([!-.0-~]+/)*[\w+=,.@-]{1,64}$`)

// ServiceAccountTokens returns a token of a ServiceAccount for audience
// sts.amazonaws.com (in the webhook, from the TokenRequest API).
type ServiceAccountTokens func(ctx context.Context, namespace, name string) (string, error)

// RoleCredentials assumes the IAM roles of ServiceAccounts: a token of the
// ServiceAccount, then sts:AssumeRoleWithWebIdentity for its role. The
// credentials STS answers are kept per ServiceAccount until shortly before
// they expire: they prove that this ServiceAccount may assume the role (its
// trust policy names it), which must hold before the role's shared
// Artifactory token is handed to it (Prove), and they sign the exchange.
type RoleCredentials struct {
	// Metrics, when set, counts the role assumptions.
	Metrics *metrics.Metrics

	sts    *sts.Client
	tokens ServiceAccountTokens
	now    func() time.Time

	mu      sync.Mutex
	proven  map[Identity]aws.Credentials
	refused map[Identity]refusal
	flights singleflight.Group
}

// refusal is a ServiceAccount's refused proof, answered again without
// asking until the time given.
type refusal struct {
	err   error
	until time.Time
}

// refusalMemory is how long a refused proof is answered from memory: pods
// of a ServiceAccount naming a role that does not trust it cost one
// TokenRequest and one STS call per this time, not one per pod.
const refusalMemory = 15 * time.Second

const (
	// stsCredentialLifetime is how long assumed-role credentials are asked
	// for: the default maximum session of a role. A ServiceAccount proves
	// its trust again once they run out, so a trust policy that stops
	// naming it takes effect within this time.
	stsCredentialLifetime = time.Hour
	// proofMargin is how long before their expiry kept credentials are no
	// longer used: enough to sign and send one exchange.
	proofMargin = 2 * time.Minute
)

// NewRoleCredentials calls the STS endpoint o names (else the pod's
// region's, as for the webhook's own IRSA identity) with tokens from
// tokens.
func NewRoleCredentials(o AWSOptions, tokens ServiceAccountTokens) (*RoleCredentials, error) {
	if tokens == nil {
		return nil, errors.New("a ServiceAccount token source is required")
	}
	return &RoleCredentials{sts: stsClient(o), tokens: tokens, now: time.Now, proven: map[Identity]aws.Credentials{},
		refused: map[Identity]refusal{}}, nil
}

// Prove makes sure STS lets id's ServiceAccount assume id's role, asking it
// (a ServiceAccount token, then AssumeRoleWithWebIdentity) unless it did
// within the lifetime of the credentials it answered. Use it as
// CacheOptions.Prove: a role's token is shared by every ServiceAccount that
// names the role, so naming it must not be enough to get it. Concurrent
// proofs of one ServiceAccount make one request.
func (r *RoleCredentials) Prove(ctx context.Context, id Identity) error {
	_, err := r.credentials(ctx, id)
	return err
}

// Provider returns the AWS credentials of id's role, for an Exchanger: the
// ones its proof got while they last.
func (r *RoleCredentials) Provider(id Identity) aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(ctx context.Context) (aws.Credentials, error) {
		return r.credentials(ctx, id)
	})
}

func (r *RoleCredentials) credentials(ctx context.Context, id Identity) (aws.Credentials, error) {
	r.mu.Lock()
	c, ok := r.proven[id]
	no, wasRefused := r.refused[id]
	r.mu.Unlock()
	if ok && r.now().Add(proofMargin).Before(c.Expires) {
		return c, nil
	}
	if wasRefused && r.now().Before(no.until) {
		return aws.Credentials{}, no.err
	}
	// One proof per ServiceAccount at a time, detached from the first
	// caller: its deadline must not fail the others, and each caller waits
	// only as long as its own context allows.
	ch := r.flights.DoChan(id.RoleARN+"\x00"+id.Namespace+"\x00"+id.ServiceAccount, func() (any, error) {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), proofTimeout)
		defer cancel()
		c, err := r.retrieve(pctx, id)
		switch {
		case err == nil:
			r.Metrics.RoleAssumption(id.RoleARN, "success")
		case refused(err):
			r.Metrics.RoleAssumption(id.RoleARN, metrics.RoleRefused)
		default:
			r.Metrics.RoleAssumption(id.RoleARN, metrics.RoleError)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		now := r.now()
		for k, v := range r.proven {
			if !now.Before(v.Expires) {
				delete(r.proven, k)
			}
		}
		for k, v := range r.refused {
			if !now.Before(v.until) {
				delete(r.refused, k)
			}
		}
		switch {
		case err == nil:
			r.proven[id] = c
			delete(r.refused, id)
		case refused(err):
			delete(r.proven, id) // the trust was withdrawn, or the ServiceAccount is gone
			r.refused[id] = refusal{err: err, until: now.Add(refusalMemory)}
		default:
			if old, ok := r.proven[id]; ok && now.Before(old.Expires) {
				return old, nil // a passing failure: the proof still holds until it expires
			}
		}
		return c, err
	})
	select {
	case <-ctx.Done():
		return aws.Credentials{}, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return aws.Credentials{}, res.Err
		}
		return res.Val.(aws.Credentials), nil
	}
}

// proofTimeout bounds one proof (a TokenRequest and an STS call).
const proofTimeout = 20 * time.Second

// errNoServiceAccountToken marks a failed ServiceAccount token request.
var errNoServiceAccountToken = errors.New("no ServiceAccount token")

// ErrServiceAccountTokenRefused is wrapped by a ServiceAccountTokens error
// that says the token will not be had (the ServiceAccount is gone, or the
// request is forbidden), as opposed to an API server failing for a while:
// only it withdraws a kept proof.
var ErrServiceAccountTokenRefused = errors.New("ServiceAccount token refused")

// refused reports whether err says the ServiceAccount may not assume the
// role (rather than that STS or the API server failed for a while).
func refused(err error) bool {
	if errors.Is(err, ErrServiceAccountTokenRefused) {
		return true
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "AccessDenied", "InvalidIdentityToken", "IDPRejectedClaim", "ExpiredTokenException", "ValidationError":
			return true
		}
	}
	return false
}

func (r *RoleCredentials) retrieve(ctx context.Context, id Identity) (aws.Credentials, error) {
	if !id.Shared() {
		return aws.Credentials{}, fmt.Errorf("%s has no ServiceAccount role", id)
	}
	token, err := r.tokens(ctx, id.Namespace, id.ServiceAccount)
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("requesting a token of ServiceAccount %s/%s: %w: %w", id.Namespace, id.ServiceAccount, errNoServiceAccountToken, err)
	}
	out, err := r.sts.AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{
		RoleArn:          aws.String(id.RoleARN),
		RoleSessionName:  aws.String(SessionName(id)),
		WebIdentityToken: aws.String(token),
		DurationSeconds:  aws.Int32(int32(stsCredentialLifetime / time.Second)),
	})
	if err != nil {
		return aws.Credentials{}, &RoleError{ID: id, Err: err}
	}
	c := out.Credentials
	if c == nil || c.AccessKeyId == nil || c.SecretAccessKey == nil || c.SessionToken == nil {
		return aws.Credentials{}, fmt.Errorf("sts:AssumeRoleWithWebIdentity for role %s answered no credentials", id.RoleARN)
	}
	// Kept no longer than asked for, even if STS named no expiry: a trust
	// withdrawn must take effect.
	expires := r.now().Add(stsCredentialLifetime)
	if c.Expiration != nil && c.Expiration.Before(expires) {
		expires = *c.Expiration
	}
	return aws.Credentials{AccessKeyID: *c.AccessKeyId, SecretAccessKey: *c.SecretAccessKey,
		SessionToken: *c.SessionToken, Source: "AssumeRoleWithWebIdentity", CanExpire: true, Expires: expires}, nil
}

// RoleError is STS refusing (or failing) a ServiceAccount's
// sts:AssumeRoleWithWebIdentity for the role it names: the proof of a
// shared role's token. Explain gives its fix.
type RoleError struct {
	ID  Identity
	Err error
}

func (e *RoleError) Error() string {
	return fmt.Sprintf("sts:AssumeRoleWithWebIdentity for role %s as ServiceAccount %s/%s: %v",
		e.ID.RoleARN, e.ID.Namespace, e.ID.ServiceAccount, e.Err)
}

func (e *RoleError) Unwrap() error { return e.Err }

// sessionNameChars is what STS allows in a role session name besides
// letters and digits.
const sessionNameChars = "+=,.@_-"

// SessionName is the role session name of id's credentials: it tells
// CloudTrail readers which ServiceAccount assumed the role (at most 64
// characters, as STS allows).
func SessionName(id Identity) string {
	name := strings.Map(func(r rune) rune {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(sessionNameChars, r)) {
			return r
		}
		return '-'
	}, "apw@"+id.Namespace+"."+id.ServiceAccount)
	if len(name) > 64 {
		// Cut, and end in a hash of the whole: ServiceAccounts of a long
		// namespace stay apart in CloudTrail.
		sum := sha256.Sum256([]byte(id.Namespace + "/" + id.ServiceAccount))
		suffix := "-" + hex.EncodeToString(sum[:])[:12]
		name = name[:64-len(suffix)] + suffix
	}
	return name
}

// RoleARNAnnotation is IRSA's ServiceAccount annotation naming its IAM
// role, as amazon-eks-pod-identity-webhook and jfrog-credentials-provider
// read it.
const RoleARNAnnotation = "eks.amazonaws.com/role-arn"

// ErrNoRole is returned (wrapped) by ServiceAccountIdentity for a
// ServiceAccount that names no role, or has not opted in.
var ErrNoRole = errors.New("no IAM role for the exchange")

// ErrBadRole is returned (wrapped) by ServiceAccountIdentity for a
// ServiceAccount whose role annotation is not an IAM role ARN.
var ErrBadRole = errors.New("not an IAM role ARN")

// ServiceAccountIdentity is the identity of the ServiceAccount namespace/
// name with annotations: its RoleARNAnnotation, when optIn is empty or the
// annotation optIn is "true" (jfrog-credentials-provider's JFrogExchange
// convention, so that clusters migrating from it need no relabelling).
// The error says which annotation is missing or wrong.
func ServiceAccountIdentity(namespace, name string, annotations map[string]string, optIn string) (Identity, error) {
	if optIn != "" && !strings.EqualFold(annotations[optIn], "true") {
		return Identity{}, fmt.Errorf("%w: ServiceAccount %s/%s does not carry the annotation %s: \"true\"", ErrNoRole, namespace, name, optIn)
	}
	role, ok := annotations[RoleARNAnnotation]
	if !ok || role == "" {
		return Identity{}, fmt.Errorf("%w: ServiceAccount %s/%s has no %s annotation", ErrNoRole, namespace, name, RoleARNAnnotation)
	}
	if !RoleARNPattern.MatchString(role) {
		if len(role) > 100 {
			role = role[:100] + "..." // a tenant's annotation: not repeated at any length
		}
		return Identity{}, fmt.Errorf("ServiceAccount %s/%s: annotation %s is %q, %w (arn:aws:iam::<account>:role/<name>)",
			namespace, name, RoleARNAnnotation, role, ErrBadRole)
	}
	return Identity{RoleARN: role, Namespace: namespace, ServiceAccount: name}, nil
}
