// Package pullsecret owns the lifecycle of the managed image pull Secrets:
// one kubernetes.io/dockerconfigjson Secret per (namespace, Artifactory
// instance), labelled app.kubernetes.io/managed-by=artifactory-pull-webhook.
//
// It decides whether the Secret in a namespace is still good, writes it when
// it is missing, near expiry or describes other hosts, and never touches a
// Secret it does not manage. Secrets are read from an informer cache that
// holds only managed Secrets; writes go to the API server. A fresh Secret
// costs no API call and no token lookup; a dry run writes nothing and mints
// nothing. Seed turns the valid Secrets found at start back into cached
// tokens, so a restart causes no exchange.
//
// It knows credentials (tokens) but nothing about admission or pods.
package pullsecret
