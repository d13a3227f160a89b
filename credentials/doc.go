// Package credentials turns an identity into a short-lived Artifactory
// access token and caches it.
//
// It owns three steps of the request path:
//   - identity: the webhook's AWS credentials (IRSA web identity or EKS Pod
//     Identity, through aws-sdk-go-v2), a ServiceAccount's IAM role
//     (RoleCredentials: a ServiceAccount token, then
//     AssumeRoleWithWebIdentity), a chained role (ChainRole), or an OIDC
//     subject token (a ServiceAccount's, a file, the GCP metadata server's);
//     Identity names whose credentials a token is minted with;
//   - the exchange: AWS-signed (an sts:GetCallerIdentity request signed
//     with SigV4A whose headers are posted to /access/api/v1/aws/token,
//     Exchanger) or OIDC (RFC 8693 at /access/api/v1/oidc/token,
//     OIDCExchanger);
//   - caching: the in-memory Cache of a long-running process (one exchange
//     per key at a time, refreshed before expiry, backoff, proofs of shared
//     roles), and the FileCache of processes that live one request each (the
//     kubelet credential provider: one exchange for concurrent and repeated
//     invocations, under a file lock).
//
// It must not know about admission, pods or Kubernetes Secrets: a kubelet
// credential provider reuses it as is.
package credentials
