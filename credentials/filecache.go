package credentials

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// FileCache keeps credentials on disk for processes that live one request
// each — the kubelet credential provider, which kubelet runs per image
// pull — so that repeated and concurrent invocations within a token's
// lifetime make one exchange. One file per Key in Dir (0700), each 0600 and
// written by atomic rename; an exclusive flock on the key's .lock file
// serialises them per key, so concurrent processes wait for the first
// one's exchange instead of making their own, and other keys never wait. A
// file that cannot be read, decoded, or is another key's, another owner's
// or readable by others is ignored and replaced; a Dir that is another
// owner's, open to others or a symlink is not used at all: never a failed
// pull.
type FileCache struct {
	// Dir holds the cache; created 0700 when missing.
	Dir string
	// RefreshThreshold is the fraction of a credential's lifetime left at
	// which Get mints a new one (0.25 when zero).
	RefreshThreshold float64
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// fileEntry is one cached credential on disk.
type fileEntry struct {
	Instance    string    `json:"instance"`
	Identity    string    `json:"identity"`
	Fingerprint string    `json:"fingerprint"`
	Username    string    `json:"username"`
	Token       string    `json:"token"`
	IssuedAt    time.Time `json:"issuedAt"`
	ExpiresAt   time.Time `json:"expiresAt"`
}

// lockPoll is how often Get tries the lock another process holds.
const lockPoll = 50 * time.Millisecond

// Get returns key's cached credential unless it is missing, unusable or
// due for refresh; then it mints one with mint and stores it. It holds the
// cache's lock while minting: a concurrent Get (of any process) waits, then
// finds the new credential.
func (c *FileCache) Get(ctx context.Context, key Key, mint func(context.Context) (Credential, error)) (Credential, error) {
	if os.MkdirAll(c.Dir, 0o700) != nil || !c.private() {
		// No directory, another user's, one open to others or a symlink:
		// nothing is read from or written to it, and the pull still gets
		// its token.
		return mint(ctx)
	}
	name := fileName(key)
	unlock, err := c.lock(ctx, name)
	if err != nil {
		return Credential{}, err
	}
	defer unlock()
	path := filepath.Join(c.Dir, name+".json")
	if cred, ok := c.read(path, key); ok {
		return cred, nil
	}
	cred, err := mint(ctx)
	if err != nil {
		return Credential{}, err
	}
	// A credential that cannot be stored still serves this pull.
	_ = c.write(path, key, cred)
	return cred, nil
}

func (c *FileCache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// private reports whether Dir is a directory of this process's user that
// only it can read. One open to others is left as it is (it may be a
// shared directory such as /tmp) and not used.
func (c *FileCache) private() bool {
	info, err := os.Lstat(c.Dir)
	return err == nil && info.IsDir() && ownedByUs(info) && info.Mode().Perm()&0o077 == 0
}

// lock takes the exclusive flock of one key's file, name, polling until
// ctx is done: invocations for other keys (other ServiceAccounts) never
// wait behind this one's exchange.
func (c *FileCache) lock(ctx context.Context, name string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(c.Dir, name+".lock"), os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("token cache lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); _ = f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("token cache lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("token cache lock: waiting for another invocation: %w", ctx.Err())
		case <-time.After(lockPoll):
		}
	}
}

// read returns the usable credential of key at path.
func (c *FileCache) read(path string, key Key) (Credential, bool) {
	info, err := os.Lstat(path)
	if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o077 != 0 || !ownedByUs(info) {
		return Credential{}, false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Credential{}, false
	}
	var e fileEntry
	if json.Unmarshal(b, &e) != nil || e.Instance != key.Instance || e.Identity != key.Identity ||
		e.Fingerprint != key.Fingerprint || e.Token == "" || !e.ExpiresAt.After(e.IssuedAt) {
		return Credential{}, false
	}
	cred := Credential{Username: e.Username, Token: NewToken(e.Token), IssuedAt: e.IssuedAt, Expiry: e.ExpiresAt}
	threshold := c.RefreshThreshold
	if threshold <= 0 || threshold >= 1 {
		threshold = defaultRefreshThreshold
	}
	refreshAt := cred.Expiry.Add(-time.Duration(threshold * float64(cred.Lifetime())))
	return cred, c.now().Before(refreshAt)
}

// write stores cred as key's at path: a temporary file in Dir, synced,
// renamed over path.
func (c *FileCache) write(path string, key Key, cred Credential) error {
	b, err := json.Marshal(fileEntry{Instance: key.Instance, Identity: key.Identity, Fingerprint: key.Fingerprint,
		Username: cred.Username, Token: cred.Token.Reveal(), IssuedAt: cred.IssuedAt, ExpiresAt: cred.Expiry})
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(c.Dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // gone after the rename; removes a failed write
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
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

// fileName is the file of key: a digest of its instance and identity, so
// that no key names a path and a credential of another fingerprint (the
// configuration changed) is replaced, not left beside it.
func fileName(key Key) string {
	sum := sha256.Sum256([]byte(key.Instance + "\x00" + key.Identity))
	return hex.EncodeToString(sum[:16])
}

// ownedByUs reports whether info is of a file owned by this process's user.
func ownedByUs(info os.FileInfo) bool {
	st, ok := info.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}
