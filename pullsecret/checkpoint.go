package pullsecret

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/credentials"
)

const (
	// DefaultCheckpointSecret is the name of the token checkpoint Secret in
	// the webhook's own namespace.
	DefaultCheckpointSecret = "artifactory-pull-webhook-tokens"
	// CheckpointLabel marks the checkpoint Secret. It is deliberately not
	// the managed-by label: the checkpoint must never enter the pull Secret
	// informer or be refreshed, restored or deleted as a pull Secret.
	CheckpointLabel = "artifactory-pull-webhook/token-checkpoint"
	checkpointValue = "true"
	// checkpointFlushTimeout bounds the last write on shutdown.
	checkpointFlushTimeout = 5 * time.Second
	// adoptTimeout bounds the checkpoint read that precedes a mint: a slow
	// API server must not eat the admission's time to mint.
	adoptTimeout = time.Second
)

// errForeignCheckpoint is returned when the checkpoint's name is held by a
// Secret without CheckpointLabel: it is neither read nor overwritten.
var errForeignCheckpoint = errors.New("the Secret exists without the label " + CheckpointLabel + "=" + checkpointValue)

// Seeder accepts credentials read back at start (credentials.Cache).
type Seeder interface {
	Seed(key credentials.Key, cred credentials.Credential) bool
}

// CheckpointOptions configures a Checkpoint.
type CheckpointOptions struct {
	// Client talks to the API server directly: the checkpoint is not in
	// the informer cache.
	Client client.Client
	// Namespace is the webhook's own namespace, where only its
	// ServiceAccount may write the checkpoint.
	Namespace string
	// Name is DefaultCheckpointSecret when empty.
	Name string
	// Keys are the token keys of the running configuration. When set, an
	// entry of any other key (another fingerprint: the instance's url,
	// tokenTTL or AWS identity changed) is neither seeded nor kept.
	Keys []credentials.Key
	// Roles, when set, says whether a key not in Keys is current too: the
	// keys of ServiceAccounts' roles, which are not known in advance.
	// (Kept tokens of a role are handed to a ServiceAccount only after it
	// proved it may assume the role: credentials.Cache.GetAs.)
	Roles func(credentials.Key) bool
	Now   func() time.Time
	Log   logr.Logger
}

// Checkpoint keeps the current token of every (instance, identity) in one
// Opaque Secret in the webhook's own namespace, so that a restarted webhook
// starts with the tokens it minted instead of exchanging again.
//
// It is the only source of seeded tokens. The managed pull Secrets are not:
// they live in tenant namespaces, and whoever may edit Secrets there could
// plant a token with a far expiry that the webhook would then copy into
// every namespace. The checkpoint's namespace is writable by the webhook's
// ServiceAccount (and cluster admins) only.
//
// Record (the token cache's OnMint hook) only queues; Start writes what is
// queued, all keys in one write, so a burst of mints costs one write.
type Checkpoint struct {
	client client.Client
	key    types.NamespacedName
	keys   map[credentials.Key]bool // nil: every key is current
	roles  func(credentials.Key) bool
	now    func() time.Time
	log    logr.Logger
	wake   chan struct{}

	mu      sync.Mutex
	pending map[credentials.Key]credentials.Credential
}

// NewCheckpoint checks o and builds a Checkpoint.
func NewCheckpoint(o CheckpointOptions) (*Checkpoint, error) {
	if o.Client == nil || o.Namespace == "" {
		return nil, errors.New("pullsecret: CheckpointOptions needs Client and Namespace")
	}
	if o.Name == "" {
		o.Name = DefaultCheckpointSecret
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log.GetSink() == nil {
		o.Log = logr.Discard()
	}
	c := &Checkpoint{
		client: o.Client, key: types.NamespacedName{Namespace: o.Namespace, Name: o.Name}, now: o.Now, log: o.Log, roles: o.Roles,
		wake: make(chan struct{}, 1), pending: map[credentials.Key]credentials.Credential{},
	}
	if len(o.Keys) > 0 {
		c.keys = map[credentials.Key]bool{}
		for _, k := range o.Keys {
			c.keys[k] = true
		}
	}
	return c, nil
}

// Record queues cred to be written as key's current token and returns at
// once. Use it as credentials.CacheOptions.OnMint.
func (c *Checkpoint) Record(key credentials.Key, cred credentials.Credential) {
	c.mu.Lock()
	if old, ok := c.pending[key]; !ok || cred.Expiry.After(old.Expiry) {
		c.pending[key] = cred
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // a write is already due; it takes this credential too
	}
}

// Start writes queued credentials until ctx ends, then writes what is still
// queued once more, so a token minted just before a rolling update is not
// lost. It is a manager.Runnable that runs on every replica.
func (c *Checkpoint) Start(ctx context.Context) error {
	for {
		select {
		case <-c.wake:
			c.flush(ctx)
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), checkpointFlushTimeout)
			c.flush(fctx)
			cancel()
			return nil
		}
	}
}

// NeedLeaderElection is false: every replica checkpoints its own mints.
func (c *Checkpoint) NeedLeaderElection() bool { return false }

// flush writes the queued credentials in one write. On failure they stay
// queued (unless a newer one came meanwhile) and go with the next write;
// until then a restart may cost one exchange, nothing more.
func (c *Checkpoint) flush(ctx context.Context) {
	c.mu.Lock()
	batch := c.pending
	c.pending = map[credentials.Key]credentials.Credential{}
	c.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	err := c.write(ctx, batch)
	if err == nil {
		c.log.V(1).Info("wrote token checkpoint", "secret", c.key, "keys", len(batch))
		return
	}
	c.mu.Lock()
	for k, cred := range batch {
		if old, ok := c.pending[k]; !ok || cred.Expiry.After(old.Expiry) {
			c.pending[k] = cred
		}
	}
	c.mu.Unlock()
	c.log.Info("could not write the token checkpoint; retrying with the next mint (a restart meanwhile exchanges again)",
		"secret", c.key, "keys", len(batch), "error", describeAPIError(err))
}

// write merges batch into the checkpoint Secret, creating it when missing.
// Entries that expired are dropped; per key the later expiry wins, so
// replicas that mint concurrently converge.
func (c *Checkpoint) write(ctx context.Context, batch map[credentials.Key]credentials.Credential) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sec := &corev1.Secret{}
		err := c.client.Get(ctx, c.key, sec)
		switch {
		case apierrors.IsNotFound(err):
			sec = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: c.key.Name, Namespace: c.key.Namespace,
					Labels: map[string]string{CheckpointLabel: checkpointValue}},
				Type: corev1.SecretTypeOpaque,
			}
			c.merge(sec, batch)
			err = c.client.Create(ctx, sec)
			if apierrors.IsAlreadyExists(err) {
				// Another replica created it first: merge into theirs.
				return apierrors.NewConflict(corev1.Resource("secrets"), c.key.Name, err)
			}
			return err
		case err != nil:
			return fmt.Errorf("reading checkpoint %s: %w", c.key, err)
		case sec.Labels[CheckpointLabel] != checkpointValue:
			return fmt.Errorf("checkpoint %s: %w", c.key, errForeignCheckpoint)
		}
		c.merge(sec, batch)
		return c.client.Update(ctx, sec)
	})
}

func (c *Checkpoint) merge(sec *corev1.Secret, batch map[credentials.Key]credentials.Credential) {
	now := c.now()
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	for k, v := range sec.Data {
		if key, cred, err := decodeEntry(v); err != nil || !now.Before(cred.Expiry) || !c.current(key) {
			delete(sec.Data, k)
		}
	}
	for key, cred := range batch {
		dk := entryKey(key)
		if oldKey, old, err := decodeEntry(sec.Data[dk]); err == nil && oldKey == key && !cred.Expiry.After(old.Expiry) {
			continue
		}
		if b, err := encodeEntry(key, cred); err == nil {
			sec.Data[dk] = b
		}
	}
}

// read gets the checkpoint Secret: nil, nil when there is none.
func (c *Checkpoint) read(ctx context.Context) (*corev1.Secret, error) {
	sec := &corev1.Secret{}
	if err := c.client.Get(ctx, c.key, sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading token checkpoint %s: %w", c.key, err)
	}
	if sec.Labels[CheckpointLabel] != checkpointValue {
		return nil, fmt.Errorf("token checkpoint %s: %w", c.key, errForeignCheckpoint)
	}
	return sec, nil
}

// Load reads the checkpoint (one direct API read) and returns its
// unexpired credentials. A missing checkpoint is empty, not an error.
func (c *Checkpoint) Load(ctx context.Context) (map[credentials.Key]credentials.Credential, error) {
	sec, err := c.read(ctx)
	if sec == nil {
		return nil, err
	}
	out := map[credentials.Key]credentials.Credential{}
	now := c.now()
	for name, v := range sec.Data {
		key, cred, err := decodeEntry(v)
		if err != nil {
			c.log.Info("skipping unreadable token checkpoint entry", "secret", c.key, "entry", name, "error", err.Error())
			continue
		}
		if !c.current(key) {
			c.log.Info("dropping token checkpoint entry of an earlier configuration (url, tokenTTL or AWS identity changed)",
				"secret", c.key, "instance", key.Instance, "identity", key.Identity)
			continue
		}
		if now.Before(cred.Expiry) {
			out[key] = cred
		}
	}
	return out, nil
}

// Seed feeds tokens from the checkpoint. Call it once at start, before
// admissions mint.
func (c *Checkpoint) Seed(ctx context.Context, tokens Seeder) error {
	creds, err := c.Load(ctx)
	if err != nil {
		return err
	}
	for key, cred := range creds {
		seeded := tokens.Seed(key, cred)
		c.log.Info("seeded token cache from the checkpoint", "instance", key.Instance, "identity", key.Identity,
			"expiresAt", formatTime(cred.Expiry), "seeded", seeded)
	}
	return nil
}

// Adopt reads the checkpoint (one direct API read, bounded by
// adoptTimeout) and returns its unexpired credential of key. Use it as
// credentials.CacheOptions.Adopt: a replica about to mint first takes the
// token another replica minted and checkpointed, so replicas converge on
// one token per rotation and the Secrets they write agree. A failed read
// only means minting.
func (c *Checkpoint) Adopt(ctx context.Context, key credentials.Key) (credentials.Credential, bool) {
	ctx, cancel := context.WithTimeout(ctx, adoptTimeout)
	defer cancel()
	sec, err := c.read(ctx)
	if sec == nil {
		if err != nil {
			c.log.V(1).Info("could not read the token checkpoint before minting; minting", "secret", c.key, "error", describeAPIError(err))
		}
		return credentials.Credential{}, false
	}
	// Only key's entry: entries of other keys or configurations (another
	// replica generation during a rollout) are not this call's business,
	// and Load reports them once at start.
	for _, v := range sec.Data {
		got, cred, err := decodeEntry(v)
		if err != nil || got != key || !c.now().Before(cred.Expiry) {
			continue
		}
		c.log.V(1).Info("found a token in the checkpoint before minting", "instance", key.Instance, "identity", key.Identity,
			"expiresAt", formatTime(cred.Expiry))
		return cred, true
	}
	return credentials.Credential{}, false
}

// current reports whether key belongs to the running configuration.
func (c *Checkpoint) current(key credentials.Key) bool {
	return c.keys == nil || c.keys[key] || (c.roles != nil && c.roles(key))
}

// checkpointEntry is one credential in the checkpoint, stored under
// entryKey as JSON. The token is a plain string here: credentials.Token
// redacts itself when marshalled.
type checkpointEntry struct {
	Instance string `json:"instance"`
	Identity string `json:"identity"`
	// Fingerprint is the token's credentials.Fingerprint; entries
	// written before it existed have none and match no current key.
	Fingerprint string    `json:"fingerprint,omitempty"`
	Username    string    `json:"username"`
	Token       string    `json:"token"`
	IssuedAt    time.Time `json:"issuedAt"`
	ExpiresAt   time.Time `json:"expiresAt"`
}

func encodeEntry(key credentials.Key, cred credentials.Credential) ([]byte, error) {
	return json.Marshal(checkpointEntry{Instance: key.Instance, Identity: key.Identity, Fingerprint: key.Fingerprint, Username: cred.Username,
		Token: cred.Token.Reveal(), IssuedAt: cred.IssuedAt, ExpiresAt: cred.Expiry})
}

// decodeEntry parses an entry. Its errors never quote the entry.
func decodeEntry(b []byte) (credentials.Key, credentials.Credential, error) {
	var e checkpointEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return credentials.Key{}, credentials.Credential{}, errors.New("not a JSON checkpoint entry")
	}
	key := credentials.Key{Instance: e.Instance, Identity: e.Identity, Fingerprint: e.Fingerprint}
	if key.Instance == "" || key.Identity == "" || e.Token == "" || !e.ExpiresAt.After(e.IssuedAt) {
		return key, credentials.Credential{}, errors.New("checkpoint entry lacks instance, identity, token or a valid lifetime")
	}
	return key, credentials.Credential{Username: e.Username, Token: credentials.NewToken(e.Token),
		IssuedAt: e.IssuedAt, Expiry: e.ExpiresAt}, nil
}

// entryKey names key's entry: "<instance>.<identity>" (an instance name is
// a DNS label, so the dot is unambiguous), or a digest when the identity
// holds characters a Secret key may not.
func entryKey(key credentials.Key) string {
	if k := key.Instance + "." + key.Identity; len(validation.IsConfigMapKey(k)) == 0 {
		return k
	}
	sum := sha256.Sum256([]byte(key.Instance + "\x00" + key.Identity))
	return key.Instance + "." + hex.EncodeToString(sum[:8])
}

// describeAPIError keeps an API error to its status reason and code: a
// server message could echo the object it refused.
func describeAPIError(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		s := status.Status()
		return fmt.Sprintf("%s (HTTP %d)", s.Reason, s.Code)
	}
	return err.Error()
}
