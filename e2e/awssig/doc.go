// Package awssig verifies AWS Signature Version 4 (AWS4-HMAC-SHA256) and 4a
// (AWS4-ECDSA-P256-SHA256) request signatures the way AWS does, including
// the credential scope STS requires (its service, and the endpoint's region).
//
// It is test-only code: the credentials tests use it to prove that the
// headers forwarded to Artifactory replay as a valid sts:GetCallerIdentity
// request, and the e2e STS emulator uses it to authenticate what it is sent.
// It is written from the published algorithm, independently of the signer, so
// that a bug in how we drive the signer cannot hide behind the same bug in
// the check, and it is tested against AWS's own signing test suite
// (testdata/aws-signing-test-suite).
package awssig
