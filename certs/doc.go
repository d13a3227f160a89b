// Package certs provides the webhook's serving certificates.
//
// Two modes. In files mode the webhook server serves the key pair found in
// --cert-dir and reloads it when the files change (controller-runtime's
// certwatcher), so any issuer that writes files — cert-manager, a mounted
// Secret — rotates certificates without a restart.
//
// In self-managed mode (SelfManaged) the webhook issues its own: a CA and a
// serving certificate kept in one Secret of its namespace that every replica
// reads and at most one writes per rotation (optimistic concurrency), the CA
// injected into its MutatingWebhookConfiguration, and the certificate served
// from memory only once the API server trusts it. It knows nothing of
// admission or pull secrets.
//
// Generate makes a CA and a serving certificate signed by it, for local runs
// (make demo) and the end-to-end tests.
package certs
