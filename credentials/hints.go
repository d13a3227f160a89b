package credentials

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/aws/smithy-go"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"
)

// Hint is what a failed exchange most likely means and what to change. It
// is the one table of causes and fixes: the admission warning and the
// TokenExchangeFailed Event carry Fix (ShortFix), the check command all of
// it. No field ever holds a token or a key: they are built from the
// error's status, its redacted body and the configuration.
type Hint struct {
	// Cause names the likely cause in one sentence.
	Cause string
	// Fix is what to change, in one sentence.
	Fix string
	// Detail is a longer form for the check command (the request to run,
	// the value to set), or empty.
	Detail string
}

// ShortFix is h's fix as the warning and the Event say it: "to fix: ...",
// or "" when there is no hint.
func (h Hint) ShortFix() string {
	if h.Fix == "" {
		return ""
	}
	return "to fix: " + h.Fix
}

var (
	roleARNPattern    = regexp.MustCompile(`arn:aws[a-z-]{0,16}:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}`)
	assumedARNPattern = regexp.MustCompile(`^arn:(aws[a-z-]*):sts::([0-9]{12}):assumed-role/([^/]+)/`)
	secondsPattern    = regexp.MustCompile(`\b([0-9]{2,9})\s*(?:s|sec|seconds)\b`)
)

// IAMRoleOf is the IAM role ARN of an assumed-role ARN as STS names the
// caller (arn:<partition>:sts::<account>:assumed-role/<role>/<session>),
// the ARN Artifactory maps to a user; arn itself when it is no assumed
// role.
func IAMRoleOf(arn string) string {
	m := assumedARNPattern.FindStringSubmatch(arn)
	if m == nil {
		return arn
	}
	return fmt.Sprintf("arn:%s:iam::%s:role/%s", m[1], m[2], m[3])
}

// PartitionOf is the partition of an ARN (aws, aws-us-gov, aws-cn), or "".
func PartitionOf(arn string) string {
	rest, ok := strings.CutPrefix(arn, "arn:")
	if !ok {
		return ""
	}
	p, _, _ := strings.Cut(rest, ":")
	return p
}

// Explain returns the hint of a failed exchange, a failed AWS identity or
// a failed subject token; role, when known, is the IAM role ARN the
// exchange signed as (the check command learns it from
// sts:GetCallerIdentity). ok is false for an error it has no hint for.
func Explain(err error, role string) (h Hint, ok bool) {
	if err == nil {
		return Hint{}, false
	}
	var xe *ExchangeError
	isX := errors.As(err, &xe)
	if !isX {
		xe = &ExchangeError{}
	}
	body := xe.Body
	if role == "" {
		role = roleARNPattern.FindString(body)
	}
	switch {
	case errors.Is(err, errSubjectToken):
		return Hint{Cause: "the OIDC exchange had no subject token to send",
			Fix: "check the instance's oidc.subjectToken: the token file's path, the metadata server, or the webhook's " +
				"right to request its ServiceAccount's token (serviceaccounts/token create)"}, true
	case errors.Is(err, ErrServiceAccountTokenRefused):
		return Hint{Cause: "the API server refused a token of the pod's ServiceAccount",
			Fix: "check that the ServiceAccount exists and that the webhook may create serviceaccounts/token in the namespace"}, true
	}
	// Before errCredentials: the exchange wraps a role's refusal in it.
	var re *RoleError
	if errors.As(err, &re) {
		id := re.ID
		if !refused(re.Err) { // not STS's refusal: it could not be asked, or failed
			return Hint{Cause: fmt.Sprintf("sts:AssumeRoleWithWebIdentity for ServiceAccount %s/%s and role %s failed without a refusal (%s)",
				id.Namespace, id.ServiceAccount, id.RoleARN, failureKind(re.Err)),
				Fix: "check the network path to STS (the regional endpoint of the pod's region, or aws.stsEndpoint); the webhook retries, " +
					"and a kept proof still serves" + proxyNote()}, true
		}
		return Hint{Cause: fmt.Sprintf("STS did not let ServiceAccount %s/%s assume the role %s", id.Namespace, id.ServiceAccount, id.RoleARN),
			Fix: fmt.Sprintf("check that the trust policy of %s names the cluster's OIDC provider and system:serviceaccount:%s:%s "+
				"with audience sts.amazonaws.com, or annotate the ServiceAccount with a role that trusts it", id.RoleARN, id.Namespace, id.ServiceAccount)}, true
	}
	if errors.Is(err, errCredentials) {
		return ExplainCredentials(err), true
	}
	if errors.Is(err, errNoServiceAccountToken) {
		return Hint{Cause: "the API server gave no token of the pod's ServiceAccount for the moment",
			Fix: "check the API server's health; the webhook retries, and a kept proof still serves"}, true
	}
	if !isX {
		return Hint{}, false
	}
	if h, ok := transportHint(err, xe); ok {
		return h, true
	}
	if isTimeout(err) { // after an answer began: its body did not arrive in time
		return Hint{Cause: fmt.Sprintf("%s did not finish its answer within the exchange timeout (%s)", xe.Host, fmtTTL(xe.Timeout)),
			Fix: "check the network path to Artifactory (proxy, load balancer) or raise the instance's exchangeTimeout" + proxyNote()}, true
	}
	switch s := xe.Status; {
	case s == http.StatusUnauthorized:
		return unauthorizedHint(xe, role), true
	case s == http.StatusForbidden:
		return forbiddenHint(xe), true
	case s == http.StatusNotFound:
		return Hint{Cause: fmt.Sprintf("%s has no token exchange at the path asked", xe.Host),
			Fix: "set the instance's url to Artifactory's base URL (https://<company>.jfrog.io, without /artifactory) " +
				"and check its version: the AWS exchange needs 7.90.10+, the OIDC exchange 7.77.3+ (JFrog Cloud 7.73.1+)"}, true
	case s == http.StatusBadRequest:
		if strings.Contains(strings.ToLower(body), "region") && xe.Region != "" {
			return Hint{Cause: fmt.Sprintf("Artifactory refused the region %s", xe.Region),
				Fix: "set aws.region to the AWS region of the webhook's role (e.g. us-gov-west-1), or leave it empty to sign for every region"}, true
		}
		return Hint{Cause: "Artifactory refused the request as malformed",
			Fix: fmt.Sprintf("check the instance's tokenTTL (%s, whole seconds) and that its url names Artifactory itself, not a path below it", fmtTTL(xe.TTL))}, true
	case s >= 500:
		return Hint{Cause: fmt.Sprintf("Artifactory, or a proxy in front of it, failed (HTTP %d)", s),
			Fix: "check the health of Artifactory's Access service and of any proxy on the way; the webhook retries with backoff, and pods keep a still-valid Secret"}, true
	case s >= 200 && s < 300:
		if strings.Contains(xe.Reason, "is not a mapped user") {
			return Hint{Cause: "Artifactory answered a token of no mapped user (anonymous or empty): the answer of a self-hosted " +
				"Artifactory exposed to CVE-2026-42018 (anonymous tokens from the AWS exchange); the token was refused",
				Fix:    "upgrade Artifactory to a release that fixes CVE-2026-42018 (and CVE-2026-42016), and check that the url reaches Artifactory itself",
				Detail: "JFrog's advisory for CVE-2026-42018 lists the affected self-hosted versions; until upgraded, treat the instance as compromised: a token for anyone can be minted"}, true
		}
		return Hint{Cause: fmt.Sprintf("the answer of %s is not Artifactory's token JSON: the url reaches a login page or a proxy", xe.Host),
			Fix: "set the instance's url to Artifactory's base URL; if a proxy answers, add the host to NO_PROXY or fix the proxy" + proxyNote()}, true
	case s >= 300 && s < 400:
		return Hint{Cause: fmt.Sprintf("%s redirected the exchange; the signed request is sent only to the configured URL", xe.Host),
			Fix: "set the instance's url to the address it redirects to, if that address is trusted"}, true
	}
	return Hint{}, false
}

// ExplainCredentials is the hint of an AWS identity that gave no
// credentials: AWSCredentials failing, or its provider's Retrieve.
func ExplainCredentials(err error) Hint {
	s := err.Error()
	switch {
	case strings.Contains(s, " is not set"): // an explicit authType whose variables are missing (requireEnv)
		return Hint{Cause: "the AWS identity aws.authType names is not configured for this pod",
			Fix: "give the pod that identity (an EKS Pod Identity association, or the eks.amazonaws.com/role-arn annotation for IRSA) and restart it, or set aws.authType: auto"}
	case strings.Contains(s, "no such file"), strings.Contains(s, "permission denied"), strings.Contains(s, "read Pod Identity token"):
		return Hint{Cause: "the projected token file of the pod's AWS identity cannot be read",
			Fix: "check the pod's projected token volume (EKS injects it with the Pod Identity association or the IRSA annotation) and restart the pod"}
	case strings.Contains(s, "neither EKS Pod Identity"):
		return Hint{Cause: "no AWS identity is configured for the webhook (authType auto found neither Pod Identity nor IRSA)",
			Fix: "give the webhook's ServiceAccount an IAM role: an EKS Pod Identity association, or the eks.amazonaws.com/role-arn annotation (IRSA), then restart it"}
	case strings.Contains(s, AWSSource{Kind: AuthPodIdentity}.String()), strings.Contains(s, envContainerURI):
		return Hint{Cause: "the EKS Pod Identity agent gave no credentials",
			Fix: "check the Pod Identity association of the webhook's namespace and ServiceAccount, and that the eks-pod-identity-agent DaemonSet runs on the node"}
	case strings.Contains(s, "AssumeRoleWithWebIdentity"), strings.Contains(s, envWebIdentityFile), strings.Contains(s, envRoleARN):
		return Hint{Cause: "STS refused the ServiceAccount token for its IAM role (sts:AssumeRoleWithWebIdentity)",
			Fix: "check the role's trust policy: it must name the cluster's OIDC provider and system:serviceaccount:<namespace>:<name>, audience sts.amazonaws.com"}
	case strings.Contains(s, "AssumeRole"):
		return Hint{Cause: "STS refused to assume the chained role (aws.assumeRole)",
			Fix: "check that the chained role's trust policy names the identity that assumes it, and the external ID it expects"}
	}
	return Hint{Cause: "the AWS credentials could not be had",
		Fix: "check aws.authType and the pod's AWS environment (AWS_CONTAINER_CREDENTIALS_FULL_URI, AWS_ROLE_ARN, their token files)"}
}

// transportHint explains an exchange that got no usable HTTP answer.
func transportHint(err error, xe *ExchangeError) (Hint, bool) {
	var unknown x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknown), errors.As(err, &verify) && errors.As(verify.Err, &unknown):
		return Hint{Cause: fmt.Sprintf("the certificate of %s is signed by an authority the webhook does not trust", xe.Host),
			Fix: "set the instance's caBundle to a PEM file of the CA that signed it (the chart's caBundle value)" + proxyNote()}, true
	case errors.As(err, &hostErr):
		return Hint{Cause: fmt.Sprintf("the certificate of %s does not name that host", xe.Host),
			Fix: "set the instance's url to a host name the certificate carries"}, true
	case errors.As(err, &invalid):
		return Hint{Cause: fmt.Sprintf("the certificate of %s is not valid now (expired, or not yet valid)", xe.Host),
			Fix: "renew Artifactory's certificate, and check the node's clock"}, true
	case errors.Is(err, errRedirect):
		return Hint{Cause: fmt.Sprintf("%s redirected the exchange; the signed request is sent only to the configured URL", xe.Host),
			Fix: "set the instance's url to the address it redirects to, if that address is trusted"}, true
	case strings.HasPrefix(xe.Reason, "sign "):
		return Hint{Cause: "the request could not be signed with the AWS credentials",
			Fix: "check the webhook's AWS credentials (aws.authType and the pod's AWS environment)"}, true
	case xe.Status == 0 && isTimeout(err):
		return Hint{Cause: fmt.Sprintf("%s did not answer within the exchange timeout (%s)", xe.Host, fmtTTL(xe.Timeout)),
			Fix: "check the network path to Artifactory (egress NetworkPolicy, firewall, proxy) or raise the instance's exchangeTimeout" + proxyNote()}, true
	case xe.Status == 0:
		var dns *net.DNSError
		if errors.As(err, &dns) {
			return Hint{Cause: fmt.Sprintf("the name %s does not resolve", xe.Host),
				Fix: "check the instance's url and the cluster's DNS" + proxyNote()}, true
		}
		return Hint{Cause: fmt.Sprintf("%s could not be reached", xe.Host),
			Fix: "check the instance's url, that Artifactory listens there and that the pod may reach it (egress NetworkPolicy, firewall)" + proxyNote()}, true
	}
	return Hint{}, false
}

// unauthorizedHint explains a 401: the identity was not verified, or was
// verified and maps to no user.
func unauthorizedHint(xe *ExchangeError, role string) Hint {
	body := xe.Body
	if xe.Exchange == ExchangeOIDC {
		return Hint{Cause: "Artifactory refused the ID token: its OIDC integration did not verify it, or no identity mapping matched its claims",
			Fix: "check the OIDC integration (provider name, the issuer's URL reachable by Artifactory, the audience the token carries) and that a mapping matches the token's iss and sub"}
	}
	switch {
	case strings.Contains(body, "Signature expired"), strings.Contains(body, "RequestExpired"):
		return Hint{Cause: "STS found the signature too old or from the future: the clock of the webhook's node is off",
			Fix: "synchronise the node's clock (NTP, chrony); STS allows 5 minutes of skew"}
	}
	if strings.Contains(body, "mapped") {
		// Artifactory could name the role only once STS verified the
		// signature: the mapping, not the region, is missing.
		return mappingHint(role)
	}
	if h, ok := GlobalSigningHint(PartitionOf(role)); ok && xe.Region == "" {
		return h
	}
	switch {
	case strings.Contains(body, "AccessDenied"), strings.Contains(body, "InvalidClientTokenId"), strings.Contains(body, "ExpiredToken"),
		strings.Contains(body, "SignatureDoesNotMatch"), strings.Contains(strings.ToLower(body), "verify"):
		fix := "check that the webhook's AWS credentials are current"
		if xe.Region == "" {
			fix += "; if STS is reachable only regionally (GovCloud, China, private endpoints), set aws.region to the role's region"
		} else {
			fix += fmt.Sprintf("; check that aws.region %s is the region Artifactory's STS verification can reach", xe.Region)
		}
		return Hint{Cause: "STS refused the signed request Artifactory replayed to it", Fix: fix}
	}
	return mappingHint(role)
}

// mappingHint is the fix of a role Artifactory maps to no user.
func mappingHint(role string) Hint {
	r := role
	if r == "" {
		r = "<the role's ARN: artifactory-pull-webhook check shows it>"
	}
	return Hint{Cause: "Artifactory verified the AWS identity but maps no user to its IAM role " + cmp.Or(role, "(run check to see the role)"),
		Fix: fmt.Sprintf("map the role to an Artifactory user: PUT /access/api/v1/aws/iam_role {\"username\":\"<user>\",\"iam_role\":%q}", r),
		Detail: fmt.Sprintf("with an admin token: curl -X PUT -H 'Authorization: Bearer <admin token>' -H 'Content-Type: application/json' "+
			"https://<artifactory>/access/api/v1/aws/iam_role -d '{\"username\":\"<user>\",\"iam_role\":%q}' (Artifactory 7.90.10+)", r)}
}

// forbiddenHint explains a 403: the lifetime asked is above the admin's
// maximum.
func forbiddenHint(xe *ExchangeError) Hint {
	fix := fmt.Sprintf("lower the instance's tokenTTL (now %s) to at most Artifactory's token.max-expiry, or ask the admin to raise it", fmtTTL(xe.TTL))
	if m := secondsPattern.FindStringSubmatch(xe.Body); m != nil {
		fix = fmt.Sprintf("set the instance's tokenTTL to at most %ss (now %s): Artifactory's maximum", m[1], fmtTTL(xe.TTL))
	}
	return Hint{Cause: fmt.Sprintf("Artifactory refused the token lifetime asked (expires_in %d) as above its maximum for non-admin tokens", int64(xe.TTL/time.Second)),
		Fix: fix}
}

// proxyNote names the proxy variables of the process, never their values
// (a proxy URL may carry a password).
func proxyNote() string {
	var set []string
	for _, v := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"} {
		if os.Getenv(v) != "" {
			set = append(set, v)
		}
	}
	if len(set) == 0 {
		return ""
	}
	return " (proxy variables set: " + strings.Join(set, ", ") + ")"
}

// GlobalSigningHint is the hint for a role of partition signed for every
// region (no aws.region), which only the aws partition's global STS
// endpoint verifies; ok is false for the aws partition or an unknown one.
// The exchange's 401 and check's signing step share it.
func GlobalSigningHint(partition string) (h Hint, ok bool) {
	if partition == "" || partition == "aws" {
		return Hint{}, false
	}
	fix := "set aws.region to the role's region"
	switch partition {
	case "aws-us-gov":
		fix += " (e.g. us-gov-west-1)"
	case "aws-cn":
		fix += " (e.g. cn-north-1)"
	}
	return Hint{Cause: fmt.Sprintf("the role is in partition %s, whose STS cannot verify a signature for every region", partition), Fix: fix}, true
}

func fmtTTL(d time.Duration) string {
	if d <= 0 {
		return "unset"
	}
	return d.String()
}

// failureKind names what kind of failure err is, never its text.
func failureKind(err error) string {
	if isTimeout(err) {
		return "a timeout"
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return "STS error " + ae.ErrorCode()
	}
	return "a transport error"
}
