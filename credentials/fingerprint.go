package credentials

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"time"
)

// Fingerprint names what a token depends on besides the names in its Key:
// the Artifactory URL that issued it, the lifetime asked for, and the AWS
// identity that signed the exchange (SigningIdentity). It keys the token
// cache and the checkpoint and is written on every pull Secret, so changing
// any of them under the same instance name (a new url, another IAM role, a
// lower tokenTTL) retires the old token at once instead of at its refresh
// point, hours later.
func Fingerprint(url string, ttl time.Duration, signingIdentity string) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{url, ttl.String(), signingIdentity}, "\x00")))
	return hex.EncodeToString(sum[:8])
}

// SigningIdentity describes the AWS identity o resolves to, as far as the
// process can tell without a request: the credential source, and with IRSA
// the role ARN it assumes. (An EKS Pod Identity association names its role
// in the EKS API only; a change of it is seen once Artifactory maps the new
// role, at the token's refresh.)
func SigningIdentity(o AWSOptions) string {
	pod := os.Getenv(envContainerURI) != "" && os.Getenv(envContainerTokenFile) != ""
	irsa := os.Getenv(envRoleARN) != "" && os.Getenv(envWebIdentityFile) != ""
	switch {
	case o.AuthType == AuthPodIdentity, (o.AuthType == AuthAuto || o.AuthType == "") && pod:
		return string(AuthPodIdentity)
	case o.AuthType == AuthWebIdentity, (o.AuthType == AuthAuto || o.AuthType == "") && irsa:
		return string(AuthWebIdentity) + ":" + os.Getenv(envRoleARN)
	}
	return string(o.AuthType)
}
