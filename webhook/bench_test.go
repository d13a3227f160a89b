package webhook

import (
	"context"
	"testing"

	"github.com/go-logr/logr"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// BenchmarkHandleWarm measures a review whose Secret already exists: the
// cost is decoding, matching and patching.
func BenchmarkHandleWarm(b *testing.B) {
	h, _ := testHandler(b, instantSecrets{}, func(o *Options) { o.Log = logr.Discard() })
	pod := []byte(`{
  "apiVersion": "v1", "kind": "Pod",
  "metadata": {"generateName": "web-7d9f8c6b5-", "namespace": "team-a",
    "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5"},
    "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"},
    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c6b5", "uid": "0d8f", "controller": true}]},
  "spec": {
    "serviceAccountName": "web",
    "imagePullSecrets": [{"name": "regcred"}],
    "initContainers": [{"name": "migrate", "image": "artifactory.example.com/team/migrate:3.1",
      "command": ["/migrate", "--up"], "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
    "containers": [
      {"name": "app", "image": "artifactory.example.com/team/app:1.0",
       "ports": [{"containerPort": 8080, "protocol": "TCP"}],
       "env": [{"name": "MODE", "value": "production"}, {"name": "LOG_LEVEL", "value": "info"}],
       "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
       "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}},
      {"name": "proxy", "image": "team.jfrog.example.io/docker/envoy@sha256:4b0bb1e4e6b4b6d0f8b1a7e0d9c5e8f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7"},
      {"name": "metrics", "image": "prom/statsd-exporter:v0.26.0"}
    ],
    "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}]
  }
}`)
	req := podRequest(b, testNamespace, pod)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if resp := h.Handle(ctx, req); len(resp.Patches) != 2 {
			b.Fatalf("patches = %v", resp.Patches)
		}
	}
}

// instantSecrets answers at once without recording, so the benchmark
// measures the handler alone.
type instantSecrets struct{}

func (instantSecrets) EnsureAs(_ context.Context, _ string, inst config.Instance, _ credentials.Identity, _ bool) (pullsecret.Result, error) {
	return pullsecret.Result{SecretName: inst.SecretName, Action: pullsecret.ActionReused}, nil
}
