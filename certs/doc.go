// Package certs provides the webhook's serving certificates.
//
// The webhook server serves the key pair found in --cert-dir and reloads it
// when the files change (controller-runtime's certwatcher), so any issuer
// that writes files — cert-manager, a mounted Secret — rotates certificates
// without a restart. Generate makes a CA and a serving certificate signed by
// it, for local runs (make demo) and the end-to-end tests.
package certs
