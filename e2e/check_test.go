package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/e2e/harness"
)

// checkReport is the check command's --output json, as a script reads it.
type checkReport struct {
	OK    bool `json:"ok"`
	Steps []struct {
		Step   string `json:"step"`
		Result string `json:"result"`
		Detail string `json:"detail"`
		Cause  string `json:"cause"`
		Fix    string `json:"fix"`
		More   string `json:"more"`
	} `json:"steps"`
}

// runCheck runs the check command of the stack's binary and fails t if it
// could not run. Its output joins the hygiene search's sources.
func runCheck(t *testing.T, id harness.Identity, cfg string, env []string, args ...string) harness.CheckResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r, err := stack.RunCheck(ctx, id, cfg, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	checkOutputs = append(checkOutputs, r.Stdout+r.Stderr)
	return r
}

// checkOutputs is everything check printed in this process, for the
// hygiene search.
var checkOutputs []string

// stepLine returns the line of step in check's text output, and the lines
// below it up to the next step.
func stepLine(out, step string) (line, below string) {
	lines := strings.Split(out, "\n")
	re := regexp.MustCompile(`^[✓✗-] ` + regexp.QuoteMeta(step) + `\s`)
	for i, l := range lines {
		if !re.MatchString(l) {
			continue
		}
		var rest []string
		for _, m := range lines[i+1:] {
			if !strings.HasPrefix(m, " ") {
				break
			}
			rest = append(rest, m)
		}
		return l, strings.Join(rest, "\n")
	}
	return "", ""
}

// TestCheckExplainsEachFailureOfTheFaultMatrix runs the check command
// against the emulators, healthy and then broken in each way the fault
// matrix breaks them: the step lines, the cause and fix of each failure,
// the exit codes and the JSON a script reads.
func TestCheckExplainsEachFailureOfTheFaultMatrix(t *testing.T) {
	cfg := stack.Config(harness.PodIdentity)
	roleName := stack.Emu.RoleARN[strings.LastIndex(stack.Emu.RoleARN, "/")+1:]
	assumed := regexp.MustCompile(`arn:aws:sts::\d{12}:assumed-role/` + regexp.QuoteMeta(roleName) + `/`)

	t.Run("success", func(t *testing.T) {
		r := runCheck(t, harness.PodIdentity, cfg, nil, "--instance=main")
		if r.ExitCode != 0 {
			t.Fatalf("exit %d, want 0:\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
		}
		for step, want := range map[string]string{
			"config":          "main (aws exchange, identity webhook)",
			"aws credentials": "EKS Pod Identity agent (authType podIdentity)",
			"caller identity": "Artifactory maps the role " + stack.Emu.RoleARN,
			"signing":         "SigV4A for every region (X-Amz-Region-Set *)",
			"exchange main":   "a token of user " + stack.Emu.Username + ", valid 1h0m0s (asked 1h0m0s)",
		} {
			line, _ := stepLine(r.Stdout, step)
			if !strings.HasPrefix(line, "✓") || !strings.Contains(line, want) {
				t.Errorf("step %s: line %q, want ✓ and %q\n%s", step, line, want, r.Stdout)
			}
		}
		if line, _ := stepLine(r.Stdout, "caller identity"); !assumed.MatchString(line) {
			t.Errorf("caller identity %q names no assumed-role ARN of %s", line, stack.Emu.RoleARN)
		}
		t.Logf("check printed:\n%s", r.Stdout)
		if !strings.Contains(r.Stdout, "all 5 steps passed") {
			t.Errorf("no closing line:\n%s", r.Stdout)
		}
	})

	t.Run("auto resolves IRSA and says why", func(t *testing.T) {
		r := runCheck(t, harness.IRSA, strings.Replace(stack.Config(harness.IRSA), "authType: webIdentity", "authType: auto", 1), nil, "--instance=main")
		line, _ := stepLine(r.Stdout, "aws credentials")
		if r.ExitCode != 0 || !strings.Contains(line, "IRSA (sts:AssumeRoleWithWebIdentity) (authType auto: AWS_ROLE_ARN ("+stack.Emu.RoleARN+") and AWS_WEB_IDENTITY_TOKEN_FILE are set)") {
			t.Errorf("exit %d, aws credentials %q\n%s%s", r.ExitCode, line, r.Stdout, r.Stderr)
		}
	})

	rows := []struct {
		name   string
		inject func(t *testing.T) (cfg string, heal func())
		step   string // the step that fails
		detail string // in its line: the failing service's own reason
		cause  string
		fix    string
	}{
		{name: "401 unmapped role", inject: func(*testing.T) (string, func()) {
			stack.Emu.Artifactory.RemoveMapping(stack.Emu.RoleARN)
			return cfg, func() { stack.Emu.Artifactory.SetMapping(stack.Emu.RoleARN, stack.Emu.Username) }
		}, step: "exchange main", detail: "HTTP 401", cause: "maps no user to its IAM role " + stack.Emu.RoleARN,
			fix: `PUT /access/api/v1/aws/iam_role {"username":"<user>","iam_role":"` + stack.Emu.RoleARN + `"}`},
		{name: "403 above the maximum", inject: func(*testing.T) (string, func()) {
			stack.Emu.Artifactory.SetStatus(403, `{"errors":[{"status":403,"message":"expires_in exceeds the admin limit of 1800 seconds"}]}`)
			return cfg, func() { stack.Emu.Artifactory.SetStatus(0, "") }
		}, step: "exchange main", detail: "exceeds the admin limit", cause: "above its maximum", fix: "tokenTTL to at most 1800s (now 1h0m0s)"},
		{name: "500", inject: func(*testing.T) (string, func()) {
			stack.Emu.Artifactory.SetStatus(500, `{"errors":[{"status":500,"message":"database connection pool exhausted"}]}`)
			return cfg, func() { stack.Emu.Artifactory.SetStatus(0, "") }
		}, step: "exchange main", detail: "database connection pool exhausted", cause: "HTTP 500", fix: "Access service"},
		{name: "garbage", inject: func(*testing.T) (string, func()) {
			stack.Emu.Artifactory.SetStatus(200, `<html><body>Sign in to JFrog</body></html>`)
			return cfg, func() { stack.Emu.Artifactory.SetStatus(0, "") }
		}, step: "exchange main", detail: "Sign in to JFrog", cause: "login page or a proxy", fix: "Artifactory's base URL"},
		{name: "anonymous token", inject: func(*testing.T) (string, func()) {
			stack.Emu.Artifactory.SetStatus(200, `{"token_id":"t","access_token":"`+refusedToken+`","expires_in":3600,"username":"anonymous"}`)
			return cfg, func() { stack.Emu.Artifactory.SetStatus(0, "") }
		}, step: "exchange main", detail: `username "anonymous"`, cause: "CVE-2026-42018", fix: "upgrade Artifactory"},
		{name: "TLS unknown authority", inject: func(t *testing.T) (string, func()) {
			c := regexp.MustCompile(`(?m)^  caBundle: .*\n`).ReplaceAllString(cfg, "")
			if c == cfg {
				t.Fatal("no caBundle line to drop")
			}
			return c, func() {}
		}, step: "exchange main", detail: "certificate", cause: "authority the webhook does not trust", fix: "caBundle"},
		{name: "timeout", inject: func(*testing.T) (string, func()) {
			stack.Emu.Artifactory.SetDelay(3 * time.Second)
			return strings.Replace(cfg, "  tokenTTL: 1h\n", "  tokenTTL: 1h\n  exchangeTimeout: 1s\n", 1), func() { stack.Emu.Artifactory.SetDelay(0) }
		}, step: "exchange main", detail: "Client.Timeout", cause: "within the exchange timeout (1s)", fix: "exchangeTimeout"},
		{name: "pod identity agent down", inject: func(*testing.T) (string, func()) {
			stack.Emu.PodIdentity.SetDown(true)
			return cfg, func() { stack.Emu.PodIdentity.SetDown(false) }
		}, step: "aws credentials", detail: "pod identity agent is down", cause: "Pod Identity agent gave no credentials", fix: "Pod Identity association"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			c, heal := row.inject(t)
			defer heal()
			r := runCheck(t, harness.PodIdentity, c, nil, "--instance=main")
			if r.ExitCode != 1 {
				t.Errorf("exit %d, want 1", r.ExitCode)
			}
			line, below := stepLine(r.Stdout, row.step)
			if !strings.HasPrefix(line, "✗") || !strings.Contains(line, row.detail) {
				t.Errorf("step %s: line %q, want ✗ and %q", row.step, line, row.detail)
			}
			if !strings.Contains(below, "cause: ") || !strings.Contains(below, row.cause) {
				t.Errorf("step %s: cause %q, want %q", row.step, below, row.cause)
			}
			if !strings.Contains(below, "fix:   ") || !strings.Contains(below, row.fix) {
				t.Errorf("step %s: fix %q, want %q", row.step, below, row.fix)
			}
			if !regexp.MustCompile(`(?m)^\d+ of \d+ steps failed$`).MatchString(r.Stdout) {
				t.Errorf("no closing line counting the failure")
			}

			j := runCheck(t, harness.PodIdentity, c, nil, "--instance=main", "--output=json")
			var rep checkReport
			if err := json.Unmarshal([]byte(j.Stdout), &rep); err != nil {
				t.Fatalf("--output json: %v\n%s", err, j.Stdout)
			}
			if j.ExitCode != 1 || rep.OK {
				t.Errorf("json: exit %d, ok %v; want 1, false", j.ExitCode, rep.OK)
			}
			found := false
			for _, s := range rep.Steps {
				if s.Step == row.step {
					found = s.Result == "failed" && strings.Contains(s.Detail, row.detail) && strings.Contains(s.Cause, row.cause) && strings.Contains(s.Fix, row.fix)
				}
			}
			if !found {
				t.Errorf("json has no failed step %s with the detail, cause and fix: %s", row.step, j.Stdout)
			}
			t.Logf("check printed:\n%s%s", r.Stdout, r.Stderr)
		})
	}

	t.Run("bad usage exits 2", func(t *testing.T) {
		for _, args := range [][]string{{"--output=yaml"}, {"--namespace=x"}, {"extra"}} {
			if r := runCheck(t, harness.PodIdentity, cfg, nil, args...); r.ExitCode != 2 || r.Stdout != "" {
				t.Errorf("check %v: exit %d, stdout %q; want 2 and nothing", args, r.ExitCode, r.Stdout)
			}
		}
	})
	t.Run("an unknown instance is bad usage naming the instances", func(t *testing.T) {
		r := runCheck(t, harness.PodIdentity, cfg, nil, "--instance=nope")
		if r.ExitCode != 2 || r.Stdout != "" || !strings.Contains(r.Stderr, "name one of main, burst, faulty") {
			t.Errorf("exit %d, stdout %q, stderr %q", r.ExitCode, r.Stdout, r.Stderr)
		}
	})
	searchCheckOutputs(t)
}

// refusedToken is the token of a response the webhook refuses (an
// anonymous user): it must not be printed either.
const refusedToken = "cmVmdGtuOjAxOjE3NjAwMDAwMDA6QWJDZEVmR2hJaktsTW5PcFFyU3RVdld4WXo"

// searchCheckOutputs is the hygiene search over everything check printed:
// no token, key or ServiceAccount token the emulators issued or received.
func searchCheckOutputs(t *testing.T) {
	t.Helper()
	sources := map[string]string{}
	for i, o := range checkOutputs {
		sources[fmt.Sprintf("check output #%d", i)] = o
	}
	searchForSecrets(t, sources, map[string]string{"the Pod Identity token": stack.Emu.PodIdentityToken,
		"the refused anonymous token": refusedToken})
}

// TestCheckShowsTheIdentityOfANamespacesServiceAccount runs check for a
// namespace and ServiceAccount: with a per-ServiceAccount instance it
// resolves the role the ServiceAccount names and exchanges as it (that
// team's user), says what a ServiceAccount without a role gets, and names
// the label a namespace that did not opt in lacks.
func TestCheckShowsTheIdentityOfANamespacesServiceAccount(t *testing.T) {
	run := runInstance("check")
	cfg := perSAConfig(run)
	a := newTeam(t, "a")
	createServiceAccount(t, a.ns, "api", map[string]string{config.RoleARNAnnotation: a.role})
	createServiceAccount(t, a.ns, "plain", nil)

	r := runCheck(t, harness.PodIdentity, cfg, nil, "--namespace="+a.ns, "--service-account=api")
	want := map[string]string{
		"namespace " + a.ns:                              "✓ namespace " + a.ns + "  opted in",
		"identity team" + run + " as " + a.ns + "/api":   "role " + a.role,
		"exchange team" + run + " as " + a.ns + "/api":   "a token of user " + a.user,
		"identity shared" + run + " as " + a.ns + "/api": "role " + a.role,
	}
	for step, w := range want {
		if line, _ := stepLine(r.Stdout, step); !strings.HasPrefix(line, "✓") || !strings.Contains(strings.Join(strings.Fields(line), " "), strings.Join(strings.Fields(w), " ")) {
			t.Errorf("step %s: %q, want ✓ and %q", step, line, w)
		}
	}
	if r.ExitCode != 0 {
		t.Errorf("exit %d, want 0:\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}

	r = runCheck(t, harness.PodIdentity, cfg, nil, "--namespace="+a.ns, "--service-account=plain")
	line, below := stepLine(r.Stdout, "identity team"+run+" as "+a.ns+"/plain")
	if r.ExitCode != 1 || !strings.HasPrefix(line, "✗") || !strings.Contains(below, "annotate ServiceAccount plain with "+config.RoleARNAnnotation) {
		t.Errorf("ServiceAccount without a role, fallback none: exit %d, %q %q", r.ExitCode, line, below)
	}
	if line, _ := stepLine(r.Stdout, "identity shared"+run+" as "+a.ns+"/plain"); !strings.HasPrefix(line, "✓") || !strings.Contains(line, "falls back to the webhook's own identity") {
		t.Errorf("ServiceAccount without a role, fallback webhook: %q", line)
	}

	other := namespace(t, nil)
	createServiceAccount(t, other, "api", nil)
	r = runCheck(t, harness.PodIdentity, stack.Config(harness.PodIdentity), nil, "--instance=main", "--namespace="+other, "--service-account=api")
	line, below = stepLine(r.Stdout, "namespace "+other)
	if r.ExitCode != 1 || !strings.HasPrefix(line, "✗") || !strings.Contains(below, "kubectl label namespace "+other+" "+harness.OptInLabel) {
		t.Errorf("namespace not opted in: exit %d, %q %q", r.ExitCode, line, below)
	}
	if line, _ := stepLine(r.Stdout, "identity main as "+other+"/api"); !strings.Contains(line, "the webhook's own identity") {
		t.Errorf("identity webhook instance: %q", line)
	}
	searchCheckOutputs(t)
}
