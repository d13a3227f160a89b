package pullsecret

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// A Secret holding a token of an earlier configuration (the instance's url,
// tokenTTL or AWS identity changed under the same name) is rewritten at the
// next admission with a token of the current one, not kept until its
// refresh point.
func TestEnsureRewritesASecretOfAnotherTokenFingerprint(t *testing.T) {
	old := NewStore(Options{Fingerprints: map[string]string{"acme": "fp-old-url"}})
	sec, err := old.build(ns, newTarget(instance(), credentials.Identity{}), credAt(t0, "old-server-token"))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, interceptor.Funcs{}, sec)
	h.now = t0.Add(time.Minute) // fresh by its lifetime

	res, err := h.store.Ensure(context.Background(), ns, instance(), false)
	if err != nil || res.Action != ActionUpdated {
		t.Fatalf("Ensure = %q, %v; want the Secret of the old fingerprint rewritten", res.Action, err)
	}
	got := h.secret(t)
	if got.Annotations[AnnotationFingerprint] != "fp-acme" {
		t.Errorf("fingerprint annotation %q, want the current fp-acme", got.Annotations[AnnotationFingerprint])
	}
	if _, tok, _ := ParseDockerConfigJSON(got.Data[corev1.DockerConfigJsonKey], "acme.jfrog.io"); tok.Reveal() != rawToken {
		t.Error("the Secret still carries the old server's token")
	}
}

// Checkpoint entries of another fingerprint are neither seeded nor kept.
func TestCheckpointDropsEntriesOfAnEarlierConfiguration(t *testing.T) {
	current := credentials.Key{Instance: "acme", Identity: credentials.WebhookIdentity, Fingerprint: "fp-ttl-1h"}
	earlier := current
	earlier.Fingerprint = "fp-ttl-3h"
	h := newCheckpointHarness(t, interceptor.Funcs{},
		checkpointWith(t, map[credentials.Key]credentials.Credential{earlier: credAt(t0.Add(-time.Minute), "long-token")}))
	cp, err := NewCheckpoint(CheckpointOptions{Client: h.cp.client, Namespace: webhookNS, Keys: []credentials.Key{current},
		Now: func() time.Time { return h.now }})
	if err != nil {
		t.Fatal(err)
	}
	tokens := &fakeTokens{}
	if err := cp.Seed(context.Background(), tokens); err != nil {
		t.Fatal(err)
	}
	if len(tokens.seeded) != 0 {
		t.Fatalf("seeded %v: an entry of an earlier configuration must not be", tokens.seeded)
	}

	// The first mint under the current configuration replaces it, although
	// the earlier (3h) token expires later than the new (1h) one.
	cp.Record(current, credAt(t0, rawToken))
	cp.flush(context.Background())
	got, err := cp.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[current].Token.Reveal() != rawToken {
		t.Errorf("checkpoint holds %d entries after the mint; want only the current key's new token", len(got))
	}
	if n := len(h.secret(t).Data); n != 1 {
		t.Errorf("checkpoint Secret has %d entries, want 1: the earlier one dropped", n)
	}
}
