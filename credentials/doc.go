// Package credentials turns an AWS identity into a short-lived Artifactory
// access token and caches it.
//
// It owns three steps of the request path: identity (AWS credentials from
// IRSA web identity or EKS Pod Identity, through aws-sdk-go-v2), the signed
// exchange (an sts:GetCallerIdentity request signed with SigV4A whose headers
// are posted to Artifactory's /access/api/v1/aws/token) and the token cache
// (one exchange per key at a time, refreshed before expiry).
//
// It must not know about admission, pods or Kubernetes Secrets: a kubelet
// credential provider reuses it as is.
package credentials
