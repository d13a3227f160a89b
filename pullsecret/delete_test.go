package pullsecret

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// A tenant who replaces the managed Secret between the cache read and the
// delete keeps theirs: the delete is conditioned on what the cache saw, and
// the conflict is reported.
func TestDeleteLeavesASecretSubstitutedBehindTheCacheAndReportsTheConflict(t *testing.T) {
	api := fake.NewClientBuilder().WithObjects(managedSecret(t, credAt(t0, rawToken), instance().RegistryHosts)).Build()
	tenants := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: instance().SecretName, Namespace: ns, Labels: map[string]string{"team": "a"}},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"acme.jfrog.io":{"auth":"dGVhbTpvd24="}}}`)},
	}
	writer := interceptor.NewClient(api, interceptor.Funcs{
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			// The tenant swaps the Secret first.
			if err := c.Delete(ctx, obj.DeepCopyObject().(client.Object)); err != nil {
				t.Fatal(err)
			}
			if err := c.Create(ctx, tenants.DeepCopy()); err != nil {
				t.Fatal(err)
			}
			return c.Delete(ctx, obj, opts...)
		},
	})
	store := NewStore(Options{Reader: managedOnly{api}, Writer: writer, Tokens: &fakeTokens{}, Fingerprints: testPrints})

	deleted, err := store.Delete(context.Background(), ns, instance())
	if deleted || !apierrors.IsConflict(err) {
		t.Errorf("Delete = %v, %v; want not deleted and a Conflict", deleted, err)
	}
	var got corev1.Secret
	if err := api.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: instance().SecretName}, &got); err != nil {
		t.Fatalf("the tenant's Secret is gone: %v", err)
	}
	if got.Labels["team"] != "a" || string(got.Data[corev1.DockerConfigJsonKey]) != string(tenants.Data[corev1.DockerConfigJsonKey]) {
		t.Errorf("the tenant's Secret changed: %v", got)
	}
}
