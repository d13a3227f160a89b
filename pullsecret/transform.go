package pullsecret

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AnnotationDataSHA256 exists only in the informer cache, never on the API
// server: SecretTransform replaces a cached Secret's data with this digest
// (see DataDigest), so that the cache holds no token while Sync can still
// tell whether the data is what it would write.
const AnnotationDataSHA256 = annotationPrefix + "data-sha256"

const annotationPrefix = "artifactory-pull-webhook/"

// managedLabels is the label set of every cached managed Secret, shared by
// all of them: the cache never mutates it and its readers get deep copies.
var managedLabels = map[string]string{ManagedByLabel: ManagedByValue}

// perServiceAccountLabels is the label set of cached Secrets of a
// ServiceAccount's identity, shared likewise.
var perServiceAccountLabels = map[string]string{ManagedByLabel: ManagedByValue, LabelPerServiceAccount: "true"}

// cachedAnnotations are the annotations a cached Secret keeps, in the order
// of annotationValues.
var cachedAnnotations = [...]string{AnnotationInstallation, AnnotationInstance, AnnotationIdentity, AnnotationFingerprint, AnnotationIssuedAt, AnnotationExpiresAt,
	AnnotationHosts, AnnotationDataSHA256}

type annotationValues [len(cachedAnnotations)]string

// maxSharedAnnotationSets bounds the transform's table of shared annotation
// sets; there are about as many as instances × tokens alive.
const maxSharedAnnotationSets = 256

// SecretTransform returns the informer transform (cache.TransformFunc) for
// managed Secrets. It keeps what the Store and the Refresher read: name,
// namespace, UID, resourceVersion, type, the managed-by and
// per-service-account labels and the
// artifactory-pull-webhook/* annotations; the data is replaced by its
// digest in AnnotationDataSHA256. Everything else, the token above all, is
// dropped, which keeps the cache small (the data holds the token once per
// registry host) and keeps tokens out of the cache.
//
// The Secrets of one instance written with one token have the same
// annotations and digest in every namespace, so they share one annotation
// map (and all share one label map): the cache never mutates objects and
// its readers get deep copies.
//
// Cached Secrets are therefore not writable: the Store reads the object
// from the API server before it updates one.
func SecretTransform() func(any) (any, error) {
	var mu sync.Mutex
	shared := map[annotationValues]map[string]string{}
	// share returns the one map holding exactly the annotations in key.
	share := func(key annotationValues) map[string]string {
		mu.Lock()
		defer mu.Unlock()
		if m, ok := shared[key]; ok {
			return m
		}
		if len(shared) >= maxSharedAnnotationSets {
			clear(shared) // maps handed out stay valid; only later Secrets stop sharing them
		}
		m := make(map[string]string, len(cachedAnnotations))
		for i, k := range cachedAnnotations {
			m[k] = key[i]
		}
		shared[key] = m
		return m
	}
	return func(obj any) (any, error) {
		sec, ok := obj.(*corev1.Secret)
		if !ok {
			return obj, nil
		}
		out := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name:              intern(sec.Name),
				Namespace:         sec.Namespace,
				UID:               sec.UID,
				ResourceVersion:   sec.ResourceVersion,
				DeletionTimestamp: sec.DeletionTimestamp,
			},
			Type: corev1.SecretType(intern(string(sec.Type))),
		}
		if isManaged(sec) {
			out.Labels = managedLabels
			if sec.Labels[LabelPerServiceAccount] == "true" {
				out.Labels = perServiceAccountLabels
			}
		}
		// Idempotent, as client-go recommends: an already reduced Secret
		// keeps its digest. (A digest set by hand on a Secret without data
		// could only mislead about that one Secret, which its author can
		// break anyway.)
		digest := sec.Annotations[AnnotationDataSHA256]
		if sec.Data != nil || digest == "" {
			digest = DataDigest(sec.Data)
		}
		var key annotationValues
		known, own := 0, 0
		for i, k := range cachedAnnotations {
			if v, ok := sec.Annotations[k]; ok {
				key[i] = v
				known++
			}
		}
		for k := range sec.Annotations {
			if strings.HasPrefix(k, annotationPrefix) {
				own++
			}
		}
		key[len(key)-1] = digest
		if _, ok := sec.Annotations[AnnotationDataSHA256]; !ok {
			known, own = known+1, own+1
		}
		if known == len(cachedAnnotations) && own == known {
			out.Annotations = share(key)
			return out, nil
		}
		// Some annotation missing or an unknown one of ours: not shared.
		out.Annotations = make(map[string]string, own)
		for k, v := range sec.Annotations {
			if strings.HasPrefix(k, annotationPrefix) {
				out.Annotations[k] = v
			}
		}
		out.Annotations[AnnotationDataSHA256] = digest
		return out, nil
	}
}

// DataDigest is the hex SHA-256 of the dockerconfigjson in data, or "" when
// data is not exactly one non-empty .dockerconfigjson key (so a Secret with
// extra keys never matches what the Store writes).
func DataDigest(data map[string][]byte) string {
	if _, pull := data[corev1.DockerConfigJsonKey]; !pull && len(data) > 0 {
		return keysDigest(data) // a generic token Secret's keys
	}
	v := data[corev1.DockerConfigJsonKey]
	if len(data) != 1 || len(v) == 0 {
		return ""
	}
	sum := sha256.Sum256(v)
	return hex.EncodeToString(sum[:])
}

// keysDigest digests every key and value of data, in key order, each
// length-prefixed (so that no two maps share an encoding), marked apart
// from a pull Secret's digest.
func keysDigest(data map[string][]byte) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(data)) {
		v := data[k]
		fmt.Fprintf(h, "%d:%s%d:", len(k), k, len(v))
		h.Write(v)
	}
	return "keys:" + hex.EncodeToString(h.Sum(nil))
}

// dataDigest is the digest of sec's data: computed when sec carries its
// data (an object read from the API server, or a test's cache), else the
// one SecretTransform recorded.
func dataDigest(sec *corev1.Secret) string {
	if sec.Data != nil {
		return DataDigest(sec.Data)
	}
	return sec.Annotations[AnnotationDataSHA256]
}

func intern(s string) string { return unique.Make(s).Value() }
