package pullsecret

import (
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSecretTransformKeepsOnlyWhatTheStoreReadsAndNoToken(t *testing.T) {
	in := managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts)
	in.UID, in.ResourceVersion = "uid-1", "42"
	in.Labels["team"] = "a"
	in.Annotations["kubectl.kubernetes.io/last-applied-configuration"] = `{"big":"blob"}`
	in.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	in.OwnerReferences = []metav1.OwnerReference{{Name: "owner"}}
	want := DataDigest(in.Data)

	transform := SecretTransform()
	got, err := transform(in.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	out := got.(*corev1.Secret)
	if out.Data != nil || out.StringData != nil || strings.Contains(out.String(), rawToken) {
		t.Errorf("the reduced Secret still holds data: %v", out.Data)
	}
	if out.Name != in.Name || out.Namespace != in.Namespace || out.UID != in.UID || out.ResourceVersion != in.ResourceVersion ||
		out.Type != in.Type || out.ManagedFields != nil || out.OwnerReferences != nil {
		t.Errorf("metadata = %+v", out.ObjectMeta)
	}
	if !reflect.DeepEqual(out.Labels, map[string]string{ManagedByLabel: ManagedByValue}) {
		t.Errorf("labels = %v, want only the managed-by label", out.Labels)
	}
	for k := range in.Annotations {
		_, kept := out.Annotations[k]
		if strings.HasPrefix(k, annotationPrefix) != kept {
			t.Errorf("annotation %s kept = %v", k, kept)
		}
	}
	if out.Annotations[AnnotationDataSHA256] != want || want == "" {
		t.Errorf("digest = %q, want %q", out.Annotations[AnnotationDataSHA256], want)
	}
	again, _ := transform(out.DeepCopy())
	if !reflect.DeepEqual(again, out) {
		t.Error("the transform is not idempotent: a reduced Secret lost its digest")
	}
}

func TestDataDigestMatchesOnlyExactlyTheDockerConfig(t *testing.T) {
	cfg := []byte(`{"auths":{}}`)
	for name, data := range map[string]map[string][]byte{
		"none":      nil,
		"empty":     {corev1.DockerConfigJsonKey: nil},
		"extra key": {corev1.DockerConfigJsonKey: cfg, "extra": []byte("x")},
	} {
		if d := DataDigest(data); d != "" {
			t.Errorf("%s: digest %q, want \"\" (never equal to a written Secret's)", name, d)
		}
	}
	// Data without the dockerconfig key (a generic token Secret) is digested
	// whole, apart from every pull Secret's digest.
	token := map[string][]byte{"username": []byte("u"), "token": []byte("t")}
	if d := DataDigest(map[string][]byte{"config.json": cfg}); !strings.HasPrefix(d, "keys:") {
		t.Errorf("wrong key: digest %q, want a keys: digest (never a pull Secret's)", d)
	}
	if DataDigest(token) != DataDigest(map[string][]byte{"token": []byte("t"), "username": []byte("u")}) ||
		DataDigest(token) == DataDigest(map[string][]byte{"username": []byte("u"), "token": []byte("planted")}) ||
		DataDigest(token) == DataDigest(map[string][]byte{"username": []byte("ut"), "token": []byte("")}) {
		t.Error("the keys digest does not follow every key and value")
	}
	if DataDigest(map[string][]byte{corev1.DockerConfigJsonKey: cfg}) == DataDigest(map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{}`)}) {
		t.Error("different data, same digest")
	}
}

func TestSecretTransformSharesOneAnnotationMapPerToken(t *testing.T) {
	transform := SecretTransform()
	reduce := func(namespace, token string, issued time.Time) map[string]string {
		s := managedSecret(t, credAt(issued, token), instance().RegistryHosts)
		s.Namespace = namespace
		out, _ := transform(s)
		return out.(*corev1.Secret).Annotations
	}
	same := func(a, b map[string]string) bool {
		return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
	}

	a, b := reduce("team-a", rawToken, t0), reduce("team-b", rawToken, t0)
	if !same(a, b) {
		t.Error("two namespaces holding the same token got two annotation maps")
	}
	if c := reduce("team-c", "next-token", t0.Add(45*time.Minute)); same(a, c) || c[AnnotationExpiresAt] == a[AnnotationExpiresAt] {
		t.Error("Secrets with different tokens share annotations")
	}
	edited := managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts)
	edited.Data[corev1.DockerConfigJsonKey] = []byte("{}")
	out, _ := transform(edited)
	if d := out.(*corev1.Secret).Annotations; same(a, d) || d[AnnotationDataSHA256] == a[AnnotationDataSHA256] {
		t.Error("a Secret with edited data shares the annotations (and digest) of intact ones")
	}
}
