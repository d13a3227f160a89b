package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/artifactory-pull-webhook/artifactory-pull-webhook/config"
)

// inClusterNamespaceFile holds the pod's namespace when it runs in a cluster.
const inClusterNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// leaderFlags configure the election of the replica that runs the Secret
// refresher. Admissions are served by every replica regardless.
type leaderFlags struct {
	enabled       bool
	namespace     string
	id            string
	leaseDuration time.Duration
	renewDeadline time.Duration
	retryPeriod   time.Duration
	// namespaceFile is where the pod's namespace is read in a cluster.
	namespaceFile string
}

func (l *leaderFlags) bind(fs *flag.FlagSet) {
	l.namespaceFile = inClusterNamespaceFile
	fs.BoolVar(&l.enabled, "leader-elect", true, "Elect one replica (Lease) to refresh, restore and clean up pull Secrets. "+
		"With false every replica does it: only for a single replica.")
	fs.StringVar(&l.namespace, "leader-election-namespace", "", "The webhook's own namespace, where the leader election "+
		"Lease and the token checkpoint live (default: $POD_NAMESPACE, else the pod's own namespace when running in a cluster).")
	fs.StringVar(&l.id, "leader-election-id", name, "Name of the leader election Lease.")
	fs.DurationVar(&l.leaseDuration, "leader-election-lease-duration", 15*time.Second,
		"How long followers wait after the leader's last renewal before taking over.")
	fs.DurationVar(&l.renewDeadline, "leader-election-renew-deadline", 10*time.Second,
		"How long the leader retries renewing before it gives the lease up.")
	fs.DurationVar(&l.retryPeriod, "leader-election-retry-period", 2*time.Second,
		"How often candidates try to acquire or renew the lease.")
}

// resolveNamespace fills the Lease namespace from the environment; it stays
// empty when the process runs outside a cluster and none was given.
func (l *leaderFlags) resolveNamespace() {
	if l.namespace != "" {
		return
	}
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		l.namespace = ns
		return
	}
	if b, err := os.ReadFile(l.namespaceFile); err == nil {
		l.namespace = strings.TrimSpace(string(b))
	}
}

// apply sets the manager's leader election options.
func (l *leaderFlags) apply(o *manager.Options) {
	o.LeaderElection = true
	o.LeaderElectionID = l.id
	o.LeaderElectionNamespace = l.namespace
	o.LeaderElectionResourceLock = "leases"
	// Hand over at once on a clean shutdown (rolling update) instead of
	// leaving refresh idle for a lease duration; main exits right after.
	o.LeaderElectionReleaseOnCancel = true
	o.LeaseDuration = &l.leaseDuration
	o.RenewDeadline = &l.renewDeadline
	o.RetryPeriod = &l.retryPeriod
}

// refreshPlan says whether the Secret refresher runs and whether it is
// guarded by leader election.
type refreshPlan struct{ enabled, elected bool }

// planRefresh decides how the refresher runs: elected among the replicas
// when leader election is on and its Lease namespace is known; on every
// replica when leader election was turned off; not at all when election is
// wanted but no namespace can be found (outside a cluster). With election,
// every token must outlive a failover: checked here, at start.
func planRefresh(cfg *config.Config, l *leaderFlags) (refreshPlan, error) {
	if !l.enabled {
		return refreshPlan{enabled: true}, nil
	}
	l.resolveNamespace()
	if l.namespace == "" {
		return refreshPlan{}, nil
	}
	if l.renewDeadline >= l.leaseDuration || l.retryPeriod >= l.renewDeadline {
		return refreshPlan{}, fmt.Errorf("leader election: need retry period (%s) < renew deadline (%s) < lease duration (%s)",
			l.retryPeriod, l.renewDeadline, l.leaseDuration)
	}
	if err := cfg.CheckFailover(l.leaseDuration); err != nil {
		return refreshPlan{}, fmt.Errorf("config: %w", err)
	}
	return refreshPlan{enabled: true, elected: true}, nil
}
