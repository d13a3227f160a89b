// Package emulator runs strict, in-process stand-ins for the services the webhook talks to in
// end-to-end tests: AWS STS (AssumeRoleWithWebIdentity with real JWT/OIDC verification, and
// signature-verified GetCallerIdentity and AssumeRole role chaining with trust policies and
// ExternalId), the EKS Pod Identity agent, JFrog Artifactory's AWS and OIDC token exchanges (the
// latter verifying ID tokens against the provider's discovery document and JWKS, then applying
// identity mappings by priority) and Docker token realm (with optional per-user repository
// permissions), an OCI registry (distribution/v3) that trusts that realm, a standalone OIDC issuer
// (OIDCIssuer) and the GCE/GKE metadata server's identity endpoint (GCPMetadata).
//
// Every emulator verifies what the real service verifies and fails the way it fails, so a test that
// passes here exercises the webhook's real signing, token and pull-secret paths. Everything listens on
// 127.0.0.1 only. The package knows nothing of the webhook's own packages or of Kubernetes beyond
// pull-secret resolution, which it does exactly as kubelet does.
package emulator
