package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"sigs.k8s.io/yaml"
)

// install is the DaemonSet's command (the image has no shell): it checks
// the CredentialProviderConfig drop-in the chart renders — its
// apiVersions, and this plugin's args and env parsed exactly as an
// invocation parses them — then copies this binary and the drop-in into
// the node's directories atomically, and with --wait stays running so the
// DaemonSet's pod stays Ready. A bad configuration fails here, in the
// pod's log, not on every pull.
func install(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		config    = fs.String("config", "", "CredentialProviderConfig drop-in to check and install (required)")
		binDir    = fs.String("bin-dir", "", "node directory kubelet runs plugins from (--image-credential-provider-bin-dir; required)")
		configDir = fs.String("config-dir", "", "node directory kubelet reads CredentialProviderConfig files from (--image-credential-provider-config; required)")
		wait      = fs.Bool("wait", false, "stay running after installing, until SIGTERM")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "artifactory-credential-provider install: %v\n", err)
		return 1
	}
	if *config == "" || *binDir == "" || *configDir == "" {
		return fail(errors.New("--config, --bin-dir and --config-dir are required"))
	}
	b, err := os.ReadFile(*config)
	if err != nil {
		return fail(err)
	}
	if err := checkProviderConfig(b); err != nil {
		return fail(fmt.Errorf("%s: %w", *config, err))
	}
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		return fail(err)
	}
	if err := writeAtomic(filepath.Join(*binDir, providerName), bin, 0o755); err != nil {
		return fail(err)
	}
	if err := writeAtomic(filepath.Join(*configDir, providerName+".yaml"), b, 0o644); err != nil {
		return fail(err)
	}
	fmt.Fprintf(stderr, "installed %s into %s and its configuration into %s\n", providerName, *binDir, *configDir)
	if *wait {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		<-ctx.Done()
	}
	return 0
}

// providerName is the binary's name on the node: the provider name the
// CredentialProviderConfig gives.
const providerName = "artifactory-credential-provider"

// checkProviderConfig checks a CredentialProviderConfig holding this
// plugin: kubelet's apiVersions, matchImages, and the plugin's args and env
// as an invocation parses them.
func checkProviderConfig(b []byte) error {
	var cfg struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Providers  []struct {
			Name        string   `json:"name"`
			APIVersion  string   `json:"apiVersion"`
			MatchImages []string `json:"matchImages"`
			Args        []string `json:"args"`
			Env         []struct {
				Name  string `json:"name"`
				Value string `json:"value"`
			} `json:"env"`
		} `json:"providers"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return err
	}
	if cfg.APIVersion != "kubelet.config.k8s.io/v1" || cfg.Kind != "CredentialProviderConfig" {
		return fmt.Errorf("is %s %q, want kubelet.config.k8s.io/v1 CredentialProviderConfig", cfg.Kind, cfg.APIVersion)
	}
	for _, p := range cfg.Providers {
		if p.Name != providerName {
			continue
		}
		if p.APIVersion != apiVersion {
			return fmt.Errorf("provider %s: apiVersion %q, want %s", p.Name, p.APIVersion, apiVersion)
		}
		if len(p.MatchImages) == 0 {
			return fmt.Errorf("provider %s: matchImages is empty (list the Artifactory registry hosts)", p.Name)
		}
		env := map[string]string{}
		for _, e := range p.Env {
			env[e.Name] = e.Value
		}
		if _, err := parseOptions(p.Args, func(k string) string { return env[k] }); err != nil {
			return fmt.Errorf("provider %s: %w", p.Name, err)
		}
		return nil
	}
	return fmt.Errorf("no provider named %s", providerName)
}

// writeAtomic writes b to path through a temporary file in its directory
// renamed over it, so kubelet never runs or reads a half-written file.
func writeAtomic(path string, b []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // gone after the rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
