package credentials

import (
	"cmp"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// ChainedRole is a role assumed with sts:AssumeRole on top of a resolved
// identity's credentials before signing (role chaining, as
// jfrog-credentials-provider's assume_external_role): one Artifactory role
// mapping then serves the clusters of other accounts whose roles its trust
// policy names.
type ChainedRole struct {
	RoleARN string
	// ExternalID is sent when set (the target's trust policy may ask for it).
	ExternalID string
	// SessionName is the role session name; when empty, that of the
	// identity chained from (SessionName for a ServiceAccount's, else
	// artifactory-pull-webhook).
	SessionName string
}

// chainedLifetime is the session asked for: AWS caps chained role
// sessions at one hour.
const chainedLifetime = time.Hour

// ChainRole returns the credentials of r, assumed with base's credentials
// through the STS endpoint o names (else the pod's region's, as for IRSA).
// For the webhook's own identity pass an empty session; for a
// ServiceAccount's, SessionName(id), so that CloudTrail shows which
// ServiceAccount the chain started from. The result caches the chained
// credentials until shortly before they expire; build one per identity.
func ChainRole(o AWSOptions, base aws.CredentialsProvider, r ChainedRole, session string) aws.CredentialsProvider {
	client := sts.New(stsClient(o).Options(), func(so *sts.Options) { so.Credentials = base })
	return aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(client, r.RoleARN, func(ao *stscreds.AssumeRoleOptions) {
		ao.RoleSessionName = cmp.Or(r.SessionName, session, defaultRoleSessionName)
		ao.Duration = chainedLifetime
		if r.ExternalID != "" {
			ao.ExternalID = aws.String(r.ExternalID)
		}
	}))
}
