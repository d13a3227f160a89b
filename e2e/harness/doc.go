// Package harness starts the real components the end-to-end tests and the
// demo run against: a kube-apiserver and etcd (controller-runtime envtest,
// binaries built by the Makefile into bin/k8s), the webhook binary as a
// separate process serving TLS, and the MutatingWebhookConfiguration taken
// from deploy/manifests with only its clientConfig pointed at that process.
package harness
