package main

import (
	"encoding/json"
	"fmt"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// podTemplate is a Deployment-made pod as the API server hands it to a
// mutating webhook: defaults applied, service account volume not yet
// injected, about 4 KiB. %[1]s is the host of the Artifactory images, %[2]s
// the host of the sidecar that never matches.
const podTemplate = `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"checkout-7d9f8c6b5-","namespace":"%[3]s",
"labels":{"app.kubernetes.io/name":"checkout","app.kubernetes.io/instance":"checkout-prod","app.kubernetes.io/version":"4.12.0","app.kubernetes.io/part-of":"shop","pod-template-hash":"7d9f8c6b5"},
"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-01-01T00:00:00Z","prometheus.io/scrape":"true","prometheus.io/port":"9102","checksum/config":"4b0bb1e4e6b4b6d0f8b1a7e0d9c5e8f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7"},
"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"checkout-7d9f8c6b5","uid":"0d8f5b2e-8a0c-4f7e-9d51-6a3c2b1e0f4d","controller":true,"blockOwnerDeletion":true}]},
"spec":{"serviceAccountName":"checkout","automountServiceAccountToken":true,"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","schedulerName":"default-scheduler","enableServiceLinks":true,"preemptionPolicy":"PreemptLowerPriority","priority":0,
"securityContext":{"runAsNonRoot":true,"runAsUser":10001,"fsGroup":10001,"seccompProfile":{"type":"RuntimeDefault"}},
"imagePullSecrets":[{"name":"regcred"}],
"initContainers":[{"name":"migrate","image":"%[1]s/shop/checkout-migrate:4.12.0","command":["/migrate","--up","--timeout=60s"],
 "env":[{"name":"DB_HOST","value":"checkout-db.shop.svc"},{"name":"DB_PASSWORD","valueFrom":{"secretKeyRef":{"name":"checkout-db","key":"password"}}}],
 "resources":{"requests":{"cpu":"100m","memory":"64Mi"},"limits":{"memory":"128Mi"}},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent",
 "securityContext":{"allowPrivilegeEscalation":false,"readOnlyRootFilesystem":true,"capabilities":{"drop":["ALL"]}}}],
"containers":[
 {"name":"checkout","image":"%[1]s/shop/checkout:4.12.0","args":["--listen=:8080","--metrics=:9102","--log-format=json"],
  "ports":[{"name":"http","containerPort":8080,"protocol":"TCP"},{"name":"metrics","containerPort":9102,"protocol":"TCP"}],
  "env":[{"name":"MODE","value":"production"},{"name":"LOG_LEVEL","value":"info"},{"name":"POD_NAME","valueFrom":{"fieldRef":{"apiVersion":"v1","fieldPath":"metadata.name"}}},{"name":"POD_IP","valueFrom":{"fieldRef":{"apiVersion":"v1","fieldPath":"status.podIP"}}}],
  "envFrom":[{"configMapRef":{"name":"checkout-config"}}],
  "resources":{"requests":{"cpu":"250m","memory":"256Mi"},"limits":{"memory":"512Mi"}},
  "readinessProbe":{"httpGet":{"path":"/readyz","port":8080,"scheme":"HTTP"},"periodSeconds":5,"timeoutSeconds":1,"successThreshold":1,"failureThreshold":3},
  "livenessProbe":{"httpGet":{"path":"/healthz","port":8080,"scheme":"HTTP"},"initialDelaySeconds":10,"periodSeconds":10,"timeoutSeconds":1,"successThreshold":1,"failureThreshold":3},
  "volumeMounts":[{"name":"config","mountPath":"/etc/checkout","readOnly":true},{"name":"tmp","mountPath":"/tmp"}],
  "terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent",
  "securityContext":{"allowPrivilegeEscalation":false,"readOnlyRootFilesystem":true,"capabilities":{"drop":["ALL"]}}},
 {"name":"envoy","image":"%[1]s/platform/envoy@sha256:4b0bb1e4e6b4b6d0f8b1a7e0d9c5e8f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7","args":["-c","/etc/envoy/envoy.yaml","--log-level","warn"],
  "ports":[{"name":"proxy","containerPort":15001,"protocol":"TCP"}],
  "resources":{"requests":{"cpu":"50m","memory":"64Mi"},"limits":{"memory":"128Mi"}},
  "volumeMounts":[{"name":"envoy","mountPath":"/etc/envoy","readOnly":true}],
  "terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"},
 {"name":"log-shipper","image":"%[2]s/fluent/fluent-bit:3.0.7","resources":{"requests":{"cpu":"20m","memory":"32Mi"},"limits":{"memory":"64Mi"}},
  "volumeMounts":[{"name":"tmp","mountPath":"/var/log/app","readOnly":true}],
  "terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}],
"volumes":[{"name":"config","configMap":{"name":"checkout-config","defaultMode":420}},{"name":"envoy","configMap":{"name":"checkout-envoy","defaultMode":420}},{"name":"tmp","emptyDir":{"sizeLimit":"256Mi"}}],
"tolerations":[{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300},{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}],
"topologySpreadConstraints":[{"maxSkew":1,"topologyKey":"topology.kubernetes.io/zone","whenUnsatisfiable":"ScheduleAnyway","labelSelector":{"matchLabels":{"app.kubernetes.io/name":"checkout"}}}]}}`

// podJSON is the benchmark pod in namespace whose Artifactory images live on
// host (use a public registry host for a pod that matches nothing).
func podJSON(host, namespace string) []byte {
	return []byte(strings.Join(strings.Fields(fmt.Sprintf(podTemplate, host, "docker.io", namespace)), ""))
}

// review is the AdmissionReview the API server would send for creating pod
// in namespace.
func review(seq int, namespace string, pod []byte, dryRun bool) ([]byte, error) {
	r := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:             types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012d", seq)),
			Kind:            metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:        metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			RequestKind:     &metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			RequestResource: &metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace:       namespace,
			Operation:       admissionv1.Create,
			UserInfo:        authenticationv1.UserInfo{Username: "system:serviceaccount:kube-system:replicaset-controller", UID: "5f1c", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}},
			Object:          runtime.RawExtension{Raw: pod},
			Options:         runtime.RawExtension{Raw: []byte(`{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}`)},
			DryRun:          new(bool),
		},
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding admission review %d: %w", seq, err)
	}
	return b, nil
}
