package webhook

import (
	"bytes"
	"fmt"
	"testing"
	"unsafe"
)

// What tenants send cannot grow the intern cache: a long string (a pod
// can carry an image of megabytes, before any validation) is not kept, and
// the number of entries is bounded.
func TestInternCacheIsBounded(t *testing.T) {
	var c internCache
	long := bytes.Repeat([]byte("a"), maxInternedLen+1)
	if s := c.get(long); s != string(long) || len(c.m) != 0 {
		t.Errorf("a %d-byte string: kept %d entries, want none", len(long), len(c.m))
	}
	for i := range 3 * maxInterned {
		c.get(fmt.Appendf(nil, "registry.example/image-%d:1.0", i))
		if len(c.m) > maxInterned {
			t.Fatalf("%d entries, more than %d", len(c.m), maxInterned)
		}
	}
	short := []byte("registry.example/app:1.0")
	if a, b := c.get(short), c.get(short); a != "registry.example/app:1.0" || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Error("a short string seen twice is not the same string")
	}
}
