package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsNoAdmissionCode pins the plugin's boundary: it runs on nodes
// beside kubelet and shares the credentials core with the webhook, never
// the webhook's admission, Secret lifecycle or controller code.
func TestImportsNoAdmissionCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	var sawCredentials bool
	for _, d := range deps {
		if strings.HasSuffix(d, "/artifactory-pull-webhook/credentials") {
			sawCredentials = true
		}
		for _, banned := range []string{"/artifactory-pull-webhook/webhook", "/artifactory-pull-webhook/pullsecret",
			"sigs.k8s.io/controller-runtime", "k8s.io/api/admission/", "k8s.io/client-go/"} {
			if strings.Contains(d, banned) {
				t.Errorf("the credential provider imports %s", d)
			}
		}
	}
	if !sawCredentials {
		t.Errorf("the credential provider does not import the credentials core (deps: %d packages)", len(deps))
	}
}
