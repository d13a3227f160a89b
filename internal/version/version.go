// Package version says which build a binary is: its version (set at link
// time by the release image build, else the main module's), the commit it
// was built from and the Go version, read from runtime/debug's build info.
package version

import (
	"cmp"
	"fmt"
	"runtime/debug"
)

// Version and Commit are set with -ldflags "-X .../internal/version.Version=v1.2.3
// -X .../internal/version.Commit=<sha>" by the image build (make image), which
// does not depend on Go's VCS stamping (off where GOFLAGS=-buildvcs=false);
// empty otherwise, and then read from the build info.
var Version, Commit string

// Info is what a binary knows of its own build.
type Info struct {
	Version, Commit, GoVersion string
	Modified                   bool
}

// Get reads the build info of the running binary.
func Get() Info {
	i := Info{Version: Version, Commit: cmp.Or(Commit, "unknown"), GoVersion: "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if i.Version == "" {
			i.Version = "devel"
		}
		return i
	}
	i.GoVersion = bi.GoVersion
	if i.Version == "" {
		i.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if Commit == "" {
				i.Commit = s.Value
			}
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	if i.Version == "" || i.Version == "(devel)" {
		i.Version = "devel"
	}
	return i
}

// String is the line --version prints.
func (i Info) String() string {
	commit := i.Commit
	if i.Modified {
		commit += " (modified)"
	}
	return fmt.Sprintf("version %s, commit %s, %s", i.Version, commit, i.GoVersion)
}
