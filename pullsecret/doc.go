// Package pullsecret owns the lifecycle of the managed image pull Secrets:
// one kubernetes.io/dockerconfigjson Secret per (namespace, Artifactory
// instance), labelled app.kubernetes.io/managed-by=artifactory-pull-webhook.
//
// At admission, Store.Ensure decides whether the Secret in a namespace is
// still good, writes it when it is missing, near expiry or describes other
// hosts, and never touches a Secret it does not manage. Secrets are read
// from an informer cache that holds only managed Secrets; writes go to the
// API server. A fresh Secret costs no API call and no token lookup; a dry
// run writes nothing and mints nothing. Writes of one Secret are coalesced
// (concurrent callers share one; the Store trusts its own recent write over
// a cache that lags), so a Secret is written once per rotation. The cache
// holds Secrets reduced by SecretTransform (metadata and a data digest, no
// token).
//
// The Checkpoint keeps every minted token in one Secret in the webhook's own
// namespace and seeds the token cache from it at start, so a restart causes
// no exchange. Managed Secrets are never read back as tokens: tenants can
// write them.
//
// After admission, the Refresher (a controller run by the elected leader)
// keeps those Secrets valid: it rewrites each one just after its token's
// refresh point (Store.Sync: one mint per rotation through the shared token
// cache, a write only when the content changes), restores a managed Secret
// that is deleted or edited, and deletes the managed Secrets of a namespace
// that stops opting in (Store.Delete). It records Events on the namespace.
//
// A rotation rewrites every managed Secret, so the refresher's writes are
// paced (config refresh.writesPerSecond; Options.RefreshPace) and go
// through a client of its own (Options.RefreshWriter); admissions' writes
// are never paced and share no client with it. Both write through one
// Store, which keeps sharing a write of a Secret between them: the
// refresher waits for its pace before a write is shared, never inside one.
// Secrets are written in the order their tokens become due: each is
// requeued for just after its refresh point, the delaying queue hands them
// out in that order, and the pace serves waiting writes first come, first
// served. ManagedSecrets counts what a rotation writes; at start the count
// must fit in a quarter of the smallest refresh window
// (config.CheckRotation), and it feeds the rotation gauges.
//
// It knows credentials (tokens) but nothing about admission or pods.
package pullsecret
