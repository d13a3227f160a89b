package main

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNamespaceTransformKeepsOnlyTheOptInLabelAndIdentity(t *testing.T) {
	transform := namespaceTransform("artifactory-pull-webhook/inject", "enabled")
	now := metav1.Now()
	in := namespaceObject()
	in.Name, in.UID, in.ResourceVersion, in.DeletionTimestamp = "team-a", "uid-1", "7", &now
	in.Labels = map[string]string{"artifactory-pull-webhook/inject": "enabled", "kubernetes.io/metadata.name": "team-a", "team": "a"}
	in.Annotations = map[string]string{"big": "annotation"}
	in.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}

	got, err := transform(in.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	out := got.(*metav1.PartialObjectMetadata)
	want := namespaceObject()
	want.Name, want.UID, want.ResourceVersion, want.DeletionTimestamp = "team-a", "uid-1", "7", &now
	want.Labels = map[string]string{"artifactory-pull-webhook/inject": "enabled"}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("reduced namespace = %+v, want %+v", out, want)
	}

	for name, labels := range map[string]map[string]string{
		"opted out":    {"artifactory-pull-webhook/inject": "disabled"},
		"not labelled": {"team": "b"},
	} {
		in.Labels = labels
		got, _ := transform(in.DeepCopy())
		wantLabels := map[string]string(nil)
		if v, ok := labels["artifactory-pull-webhook/inject"]; ok {
			wantLabels = map[string]string{"artifactory-pull-webhook/inject": v}
		}
		if l := got.(*metav1.PartialObjectMetadata).Labels; !reflect.DeepEqual(l, wantLabels) {
			t.Errorf("%s: labels = %v, want %v", name, l, wantLabels)
		}
	}
}
