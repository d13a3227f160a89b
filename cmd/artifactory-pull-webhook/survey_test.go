package main

import (
	"errors"
	"testing"
	"time"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/pullsecret"
)

// However often /metrics is read, the managed Secrets are listed at most
// once per surveyEvery for both scrape-time gauges; a failed survey is
// not kept.
func TestSurveyMemoListsAtMostOncePerPeriod(t *testing.T) {
	now := time.Unix(0, 0)
	calls, fail := 0, false
	m := &surveyMemo{every: 5 * time.Second, now: func() time.Time { return now },
		survey: func() (pullsecret.Survey, error) {
			calls++
			if fail {
				return pullsecret.Survey{}, errors.New("cache not synced")
			}
			return pullsecret.Survey{Managed: calls}, nil
		}}
	for range 10 { // ten scrapes within the period
		if sv, err := m.get(); err != nil || sv.Managed != 1 {
			t.Fatalf("get = %+v, %v; want the first survey", sv, err)
		}
		now = now.Add(400 * time.Millisecond)
	}
	if calls != 1 {
		t.Errorf("%d surveys in 4s, want 1", calls)
	}
	now = now.Add(time.Second) // the period is over
	fail = true
	if _, err := m.get(); err == nil {
		t.Error("a failed survey was not reported")
	}
	fail = false
	if sv, err := m.get(); err != nil || sv.Managed != 3 {
		t.Errorf("get after a failure = %+v, %v; want a new survey (the failure not kept)", sv, err)
	}
}
