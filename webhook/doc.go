// Package webhook owns admission: it decodes a pod CREATE review, decides
// whether the pod gets a pull secret, and answers with a JSON patch that adds
// the secret names to spec.imagePullSecrets.
//
// The request path reads top-down in Handler.Handle: review (kind and
// operation) → namespace opt-in → pod opt-out → images (config.Matcher) → secrets
// (the Secrets interface, implemented by package pullsecret) → patch.
//
// The webhook always fails open: a malformed object, an unreachable
// Artifactory, a timeout or a panic admits the pod unchanged with a warning,
// so that the webhook can never block workloads.
//
// It knows nothing of tokens, AWS or how Secrets are written; it only asks
// Secrets for a Secret name per matched instance.
//
// Wiring (done by main):
//
//	h, err := webhook.NewHandler(webhook.Options{...})
//	srv.Register("/mutate", &ctrlwebhook.Admission{Handler: h})
//
// Options.Namespaces is read with *metav1.PartialObjectMetadata objects, so a
// metadata-only informer (labels only) backs it.
package webhook
