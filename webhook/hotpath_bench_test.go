package webhook

import (
	"fmt"
	"testing"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
)

// The hot path of an admission, step by step: `make go-bench` runs these
// with -benchmem; BenchmarkHandleWarm (bench_test.go) is the whole handler.

var benchImages = []string{
	"artifactory.example.com/team/app:1.0",
	"team.jfrog.example.io/docker/envoy@sha256:4b0bb1e4e6b4b6d0f8b1a7e0d9c5e8f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7",
	"prom/statsd-exporter:v0.26.0",
	"nginx",
}

// BenchmarkMatchImage is matching once the Matcher has seen the images
// (the steady state: a cluster pulls from a small set of images).
func BenchmarkMatchImage(b *testing.B) {
	m := config.NewMatcher(testConfig(b).Instances)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, _, err := m.Match(benchImages[i%len(benchImages)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMatchImageFirstSight is matching images never seen before: the
// full reference parse.
func BenchmarkMatchImageFirstSight(b *testing.B) {
	m := config.NewMatcher(testConfig(b).Instances)
	images := make([]string, 2*4096) // twice the Matcher's memo
	for i := range images {
		images[i] = fmt.Sprintf("artifactory.example.com/team/app-%d:1.0", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, _, err := m.Match(images[i%len(images)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodePod is decoding the few fields used from a 4 KiB pod.
func BenchmarkDecodePod(b *testing.B) {
	raw := warmPodJSON()
	var d decoder
	var p pod
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.decodePod(raw, &p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPullSecretPatch is building the JSON patch for two instances on a
// pod that already has an imagePullSecret.
func BenchmarkPullSecretPatch(b *testing.B) {
	var d decoder
	var p pod
	if err := d.decodePod(warmPodJSON(), &p); err != nil {
		b.Fatal(err)
	}
	names := []string{"artifactory-main", "artifactory-cloud"}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		if add := p.secretsToAdd(names); len(add) != 2 {
			b.Fatalf("add = %v", add)
		} else {
			buf = p.appendPatch(buf[:0], add)
		}
	}
}

// BenchmarkHandleNoMatch is a review in an opted-in namespace whose pod has
// no Artifactory image.
func BenchmarkHandleNoMatch(b *testing.B) {
	h, _ := testHandler(b, instantSecrets{}, benchOptions)
	serveBench(b, h, podRequest(b, testNamespace, simplePod("nginx:1.27", "ghcr.io/org/sidecar:2", "prom/statsd-exporter:v0.26.0")), 0)
}

func warmPodJSON() []byte {
	return []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-7d9f8c6b5-","namespace":"team-a",
"labels":{"app":"web","pod-template-hash":"7d9f8c6b5","app.kubernetes.io/part-of":"shop"},
"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-01-01T00:00:00Z","prometheus.io/scrape":"true"}},
"spec":{"serviceAccountName":"web","imagePullSecrets":[{"name":"regcred"}],
"initContainers":[{"name":"migrate","image":"artifactory.example.com/team/migrate:3.1","command":["/migrate","--up"],
 "resources":{"requests":{"cpu":"100m","memory":"64Mi"}}}],
"containers":[
 {"name":"app","image":"artifactory.example.com/team/app:1.0","ports":[{"containerPort":8080,"protocol":"TCP"}],
  "env":[{"name":"MODE","value":"production"},{"name":"LOG_LEVEL","value":"info"}],
  "resources":{"requests":{"cpu":"250m","memory":"256Mi"},"limits":{"memory":"512Mi"}},
  "readinessProbe":{"httpGet":{"path":"/healthz","port":8080},"periodSeconds":5},
  "livenessProbe":{"httpGet":{"path":"/healthz","port":8080},"periodSeconds":10}},
 {"name":"proxy","image":"team.jfrog.example.io/docker/envoy@sha256:4b0bb1e4e6b4b6d0f8b1a7e0d9c5e8f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7",
  "args":["-c","/etc/envoy/envoy.yaml"],"volumeMounts":[{"name":"envoy","mountPath":"/etc/envoy","readOnly":true}]},
 {"name":"metrics","image":"prom/statsd-exporter:v0.26.0","resources":{"requests":{"cpu":"20m","memory":"32Mi"}}}],
"volumes":[{"name":"envoy","configMap":{"name":"web-envoy","defaultMode":420}},
 {"name":"kube-api-access","projected":{"sources":[{"serviceAccountToken":{"path":"token","expirationSeconds":3607}}]}}]}}`)
}
