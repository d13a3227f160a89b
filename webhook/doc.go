// Package webhook owns admission: it decodes a pod CREATE review, decides
// whether the pod gets a pull secret, and answers with a JSON patch that adds
// the secret names to spec.imagePullSecrets.
//
// Handler.ServeHTTP serves /mutate. It reads the body once (at most 7 MiB,
// Content-Type application/json, POST) and walks it in one pass with the
// streaming tokenizer of github.com/go-json-experiment/json/jsontext,
// keeping only what the review uses (review.go): the request's uid, kind,
// resource, subResource, namespace, operation, name and dryRun, and from
// request.object the pod's name, generateName, opt-out label, images,
// imagePullSecrets and serviceAccountName. Everything else is skipped
// without being built. The result means what controller-runtime's decoding
// followed by sigs.k8s.io/json gave before: case-sensitive names, the last
// of duplicate names winning (objects merged), null kept apart from an
// absent or empty imagePullSecrets, invalid UTF-8 replaced, and a value of
// the wrong type refusing the review (or, inside the object, admitting the
// pod unchanged with a warning). FuzzReviewDecoder holds it to that.
// A body that is not an admission.k8s.io/v1 AdmissionReview with a request
// is refused with HTTP 400 saying why.
//
// The review reads top-down in Handler.review: kind and operation →
// namespace opt-in → pod opt-out → images (config.Matcher) → secrets (the
// Secrets interface, implemented by package pullsecret) → patch. The answer
// is written from fixed pieces: the AdmissionReview, the uid, the
// warnings, and the base64 JSON patch.
//
// The webhook always fails open: a malformed pod, an unreachable
// Artifactory, a timeout or a panic while reviewing admits the pod unchanged
// with a warning, so that the webhook can never block workloads. A request
// that is not a v1 AdmissionReview (or a panic reading it) gets an HTTP
// error (400, 405, 413, 500) rather than an answer: the API server then
// applies the webhook's failurePolicy, Ignore in the chart.
//
// It knows nothing of tokens, AWS or how Secrets are written; it only asks
// Secrets for a Secret name per matched instance.
//
// Wiring (done by main):
//
//	h, err := webhook.NewHandler(webhook.Options{...})
//	srv.Register("/mutate", h)
//
// Options.Namespaces is read with *metav1.PartialObjectMetadata objects, so a
// metadata-only informer (labels only) backs it.
package webhook
