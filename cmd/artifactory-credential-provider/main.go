// Command artifactory-credential-provider is a kubelet image credential
// provider plugin (credentialprovider.kubelet.k8s.io/v1) for Artifactory:
// kubelet runs it once per image pull it has no cached credentials for,
// with a CredentialProviderRequest on stdin, and reads a
// CredentialProviderResponse on stdout. It serves the pulls that never pass
// the admission webhook — static pods, namespaces not opted in, node-level
// pulls — with the same credentials core (package credentials): the same
// exchanges, token semantics and hygiene.
//
// Identities: the node's (--identity node: the AWS SDK's default chain,
// i.e. the instance role, or an OIDC token file), or with kubelet's
// service-account-token mode (tokenAttributes in the
// CredentialProviderConfig) the pod's ServiceAccount (--identity
// serviceAccount): its token and eks.amazonaws.com/role-arn annotation for
// sts:AssumeRoleWithWebIdentity, or its token for the OIDC exchange.
//
// Tokens are kept on disk (--cache-dir) so that repeated and concurrent
// invocations within a token's lifetime make one exchange. A failed
// exchange exits 1 with the reason on stderr, which kubelet logs, and
// writes nothing on stdout.
//
// "artifactory-credential-provider install" is the chart's DaemonSet
// command: it checks a CredentialProviderConfig drop-in and copies itself
// and the drop-in onto the node (see install).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/internal/version"

	// No CA bundle in the release image: these roots serve when the node
	// has none either (--ca-bundle is added to them).
	_ "golang.org/x/crypto/x509roots/fallback"
)

// maxRequest bounds the request read from stdin (a token and a few
// annotations).
const maxRequest = 1 << 20

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println("artifactory-credential-provider", version.Get())
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "install" {
		os.Exit(install(os.Args[2:], os.Stderr))
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr, time.Now))
}

// run is the whole invocation; it returns the exit code: 0 with a response
// on stdout, 1 when no credentials could be had, 2 for a bad configuration
// or request. Errors go to stderr and never carry a token.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer,
	now func() time.Time) int {
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "artifactory-credential-provider: %v\n", err)
		return code
	}
	o, err := parseOptions(args, getenv)
	if err != nil {
		return fail(2, err)
	}
	b, err := io.ReadAll(io.LimitReader(stdin, maxRequest+1))
	if err != nil {
		return fail(2, fmt.Errorf("reading the request: %w", err))
	}
	if len(b) > maxRequest {
		return fail(2, fmt.Errorf("the request on stdin is larger than %d bytes", maxRequest))
	}
	req, err := decodeRequest(b)
	if err != nil {
		return fail(2, err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	resp, err := newProvider(o, now).provide(ctx, req)
	if err != nil {
		return fail(1, err)
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return fail(1, err)
	}
	if _, err := stdout.Write(append(out, '\n')); err != nil {
		return fail(1, fmt.Errorf("writing the response: %w", err))
	}
	return 0
}
