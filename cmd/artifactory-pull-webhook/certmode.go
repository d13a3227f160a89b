package main

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/certs"
)

// certFlags choose where the serving certificate comes from.
type certFlags struct {
	mode              string
	secretName        string
	webhookConfigName string
	serviceName       string
	validity          time.Duration
}

func (c *certFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.mode, "cert-mode", "files", "files: serve tls.crt/tls.key from --cert-dir (cert-manager, a mounted Secret); "+
		"self: issue, store, rotate and inject a self-managed certificate.")
	fs.StringVar(&c.secretName, "cert-secret-name", "artifactory-pull-webhook-serving-cert",
		"Secret in the webhook's namespace holding the self-managed CA and serving certificate.")
	fs.StringVar(&c.webhookConfigName, "webhook-config-name", "artifactory-pull-webhook",
		"MutatingWebhookConfiguration the self-managed CA is injected into.")
	fs.StringVar(&c.serviceName, "service-name", "artifactory-pull-webhook",
		"Service the API server calls; the self-managed certificate covers its DNS names.")
	fs.DurationVar(&c.validity, "cert-validity", certs.DefaultValidity,
		"Lifetime of each self-managed certificate (renewed when a third is left).")
}

// selfManaged returns the self-managed certificate source in "self" mode,
// nil in "files" mode. namespace is the webhook's own namespace.
func (c *certFlags) selfManaged(cfg *rest.Config, scheme *runtime.Scheme, namespace string) (*certs.SelfManaged, error) {
	switch c.mode {
	case "files":
		return nil, nil
	case "self":
	default:
		return nil, fmt.Errorf("--cert-mode %q: want files or self", c.mode)
	}
	if namespace == "" {
		return nil, errors.New("--cert-mode=self needs the webhook's namespace: set POD_NAMESPACE or --leader-election-namespace")
	}
	// Uncached: replicas must see each other's writes.
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating the certificate client: %w", err)
	}
	return certs.NewSelfManaged(certs.SelfManagedOptions{
		Client: cl, Namespace: namespace, SecretName: c.secretName, WebhookConfigName: c.webhookConfigName,
		Hosts: certs.ServiceHosts(c.serviceName, namespace), Validity: c.validity, Log: ctrl.Log.WithName("certs"),
	})
}
