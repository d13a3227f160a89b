package webhook

import (
	"fmt"
	"slices"

	jsonpatch "gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
)

// pod holds only the fields of a Pod the webhook reads. Decoding into it
// instead of corev1.Pod skips the rest of the object cheaply.
type pod struct {
	Metadata struct {
		Name         string            `json:"name"`
		GenerateName string            `json:"generateName"`
		Labels       map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ServiceAccountName string `json:"serviceAccountName"`
		// ImagePullSecrets is nil when the field is absent or null; the
		// patch then adds the whole list instead of appending to it.
		ImagePullSecrets    []corev1.LocalObjectReference `json:"imagePullSecrets"`
		Containers          []container                   `json:"containers"`
		InitContainers      []container                   `json:"initContainers"`
		EphemeralContainers []container                   `json:"ephemeralContainers"`
	} `json:"spec"`
}

type container struct {
	Image string `json:"image"`
}

func decodePod(raw []byte) (*pod, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("decoding pod: empty object")
	}
	var p pod
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, &p); err != nil {
		return nil, fmt.Errorf("decoding pod: %w", err)
	}
	return &p, nil
}

// displayName is the pod's name, or its generateName prefix before the API
// server has named it.
func (p *pod) displayName() string {
	if p.Metadata.Name != "" {
		return p.Metadata.Name
	}
	return p.Metadata.GenerateName
}

// images calls fn for the image of every container, init and ephemeral
// container.
func (p *pod) images(fn func(image string)) {
	for _, list := range [...][]container{p.Spec.Containers, p.Spec.InitContainers, p.Spec.EphemeralContainers} {
		for _, c := range list {
			fn(c.Image)
		}
	}
}

// pullSecretPatch adds each of names to spec.imagePullSecrets once, keeping
// the entries already there.
func (p *pod) pullSecretPatch(names []string) []jsonpatch.Operation {
	existing := p.Spec.ImagePullSecrets
	var add []corev1.LocalObjectReference
	for _, n := range names {
		ref := corev1.LocalObjectReference{Name: n}
		if !slices.Contains(existing, ref) && !slices.Contains(add, ref) {
			add = append(add, ref)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if existing == nil {
		return []jsonpatch.Operation{{Operation: "add", Path: "/spec/imagePullSecrets", Value: add}}
	}
	ops := make([]jsonpatch.Operation, 0, len(add))
	for _, ref := range add {
		ops = append(ops, jsonpatch.Operation{Operation: "add", Path: "/spec/imagePullSecrets/-", Value: ref})
	}
	return ops
}
