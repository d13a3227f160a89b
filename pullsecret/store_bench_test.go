package pullsecret

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// copyingReader answers every Get with a deep copy of one Secret, as the
// informer cache does: the benchmark then measures what Ensure adds to it.
type copyingReader struct{ secret *corev1.Secret }

func (r copyingReader) Get(_ context.Context, _ client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return errors.New("copyingReader: only Secrets")
	}
	r.secret.DeepCopyInto(s)
	return nil
}

func (copyingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("copyingReader: List is not used by Ensure")
}

// BenchmarkEnsureFresh is the warm admission's Secret step: the cached
// Secret is fresh, so Ensure reads it, checks its annotations and returns.
func BenchmarkEnsureFresh(b *testing.B) {
	cred := credAt(t0, rawToken)
	sec, err := NewStore(Options{}).build(ns, newTarget(instance(), credentials.Identity{}), cred)
	if err != nil {
		b.Fatal(err)
	}
	tokens := &fakeTokens{cred: cred}
	s := NewStore(Options{Reader: copyingReader{sec}, Tokens: tokens, Now: func() time.Time { return t0.Add(time.Minute) }})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		res, err := s.Ensure(ctx, ns, instance(), false)
		if err != nil || res.Action != ActionReused {
			b.Fatalf("Ensure = %+v, %v", res, err)
		}
	}
	if tokens.gets != 0 {
		b.Fatalf("a fresh Secret asked the token source %d times", tokens.gets)
	}
}
