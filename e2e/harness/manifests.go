package harness

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// ManifestPath is the production manifest the webhook configuration is
// taken from.
const ManifestPath = "deploy/manifests/artifactory-pull-webhook.yaml"

// WebhookConfiguration reads the production MutatingWebhookConfiguration
// and points its clientConfig at url with the given CA. Everything else
// (rules, selectors, failurePolicy, sideEffects, timeout) stays as shipped.
func WebhookConfiguration(url string, caBundle []byte) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	b, err := os.ReadFile(filepath.Join(ModuleRoot(), ManifestPath))
	if err != nil {
		return nil, err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, err
		}
		if meta.Kind != "MutatingWebhookConfiguration" {
			continue
		}
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		if err := yaml.UnmarshalStrict(doc, &mwc); err != nil {
			return nil, fmt.Errorf("%s: %w", ManifestPath, err)
		}
		for i := range mwc.Webhooks {
			u := url
			mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: caBundle}
		}
		delete(mwc.Annotations, "cert-manager.io/inject-ca-from")
		return &mwc, nil
	}
	return nil, fmt.Errorf("%s holds no MutatingWebhookConfiguration", ManifestPath)
}

// InstallWebhook creates (or replaces) the webhook configuration.
func InstallWebhook(ctx context.Context, c client.Client, url string, caBundle []byte) error {
	mwc, err := WebhookConfiguration(url, caBundle)
	if err != nil {
		return err
	}
	existing := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(mwc), existing); err == nil {
		mwc.ResourceVersion = existing.ResourceVersion
		return c.Update(ctx, mwc)
	}
	return c.Create(ctx, mwc)
}
