package pullsecret

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

// SecretName is the name of id's pull Secret of inst in a namespace: the
// instance's secretName for the webhook's own identity, and
// <secretName>-<serviceAccount> for a ServiceAccount's, which only that
// ServiceAccount's pods reference. A name longer than a Secret name may be
// is cut and ends in a hash of the whole, so that it stays unique.
func SecretName(inst config.Instance, id credentials.Identity) string {
	if id.IsWebhook() {
		return inst.SecretName
	}
	name := inst.SecretName + "-" + id.ServiceAccount
	if len(name) <= validation.DNS1123SubdomainMaxLength {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "-" + hex.EncodeToString(sum[:])[:16]
	// A label may not end in '-' nor a name in '.': trim the cut there.
	return strings.TrimRight(name[:validation.DNS1123SubdomainMaxLength-len(suffix)], ".-") + suffix
}
