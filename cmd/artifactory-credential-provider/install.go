package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	kubeletconfigv1 "k8s.io/kubelet/config/v1"
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
	dst := filepath.Join(*configDir, providerName+".yaml")
	if old, err := os.ReadFile(dst); err == nil && !bytes.Equal(old, b) {
		// Kubelet reads its credential provider configuration only at start:
		// until it restarts, it runs the new binary with the old drop-in.
		if err := checkProviderConfig(old); err != nil {
			fmt.Fprintf(stderr, "warning: the drop-in already on the node is not valid for this version (%v); "+
				"kubelet keeps using it until it restarts: restart kubelet now\n", err)
		}
		fmt.Fprintln(stderr, "the drop-in changed: kubelet reads it only at start, restart kubelet (or replace the node) for it to take effect")
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
	if err := writeAtomic(dst, b, 0o644); err != nil {
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
// plugin as kubelet 1.37 validates it at start (kubelet exits on an invalid
// one: pkg/credentialprovider/plugin validateCredentialProviderConfig), and
// the plugin's args and env as an invocation parses them, with
// tokenAttributes set exactly when --identity is serviceAccount.
func checkProviderConfig(b []byte) error {
	var cfg kubeletconfigv1.CredentialProviderConfig
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		return err
	}
	if cfg.APIVersion != kubeletconfigv1.SchemeGroupVersion.String() || cfg.Kind != "CredentialProviderConfig" {
		return fmt.Errorf("is %s %q, want %s CredentialProviderConfig", cfg.Kind, cfg.APIVersion, kubeletconfigv1.SchemeGroupVersion)
	}
	for _, p := range cfg.Providers {
		if p.Name != providerName {
			continue
		}
		var errs []error
		bad := func(field, format string, args ...any) {
			errs = append(errs, fmt.Errorf("provider %s: %s: %s", p.Name, field, fmt.Sprintf(format, args...)))
		}
		if p.APIVersion != apiVersion {
			bad("apiVersion", "%q, want %s", p.APIVersion, apiVersion)
		}
		if len(p.MatchImages) == 0 {
			bad("matchImages", "empty (list the Artifactory registry hosts)")
		}
		for _, m := range p.MatchImages {
			if _, err := url.Parse("https://" + m); err != nil { // kubelet's ParseSchemelessURL
				bad("matchImages", "%q is not an image pattern", m)
			}
		}
		if p.DefaultCacheDuration == nil || p.DefaultCacheDuration.Duration < 0 {
			bad("defaultCacheDuration", "required, at least 0")
		}
		env := map[string]string{}
		for _, e := range p.Env {
			env[e.Name] = e.Value
		}
		o, err := parseOptions(p.Args, func(k string) string { return env[k] })
		if err != nil {
			errs = append(errs, fmt.Errorf("provider %s: %w", p.Name, err))
		}
		ta := p.TokenAttributes
		switch {
		case err != nil:
		case o.Identity == identityServiceAccount && ta == nil:
			bad("tokenAttributes", "required with --identity serviceAccount: kubelet sends ServiceAccount tokens only with it")
		case o.Identity != identityServiceAccount && ta != nil:
			bad("tokenAttributes", "set, but --identity is %s: the pods' tokens would be requested and not used", o.Identity)
		}
		if ta != nil {
			if ta.ServiceAccountTokenAudience == "" {
				bad("tokenAttributes.serviceAccountTokenAudience", "required")
			}
			if ta.RequireServiceAccount == nil {
				bad("tokenAttributes.requireServiceAccount", "required")
			} else if !*ta.RequireServiceAccount && len(ta.RequiredServiceAccountAnnotationKeys) > 0 {
				bad("tokenAttributes.requiredServiceAccountAnnotationKeys", "needs requireServiceAccount: true")
			}
			if ta.CacheType != kubeletconfigv1.TokenServiceAccountTokenCacheType && ta.CacheType != kubeletconfigv1.ServiceAccountServiceAccountTokenCacheType {
				bad("tokenAttributes.cacheType", "%q, want Token or ServiceAccount", ta.CacheType)
			}
			required := map[string]bool{}
			for _, k := range ta.RequiredServiceAccountAnnotationKeys {
				required[k] = true
			}
			for _, k := range ta.OptionalServiceAccountAnnotationKeys {
				if required[k] {
					bad("tokenAttributes", "annotation %s is both required and optional", k)
				}
			}
		}
		return errors.Join(errs...)
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
