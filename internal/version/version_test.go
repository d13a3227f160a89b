package version

import (
	"strings"
	"testing"
)

func TestGetPrefersTheLinkedVersion(t *testing.T) {
	if got := Get(); got.Version == "" || got.GoVersion == "unknown" || !strings.HasPrefix(got.String(), "version ") {
		t.Errorf("Get() = %+v", got)
	}
	oldV, oldC := Version, Commit
	t.Cleanup(func() { Version, Commit = oldV, oldC })
	Version, Commit = "v1.2.3", "0123abc"
	if got := Get(); got.Version != "v1.2.3" || !strings.Contains(got.String(), "version v1.2.3, commit 0123abc") {
		t.Errorf("with a linked version: %+v %q", got, got.String())
	}
}
