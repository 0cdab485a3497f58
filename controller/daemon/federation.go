package daemon

// Federation wiring: MeshConfig spec.federation → a federation member
// (federation) and its Kubernetes bridge (controller/federate); the
// bridge's remote state is merged into every mesh.State the watcher builds
// before the xDS server gets it (federate.Junction, which also judges
// problems on the merged state). Federation is switched on and off live
// (`meshfed cluster join` / `leave`), and the gossip keyring Secret is
// re-read for key rotation without a restart.

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/kube"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/trust/ca"
)

// federationSettings is MeshConfig spec.federation.
type federationSettings struct {
	Enabled          bool
	Network          string
	BindAddress      string
	BindPort         int
	AdvertiseAddress string
	AdvertisePort    int
	Peers            []string
	GossipKeySecret  string
	WithdrawAfter    time.Duration
	FailStatic       bool
}

func readFederationSettings(u *unstructured.Unstructured) (federationSettings, error) {
	fs := federationSettings{Network: mesh.DefaultNetwork, BindAddress: "0.0.0.0", BindPort: deploy.PortGossip, GossipKeySecret: federate.DefaultGossipKeySecret, WithdrawAfter: 30 * time.Second}
	str := func(f string) string {
		v, _, _ := unstructured.NestedString(u.Object, "spec", "federation", f)
		return v
	}
	num := func(f string) int {
		v, _, _ := unstructured.NestedInt64(u.Object, "spec", "federation", f)
		return int(v)
	}
	fs.Enabled, _, _ = unstructured.NestedBool(u.Object, "spec", "federation", "enabled")
	fs.FailStatic, _, _ = unstructured.NestedBool(u.Object, "spec", "federation", "failStatic")
	fs.Peers, _, _ = unstructured.NestedStringSlice(u.Object, "spec", "federation", "peers")
	if v := str("network"); v != "" {
		fs.Network = v
	}
	if v := str("bindAddress"); v != "" {
		fs.BindAddress = v
	}
	if v := num("bindPort"); v != 0 {
		fs.BindPort = v
	}
	fs.AdvertiseAddress, fs.AdvertisePort = str("advertiseAddress"), num("advertisePort")
	if v := str("gossipKeySecretName"); v != "" {
		fs.GossipKeySecret = v
	}
	if v := str("withdrawAfter"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fs, fmt.Errorf("spec.federation.withdrawAfter %q: %w", v, err)
		}
		fs.WithdrawAfter = d
	}
	return fs, nil
}

// federationWiring owns the federation member and bridge while federation
// is enabled, and merges their remote state into the watcher's states.
type federationWiring struct {
	client      kubernetes.Interface
	dyn         dynamic.Interface
	namespace   string
	meshConfig  string
	cluster     string
	trustDomain string
	authority   *ca.Authority
	reg         prometheus.Registerer
	log         *slog.Logger

	junction *federate.Junction

	mu     sync.Mutex // guards the fields below
	bridge *federate.Bridge
	fed    *federation.Federation
}

func newFederationWiring(client kubernetes.Interface, dyn dynamic.Interface, namespace, meshConfig, cluster, td string, authority *ca.Authority, reg prometheus.Registerer, log *slog.Logger) *federationWiring {
	return &federationWiring{client: client, dyn: dyn, namespace: namespace, meshConfig: meshConfig, cluster: cluster, trustDomain: td,
		authority: authority, reg: reg, log: log.With("component", "federation")}
}

// sink wraps next: every state gets the federation's remote view, and
// problems are judged on it. runJunction must run for the sink to work.
func (w *federationWiring) sink(next kube.Sink) kube.Sink {
	w.junction = federate.NewJunction(next, w.log)
	return w.junction
}

// runJunction runs the junction of local and remote state until ctx ends.
func (w *federationWiring) runJunction(ctx context.Context) error { return w.junction.Run(ctx) }

// run follows MeshConfig spec.federation: starts the member and bridge when
// enabled, stops them (empty catalog, graceful leave) when disabled or when
// the controller stops, and restarts them when a setting that needs it
// changes — without withdrawing this cluster's exports: the member leaves
// with a signed restart note and the others keep its catalog until the new
// member publishes (federation.Config.RestartGrace). The gossip keyring
// Secret is re-read every poll and applied without a restart.
func (w *federationWiring) run(ctx context.Context) error {
	var (
		cur    *federationSettings
		cancel context.CancelFunc
		done   chan struct{}
		keys   [][]byte
	)
	// stop leaves the federation; with restart, only to rejoin at once.
	stop := func(restart bool) {
		if cancel == nil {
			return
		}
		w.mu.Lock()
		fed := w.fed
		w.mu.Unlock()
		if restart {
			fed.MarkRestart()
		} else {
			pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := fed.Publish(pctx, nil); err != nil {
				w.log.Warn("publishing an empty catalog before leaving", "err", err)
			}
			pcancel()
		}
		cancel()
		<-done
		cancel, cur = nil, nil
		w.mu.Lock()
		w.bridge, w.fed = nil, nil
		w.mu.Unlock()
		if !restart {
			// On a restart the junction keeps the remote view until the
			// new member has caught up (start).
			w.junction.SetRemote(nil)
		}
	}
	defer stop(false)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		u, err := w.dyn.Resource(kube.MeshConfigGVR).Namespace(w.namespace).Get(ctx, w.meshConfig, metav1.GetOptions{})
		var fs federationSettings
		if err == nil {
			fs, err = readFederationSettings(u)
		}
		switch {
		case err != nil:
			if ctx.Err() == nil {
				w.log.Warn("reading federation settings", "err", err)
			}
		case !fs.Enabled:
			if cur != nil {
				w.log.Info("federation disabled: leaving")
				stop(false)
				if err := federate.RemoveImports(ctx, w.dyn); err != nil {
					w.log.Warn("removing ServiceImports after leaving", "err", err)
				}
			}
		default:
			newKeys, kerr := federate.LoadGossipKeys(ctx, w.client, w.namespace, fs.GossipKeySecret)
			switch {
			case kerr != nil:
				w.log.Warn("federation enabled but the gossip keyring is unusable", "err", kerr)
			case cur != nil && reflect.DeepEqual(*cur, fs):
				if !reflect.DeepEqual(keys, newKeys) {
					w.mu.Lock()
					err := w.fed.SetGossipKeys(newKeys[0], newKeys[1:]...)
					w.mu.Unlock()
					if err != nil {
						w.log.Error("rotating gossip keys", "err", err)
					} else {
						keys = newKeys
						w.log.Info("gossip keyring updated", "keys", len(newKeys))
					}
				}
			default:
				restarting := cur != nil
				if restarting {
					w.log.Info("federation settings changed: rejoining (peers keep this cluster's services meanwhile)")
					stop(true)
				}
				c, d, err := w.start(ctx, fs, newKeys, restarting)
				if err != nil {
					w.log.Error("starting federation", "err", err)
					if restarting {
						w.junction.SetRemote(nil)
					}
				} else {
					cancel, done, keys = c, d, newKeys
					fsCopy := fs
					cur = &fsCopy
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-done:
			w.log.Error("federation stopped; retrying")
			cancel, cur = nil, nil
			w.mu.Lock()
			w.bridge, w.fed = nil, nil
			w.mu.Unlock()
			w.junction.SetRemote(nil)
		}
	}
}

// start starts a federation member and its bridge. With restarting, the
// junction keeps passing on the previous member's remote view until the
// new one has the catalogs of every cluster it had, or for WithdrawAfter
// at most, so that a settings change does not drop the routes to other
// clusters here either.
func (w *federationWiring) start(ctx context.Context, fs federationSettings, keys [][]byte, restarting bool) (context.CancelFunc, chan struct{}, error) {
	fcfg := federation.DefaultConfig()
	fcfg.ClusterName, fcfg.Network, fcfg.TrustDomain = w.cluster, fs.Network, w.trustDomain
	fcfg.BindAddr, fcfg.BindPort = fs.BindAddress, fs.BindPort
	fcfg.AdvertiseAddr, fcfg.AdvertisePort = fs.AdvertiseAddress, fs.AdvertisePort
	fcfg.Seeds = fs.Peers
	fcfg.GossipKeys = keys
	fcfg.WithdrawAfter, fcfg.FailStatic = fs.WithdrawAfter, fs.FailStatic
	fcfg.Signer = &clusterSigner{authority: w.authority, cluster: w.cluster}
	fcfg.Bundle = authorityBundle{w.authority}
	fcfg.Registerer, fcfg.Logger = w.unregistering(), w.log
	fcfg.EpochStore = federate.NewEpochStore(w.client, w.namespace, w.log)
	fed, err := federation.New(fcfg)
	if err != nil {
		return nil, nil, err
	}
	bcfg := federate.DefaultConfig()
	bcfg.Client, bcfg.Dynamic, bcfg.Federation = w.client, w.dyn, fed
	bcfg.ClusterName, bcfg.Network, bcfg.TrustDomain = w.cluster, fs.Network, w.trustDomain
	bcfg.Namespace, bcfg.MeshConfigName = w.namespace, w.meshConfig
	bcfg.Registerer, bcfg.Logger = w.unregistering(), w.log
	bridge, err := federate.New(bcfg)
	if err != nil {
		return nil, nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for name, f := range map[string]func(context.Context) error{"member": fed.Run, "bridge": bridge.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(rctx); err != nil {
				w.log.Error("federation "+name+" stopped", "err", err)
			}
			cancel() // one part down: stop both, run() restarts them
		}()
	}
	go func() { wg.Wait(); close(done) }()
	w.mu.Lock()
	w.fed, w.bridge = fed, bridge
	w.mu.Unlock()
	// The junction follows the bridge's remote view from now on.
	if restarting {
		w.junction.ReplaceRemote(bridge, fs.WithdrawAfter)
	} else {
		w.junction.SetRemote(bridge)
	}
	w.log.Info("federation started", "cluster", w.cluster, "bind", fmt.Sprintf("%s:%d", fs.BindAddress, fs.BindPort), "seeds", fs.Peers)
	return cancel, done, nil
}

// unregistering lets a restarted member and bridge register their metrics
// again: collectors of a previous run are replaced.
func (w *federationWiring) unregistering() prometheus.Registerer {
	if w.reg == nil {
		return nil
	}
	return replacingRegisterer{w.reg}
}

type replacingRegisterer struct{ prometheus.Registerer }

func (r replacingRegisterer) Register(c prometheus.Collector) error {
	err := r.Registerer.Register(c)
	if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
		r.Registerer.Unregister(are.ExistingCollector)
		return r.Registerer.Register(c)
	}
	return err
}

// clusterSigner issues the cluster's catalog-signing certificate from the
// current intermediate and renews it at half its life.
type clusterSigner struct {
	authority *ca.Authority
	cluster   string
	mu        sync.Mutex
	key       crypto.Signer
	chain     []*x509.Certificate
}

func (s *clusterSigner) CatalogSigner() (crypto.Signer, []*x509.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.chain != nil {
		leaf := s.chain[0]
		half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
		if time.Now().Before(half) && leaf.CheckSignatureFrom(s.authority.Current().Certificate()) == nil {
			return s.key, s.chain, nil
		}
	}
	key, chain, err := s.authority.Current().IssueClusterCertificate(s.cluster, 24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	s.key, s.chain = key, chain
	return key, chain, nil
}

// authorityBundle gives the federation the CA's current trust bundle.
type authorityBundle struct{ authority *ca.Authority }

func (b authorityBundle) X509Roots() (*x509.CertPool, string) {
	pool := x509.NewCertPool()
	h := sha256.New()
	for _, r := range b.authority.TrustBundle().X509Authorities() {
		pool.AddCert(r)
		h.Write(r.Raw)
	}
	return pool, hex.EncodeToString(h.Sum(nil))
}
