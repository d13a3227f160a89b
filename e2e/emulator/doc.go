// Package emulator runs strict, in-process stand-ins for the services the webhook talks to in
// end-to-end tests: AWS STS (AssumeRoleWithWebIdentity with real JWT/OIDC verification, and
// signature-verified GetCallerIdentity and AssumeRole role chaining with trust policies and
// ExternalId), the EKS Pod Identity agent, JFrog Artifactory's AWS token exchange and Docker token
// realm (with optional per-user repository permissions), and an OCI registry (distribution/v3) that
// trusts that realm.
//
// Every emulator verifies what the real service verifies and fails the way it fails, so a test that
// passes here exercises the webhook's real signing, token and pull-secret paths. Everything listens on
// 127.0.0.1 only. The package knows nothing of the webhook's own packages or of Kubernetes beyond
// pull-secret resolution, which it does exactly as kubelet does.
package emulator
