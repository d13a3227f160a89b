package credentials

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var fileKey = Key{Instance: "main", Identity: WebhookIdentity, Fingerprint: "fp1"}

func minter(n *atomic.Int32, issued time.Time) func(context.Context) (Credential, error) {
	return func(context.Context) (Credential, error) {
		n.Add(1)
		time.Sleep(20 * time.Millisecond) // an exchange takes a while: others must wait, not mint
		return Credential{Username: "puller", Token: NewToken("token-" + issued.String()), IssuedAt: issued, Expiry: issued.Add(time.Hour)}, nil
	}
}

// Concurrent invocations — each its own FileCache and lock file
// descriptor, as separate kubelet exec's are — make one exchange.
func TestFileCacheConcurrentInvocationsMakeOneExchange(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	now := time.Now()
	var mints atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &FileCache{Dir: dir, Now: func() time.Time { return now }}
			cred, err := c.Get(context.Background(), fileKey, minter(&mints, now))
			if err != nil || cred.Username != "puller" || cred.Token.IsZero() {
				t.Errorf("Get = %+v, %v", cred, err)
			}
		}()
	}
	wg.Wait()
	if n := mints.Load(); n != 1 {
		t.Errorf("%d exchanges for 20 concurrent invocations, want 1", n)
	}
	info, err := os.Stat(filepath.Join(dir, fileName(fileKey)+".json"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("cache file: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
	if d, err := os.Stat(dir); err != nil || d.Mode().Perm() != 0o700 {
		t.Errorf("cache dir mode %v (%v), want 0700", d.Mode().Perm(), err)
	}
}

func TestFileCacheRefreshesAtItsThresholdAndOnANewFingerprint(t *testing.T) {
	dir := privateDir(t)
	now := time.Now()
	c := &FileCache{Dir: dir, Now: func() time.Time { return now }}
	var mints atomic.Int32
	get := func(key Key) Credential {
		t.Helper()
		cred, err := c.Get(context.Background(), key, minter(&mints, now))
		if err != nil {
			t.Fatal(err)
		}
		return cred
	}
	first := get(fileKey)
	now = now.Add(44 * time.Minute) // before 75% of an hour
	if get(fileKey).Token.Reveal() != first.Token.Reveal() || mints.Load() != 1 {
		t.Errorf("%d exchanges before the refresh point, want 1", mints.Load())
	}
	now = now.Add(2 * time.Minute) // past it
	if get(fileKey); mints.Load() != 2 {
		t.Errorf("%d exchanges past the refresh point, want 2", mints.Load())
	}
	other := fileKey
	other.Fingerprint = "fp2" // the configuration changed
	if get(other); mints.Load() != 3 {
		t.Errorf("a credential of another fingerprint was reused")
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(entries) != 1 {
		t.Errorf("%d cache files, want the one of the current fingerprint only", len(entries))
	}
}

// A corrupt, foreign or exposed file is never a failed pull: it is ignored
// and replaced.
func TestFileCacheIgnoresCorruptForeignOrExposedFiles(t *testing.T) {
	now := time.Now()
	for name, spoil := range map[string]func(path string) error{
		"corrupt": func(p string) error { return os.WriteFile(p, []byte("{not json"), 0o600) },
		"another instance's": func(p string) error {
			return os.WriteFile(p, []byte(`{"instance":"other","identity":"webhook","fingerprint":"fp1","username":"x","token":"planted","issuedAt":"`+
				now.Format(time.RFC3339)+`","expiresAt":"`+now.Add(time.Hour).Format(time.RFC3339)+`"}`), 0o600)
		},
		"readable by others": func(p string) error { return os.Chmod(p, 0o644) },
		"a symlink":          func(p string) error { os.Remove(p); return os.Symlink("/etc/hostname", p) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := privateDir(t)
			c := &FileCache{Dir: dir, Now: func() time.Time { return now }}
			var mints atomic.Int32
			if _, err := c.Get(context.Background(), fileKey, minter(&mints, now)); err != nil {
				t.Fatal(err)
			}
			if err := spoil(filepath.Join(dir, fileName(fileKey)+".json")); err != nil {
				t.Fatal(err)
			}
			cred, err := c.Get(context.Background(), fileKey, minter(&mints, now))
			if err != nil || mints.Load() != 2 || cred.Token.Reveal() == "planted" {
				t.Errorf("Get after the file was spoiled: %v, %d exchanges; want a new exchange", err, mints.Load())
			}
		})
	}
}

func TestFileCacheGivesUpWaitingWithTheContext(t *testing.T) {
	dir := privateDir(t)
	holder := &FileCache{Dir: dir}
	unlock, err := holder.lock(context.Background(), fileName(fileKey))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	var mints atomic.Int32
	_, err = (&FileCache{Dir: dir}).Get(ctx, fileKey, minter(&mints, time.Now()))
	if !errors.Is(err, context.DeadlineExceeded) || mints.Load() != 0 {
		t.Errorf("Get while another invocation holds the lock: %v, %d exchanges", err, mints.Load())
	}
}

// A cache directory that is a symlink, or open to others, is not trusted
// as it is: the symlinked one is never used (each Get mints, nothing is
// written through it); one of ours left 0755 is made 0700 and used.
func TestFileCacheTrustsOnlyAPrivateDirectoryOfItsOwn(t *testing.T) {
	now := time.Now()
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "cache")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	var mints atomic.Int32
	c := &FileCache{Dir: link, Now: func() time.Time { return now }}
	for range 2 {
		if _, err := c.Get(context.Background(), fileKey, minter(&mints, now)); err != nil {
			t.Fatal(err)
		}
	}
	if n := mints.Load(); n != 2 {
		t.Errorf("a symlinked cache directory served %d of 2 Gets from disk", 2-n)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("%d files written through the symlink", len(entries))
	}

	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	mints.Store(0)
	c = &FileCache{Dir: open, Now: func() time.Time { return now }}
	for range 2 {
		if _, err := c.Get(context.Background(), fileKey, minter(&mints, now)); err != nil {
			t.Fatal(err)
		}
	}
	info, err := os.Stat(open)
	if err != nil || info.Mode().Perm() != 0o755 || mints.Load() != 2 {
		t.Errorf("a 0755 directory: mode %v (%v), %d mints; want it left 0755 and unused (2)", info.Mode().Perm(), err, mints.Load())
	}
	if entries, _ := os.ReadDir(open); len(entries) != 0 {
		t.Errorf("%d files written into a directory open to others", len(entries))
	}
}

// One key's exchange in flight (its lock held) does not hold up another
// key's Get.
func TestFileCacheLocksPerKey(t *testing.T) {
	dir := privateDir(t)
	unlock, err := (&FileCache{Dir: dir}).lock(context.Background(), fileName(fileKey))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	other := Key{Instance: "main", Identity: "sa:team-b/api@uid", Fingerprint: "fp1"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var mints atomic.Int32
	if _, err := (&FileCache{Dir: dir}).Get(ctx, other, minter(&mints, time.Now())); err != nil || mints.Load() != 1 {
		t.Errorf("Get of another key while one key is locked: %v, %d exchanges", err, mints.Load())
	}
	if _, err := os.Stat(filepath.Join(dir, fileName(other)+".json")); err != nil {
		t.Errorf("the other key's token was not cached: %v", err)
	}
}

// privateDir is a 0700 directory (t.TempDir's is 0755, which FileCache
// does not use).
func privateDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}
