package main

import (
	"fmt"
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// cacheOptions keeps the informer caches to what the webhook reads, so that
// memory grows little with the number of namespaces: Namespaces as metadata
// reduced to the opt-in label. Managed Secrets have caches of their own, one
// per configured name (secretCaches), reduced to their metadata and a digest
// of their data (pullsecret.SecretTransform: no token is cached).
//
// Reads of both skip the deep copy: nothing mutates what it reads from the
// cache (the Store updates an object read from the API server; shown by
// pullsecret's TestStoreAndRefresherNeverMutateWhatTheyReadFromTheCache,
// and the admission handler only reads a namespace's label), and every
// admission and refresh saves copying the maps.
func cacheOptions(cfg *config.Config) (cache.Options, error) {
	key, value, err := config.SplitLabel(cfg.NamespaceLabel)
	if err != nil {
		return cache.Options{}, err
	}
	o := cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			namespaceObject(): {Transform: namespaceTransform(key, value), UnsafeDisableDeepCopy: ptr.To(true)},
		},
	}
	if cfg.PerServiceAccount() {
		o.ByObject[pullsecret.ServiceAccountObject()] = cache.ByObject{
			Transform:             serviceAccountTransform(pullsecret.ServiceAccountAnnotations(cfg.ServiceAccounts.OptInAnnotation)),
			UnsafeDisableDeepCopy: ptr.To(true),
		}
	}
	return o, nil
}

// serviceAccountTransform keeps of a ServiceAccount (metadata) its name,
// namespace, UID, resourceVersion and the annotations in keys: the
// identity read at admission. Tokens and pull secret lists never enter
// the cache.
func serviceAccountTransform(keys []string) toolscache.TransformFunc {
	strip := cache.TransformStripManagedFields()
	return func(obj any) (any, error) {
		sa, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			return strip(obj)
		}
		out := &metav1.PartialObjectMetadata{
			TypeMeta: metav1.TypeMeta{APIVersion: intern(sa.APIVersion), Kind: intern(sa.Kind)},
			ObjectMeta: metav1.ObjectMeta{Name: sa.Name, Namespace: intern(sa.Namespace), UID: sa.UID,
				ResourceVersion: sa.ResourceVersion, DeletionTimestamp: sa.DeletionTimestamp},
		}
		for _, k := range keys {
			if v, ok := sa.Annotations[k]; ok {
				if out.Annotations == nil {
					out.Annotations = make(map[string]string, len(keys))
				}
				out.Annotations[k] = v
			}
		}
		return out, nil
	}
}

// namespaceTransform keeps of a Namespace what admission and the refresher
// read: name, UID, resourceVersion, deletionTimestamp and the opt-in label
// (key optInKey) only. The label set of opted-in namespaces is one map
// shared by all of them: the cache never mutates it and readers get copies.
func namespaceTransform(optInKey, optInValue string) toolscache.TransformFunc {
	optedIn := map[string]string{optInKey: optInValue}
	strip := cache.TransformStripManagedFields()
	return func(obj any) (any, error) {
		ns, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			return strip(obj)
		}
		out := &metav1.PartialObjectMetadata{
			TypeMeta: metav1.TypeMeta{APIVersion: intern(ns.APIVersion), Kind: intern(ns.Kind)},
			ObjectMeta: metav1.ObjectMeta{Name: ns.Name, UID: ns.UID, ResourceVersion: ns.ResourceVersion,
				DeletionTimestamp: ns.DeletionTimestamp},
		}
		if v, ok := ns.Labels[optInKey]; ok {
			out.Labels = optedIn
			if v != optInValue {
				out.Labels = map[string]string{optInKey: v}
			}
		}
		return out, nil
	}
}

func namespaceObject() *metav1.PartialObjectMetadata {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return ns
}

func intern(s string) string { return unique.Make(s).Value() }

// serviceAccountCache is the metadata cache of the ServiceAccounts whose
// creation the ServiceAccount patcher (patchServiceAccounts) watches: every
// one (all), or only those named default, selected by a metadata.name field
// selector, which RBAC authorizes by resourceNames. It keeps their names
// and the patcher's books annotation.
func serviceAccountCache(mgr manager.Manager, restCfg *rest.Config, all bool, books string) (cache.Cache, error) {
	by := cache.ByObject{Transform: serviceAccountTransform([]string{books}), UnsafeDisableDeepCopy: ptr.To(true)}
	if !all {
		by.Field = fields.OneTermEqualSelector("metadata.name", "default")
	}
	c, err := cache.New(restCfg, cache.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(), HTTPClient: mgr.GetHTTPClient(),
		ByObject: map[client.Object]cache.ByObject{pullsecret.ServiceAccountObject(): by}})
	if err != nil {
		return nil, fmt.Errorf("ServiceAccount cache: %w", err)
	}
	return c, mgr.Add(managerCache{c})
}
