package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

// An API server throttling the refresher (API Priority and Fairness: 429
// with Retry-After) gets the update again after the wait, from client-go's
// own retry: the refresher's client relies on it.
func TestRefresherClientRetries429(t *testing.T) {
	var mu sync.Mutex
	var puts []time.Time
	agents := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/namespaces/team-a/secrets/artifactory-pull" || r.Method != http.MethodPut {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		mu.Lock()
		puts = append(puts, time.Now())
		n := len(puts)
		agents[r.UserAgent()] = true
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
				Status: metav1.StatusFailure, Reason: metav1.StatusReasonTooManyRequests, Code: http.StatusTooManyRequests,
				Message: "too many requests, please try again later"})
			return
		}
		_ = json.NewEncoder(w).Encode(&corev1.Secret{
			TypeMeta:   metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "artifactory-pull", ResourceVersion: "2"},
		})
	}))
	defer srv.Close()

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(corev1.SchemeGroupVersion.WithKind("Secret"), meta.RESTScopeNamespace)
	c, err := refresherClient(&rest.Config{Host: srv.URL}, scheme, mapper)
	if err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "artifactory-pull", ResourceVersion: "1"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Update(ctx, sec); err != nil {
		t.Fatalf("update after a 429: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(puts) != 2 {
		t.Fatalf("PUTs = %d, want 2 (the 429, then the retry)", len(puts))
	}
	if wait := puts[1].Sub(puts[0]); wait < 900*time.Millisecond {
		t.Errorf("retried after %s, want the Retry-After of 1s", wait)
	}
	if sec.ResourceVersion != "2" {
		t.Errorf("resourceVersion = %q, want the retried update's answer", sec.ResourceVersion)
	}
	if !agents[refresherUserAgent] || len(agents) != 1 {
		t.Errorf("user agents = %v, want only %q", agents, refresherUserAgent)
	}
}
