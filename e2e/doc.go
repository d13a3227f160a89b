// Package e2e proves the webhook against real components: a kube-apiserver
// and etcd (envtest), the webhook binary serving TLS and called by the API
// server through the production MutatingWebhookConfiguration, a real OCI
// registry (distribution/v3) pulled with kubelet's keychain, and strict
// emulators of AWS STS, the EKS Pod Identity agent and Artifactory's token
// endpoint (package emulator). The harness package starts them; make demo
// runs the same stack (cmd/demo).
package e2e
