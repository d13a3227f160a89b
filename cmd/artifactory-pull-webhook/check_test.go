package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
)

func TestCheckUsageAndConfigFailures(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("instances:\n- name: main\n  url: http://insecure.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args        []string
		code        int
		stdout      []string // substrings, in order
		stderr      string
		emptyStdout bool
	}{
		{args: []string{"--output=yaml"}, code: 2, stderr: `--output "yaml": want text or json`, emptyStdout: true},
		{args: []string{"--service-account=api"}, code: 2, stderr: "--namespace and --service-account go together", emptyStdout: true},
		{args: []string{"--config=" + filepath.Join(dir, "missing.yaml")}, code: 1,
			stdout: []string{"✗ config", "missing.yaml", "fix:   correct the field the error names", "1 of 1 steps failed"}},
		{args: []string{"--config=" + bad}, code: 1, stdout: []string{"✗ config", "instances[0].url", "1 of 1 steps failed"}},
		{args: []string{"-h"}, code: 0, stderr: "Usage: artifactory-pull-webhook check", emptyStdout: true},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		code := check(context.Background(), tc.args, &stdout, &stderr)
		if code != tc.code {
			t.Errorf("check %v: exit %d, want %d (stdout %q, stderr %q)", tc.args, code, tc.code, stdout.String(), stderr.String())
		}
		if tc.emptyStdout && stdout.Len() != 0 {
			t.Errorf("check %v printed %q on stdout", tc.args, stdout.String())
		}
		if !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("check %v: stderr %q, want %q", tc.args, stderr.String(), tc.stderr)
		}
		rest := stdout.String()
		for _, want := range tc.stdout {
			i := strings.Index(rest, want)
			if i < 0 {
				t.Errorf("check %v: stdout %q lacks %q (in order)", tc.args, stdout.String(), want)
				break
			}
			rest = rest[i+len(want):]
		}
	}
}

func TestCheckJSONIsOneReport(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := check(context.Background(), []string{"--config=/nonexistent/config.yaml", "--output=json"}, &stdout, &stderr)
	var r checkReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout.String())
	}
	if code != 1 || r.OK || len(r.Steps) != 1 || r.Steps[0].Step != "config" || r.Steps[0].Result != stepFailed || r.Steps[0].Fix == "" {
		t.Errorf("exit %d, report %+v", code, r)
	}
}

// TestCheckSigningJudgesThePartition: a GovCloud or China role needs
// aws.region (its STS cannot verify a signature for every region), a
// region of another partition than the role's fails, and the aws
// partition signs globally.
func TestCheckSigningJudgesThePartition(t *testing.T) {
	creds := awssdk.AnonymousCredentials{}
	tests := []struct {
		role, region, result, fix string
	}{
		{"arn:aws:iam::123456789012:role/p", "", stepPassed, ""},
		{"arn:aws-us-gov:iam::123456789012:role/p", "", stepFailed, "set aws.region to the role's region (e.g. us-gov-west-1)"},
		{"arn:aws-cn:iam::123456789012:role/p", "", stepFailed, "(e.g. cn-north-1)"},
		{"arn:aws-us-gov:iam::123456789012:role/p", "us-gov-west-1", stepPassed, ""},
		{"arn:aws-us-gov:iam::123456789012:role/p", "eu-west-1", stepFailed, "partition aws-us-gov"},
		{"arn:aws:iam::123456789012:role/p", "cn-north-1", stepFailed, "partition aws"},
	}
	for _, tc := range tests {
		c := &checker{cfg: &config.Config{AWS: config.AWS{Region: tc.region}}, aws: creds, role: tc.role}
		c.signing()
		if len(c.steps) != 1 || c.steps[0].Result != tc.result || !strings.Contains(c.steps[0].Fix, tc.fix) {
			t.Errorf("role %s, region %q: %+v, want %s with fix ∋ %q", tc.role, tc.region, c.steps, tc.result, tc.fix)
		}
	}
}
