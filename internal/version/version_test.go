package version

import (
	"strings"
	"testing"
)

func TestGetPrefersTheLinkedVersion(t *testing.T) {
	if got := Get(); got.Version == "" || got.GoVersion == "unknown" || !strings.HasPrefix(got.String(), "version ") {
		t.Errorf("Get() = %+v", got)
	}
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "v1.2.3"
	if got := Get(); got.Version != "v1.2.3" || !strings.Contains(got.String(), "version v1.2.3, commit ") {
		t.Errorf("with a linked version: %+v %q", got, got.String())
	}
}
