package webhook

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A request that is not an admission.k8s.io/v1 AdmissionReview is refused
// with an HTTP error saying what is wrong (the API server then applies the
// failurePolicy), never answered with a denial.
func TestServeHTTPRefusesWhatIsNotAV1Review(t *testing.T) {
	const pod = `{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"team-a","object":{}}`
	for _, tc := range []struct {
		name, method, contentType, body string
		code                            int
		says                            string
	}{
		{"GET", http.MethodGet, "application/json", `{}`, http.StatusMethodNotAllowed, "expected POST"},
		{"no body", http.MethodPost, "application/json", "", http.StatusBadRequest, "body is empty"},
		{"YAML", http.MethodPost, "application/yaml", `{}`, http.StatusBadRequest, "expected application/json"},
		{"too large", http.MethodPost, "application/json", `{"a":"` + strings.Repeat("x", maxRequestSize) + `"}`, http.StatusRequestEntityTooLarge, "too large"},
		{"not JSON", http.MethodPost, "application/json", `{"apiVersion":`, http.StatusBadRequest, "not a JSON AdmissionReview"},
		{"array", http.MethodPost, "application/json", `[]`, http.StatusBadRequest, "JSON array"},
		{"trailing data", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":` + pod + `} {}`, http.StatusBadRequest, "not a JSON AdmissionReview"},
		{"v1beta1", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":` + pod + `}`, http.StatusBadRequest, `"admission.k8s.io/v1beta1" is not served`},
		{"no apiVersion nor kind", http.MethodPost, "application/json", `{"request":` + pod + `}`, http.StatusBadRequest, "no apiVersion nor kind"},
		{"another kind", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"Pod","request":` + pod + `}`, http.StatusBadRequest, `kind "Pod"`},
		{"no request", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest, "no request"},
		{"request of the wrong type", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":1}}`, http.StatusBadRequest, "cannot decode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secrets := &fakeSecrets{}
			h, _ := testHandler(t, secrets, nil)
			r := httptest.NewRequest(tc.method, "/mutate", bytes.NewReader([]byte(tc.body)))
			if tc.body == "" {
				r.Body = http.NoBody
			}
			r.Header.Set("Content-Type", tc.contentType)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.says) {
				t.Errorf("answer %d %q, want %d saying %q", rec.Code, rec.Body.String(), tc.code, tc.says)
			}
			if len(secrets.Calls()) != 0 {
				t.Errorf("Ensure called: %v", secrets.Calls())
			}
		})
	}
}
