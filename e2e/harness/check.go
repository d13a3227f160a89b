package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// CheckResult is what one run of the webhook's check command printed.
type CheckResult struct {
	Stdout, Stderr string
	ExitCode       int
}

// RunCheck runs the stack's webhook binary as "artifactory-pull-webhook
// check" with config, the environment identity id gives the webhook (plus
// env) and the stack's kubeconfig, then args.
func (s *Stack) RunCheck(ctx context.Context, id Identity, config string, env []string, args ...string) (CheckResult, error) {
	o, err := s.WebhookOptions(ctx, id)
	if err != nil {
		return CheckResult{}, err
	}
	dir, err := os.MkdirTemp(s.Dir, "check-")
	if err != nil {
		return CheckResult{}, err
	}
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		return CheckResult{}, err
	}
	cmd := exec.CommandContext(ctx, s.binary, append([]string{"check", "--config=" + cfgPath, "--kubeconfig=" + s.Cluster.Kubeconfig}, args...)...)
	// As for the webhook process: only the identity under test.
	cmd.Env = append(append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, o.Env...), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	r := CheckResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.ExitCode = exit.ExitCode()
	case err != nil:
		return r, fmt.Errorf("running check: %w", err)
	}
	return r, nil
}
