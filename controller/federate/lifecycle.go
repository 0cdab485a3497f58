package federate

// The federation lifecycle: MeshConfig spec.federation → a federation
// member and its Bridge, whose remote view the Junction merges into every
// State. Federation is switched on and off live (`meshfed cluster join` /
// `leave`) and the gossip keyring Secret is applied without a restart.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/meshfed/meshfed/controller/kube"
	"github.com/meshfed/meshfed/controller/meshconfig"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/federation"
)

// LifecycleConfig configures a Lifecycle.
type LifecycleConfig struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// Namespace and MeshConfigName name the MeshConfig followed; the
	// gossip keyring Secret is read from Namespace too.
	Namespace, MeshConfigName string
	ClusterName, TrustDomain  string
	// Signer and Bundle are the member's catalog-signing identity and the
	// roots it verifies other clusters' catalogs with.
	Signer federation.SigningIdentity
	Bundle federation.TrustBundle
	// Registerer receives the member's and bridge's metrics; a restarted
	// member's collectors replace the previous run's.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Retry is how soon a start that failed (unusable keyring, member or
	// bridge error) is tried again.
	Retry time.Duration
	// Informers are the controller's shared informers, given to each
	// bridge (nil: each bridge runs its own).
	Informers *kube.Informers
	// Presence says whether this cluster's gateway serves (see
	// Config.Presence); nil: its addresses are always published.
	Presence GatewayPresence
	// Board, if set, receives the running bridge's status (Config.Board).
	Board *StatusBoard
	// Member and Bridge, if set, adjust the member's and bridge's
	// configuration before each start (tests tune gossip timings).
	Member func(*federation.Config)
	Bridge func(*Config)
}

// Lifecycle follows MeshConfig spec.federation through informers: it
// starts the member and bridge when federation is enabled, stops them
// (empty catalog, graceful leave) when it is disabled or when Run ends,
// restarts them when a setting that needs it changes — without
// withdrawing this cluster's exports: the member leaves with a signed
// restart note, the others keep its catalog until the new member
// publishes (federation.Config.RestartGrace), and the Junction keeps the
// previous remote view until the new member has caught up — and applies a
// changed gossip keyring without a restart.
//
// Run's goroutine owns the member, the bridge and the settings in force;
// informer handlers only signal it.
type Lifecycle struct {
	cfg      LifecycleConfig
	junction *Junction
	log      *slog.Logger
}

// NewLifecycle returns a Lifecycle that hands each bridge's remote view to
// junction (which must be running).
func NewLifecycle(cfg LifecycleConfig, junction *Junction) (*Lifecycle, error) {
	var errs []error
	if cfg.Client == nil || cfg.Dynamic == nil {
		errs = append(errs, errors.New("federate: Client and Dynamic are required"))
	}
	if cfg.Namespace == "" || cfg.MeshConfigName == "" || cfg.ClusterName == "" || cfg.TrustDomain == "" {
		errs = append(errs, errors.New("federate: Namespace, MeshConfigName, ClusterName and TrustDomain are required"))
	}
	if cfg.Signer == nil || cfg.Bundle == nil {
		errs = append(errs, errors.New("federate: Signer and Bundle are required"))
	}
	if junction == nil {
		errs = append(errs, errors.New("federate: a Junction is required"))
	}
	if cfg.Retry <= 0 {
		errs = append(errs, errors.New("federate: Retry must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Lifecycle{cfg: cfg, junction: junction, log: log}, nil
}

// running is a started member and bridge.
type running struct {
	settings meshconfig.Federation
	keys     [][]byte
	fed      *federation.Federation
	cancel   context.CancelFunc
	done     chan struct{}
}

// Run follows the MeshConfig until ctx ends, then leaves the federation
// gracefully if it was in it.
func (l *Lifecycle) Run(ctx context.Context) error {
	kick := make(chan struct{}, 1)
	signal := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{AddFunc: signal, UpdateFunc: func(_, o any) { signal(o) }, DeleteFunc: signal}
	byName := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", l.cfg.MeshConfigName).String()
	}
	dynF := dynamicinformer.NewFilteredDynamicSharedInformerFactory(l.cfg.Dynamic, 0, l.cfg.Namespace, byName)
	mcInf := dynF.ForResource(deploy.MeshConfigGVR)
	if _, err := mcInf.Informer().AddEventHandler(handler); err != nil {
		return err
	}
	secF := informers.NewSharedInformerFactoryWithOptions(l.cfg.Client, 0, informers.WithNamespace(l.cfg.Namespace))
	secInf := secF.Core().V1().Secrets()
	if _, err := secInf.Informer().AddEventHandler(handler); err != nil {
		return err
	}
	infCtx, stopInformers := context.WithCancel(ctx)
	dynF.Start(infCtx.Done())
	secF.Start(infCtx.Done())
	defer func() {
		stopInformers()
		dynF.Shutdown()
		secF.Shutdown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), mcInf.Informer().HasSynced, secInf.Informer().HasSynced) {
		return nil
	}

	var cur *running
	defer func() { l.stop(cur, false) }()
	var retry <-chan time.Time
	signal(nil)
	for {
		var done <-chan struct{}
		if cur != nil {
			done = cur.done
		}
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-retry:
		case <-done:
			l.log.Error("federation stopped; retrying")
			cur = nil
			l.junction.SetRemote(nil)
		}
		retry = nil
		next, err := l.step(ctx, cur, mcInf.Lister(), secInf.Lister())
		cur = next
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			l.log.Warn("federation: retrying", "in", l.cfg.Retry, "err", err)
			retry = time.After(l.cfg.Retry)
		}
	}
}

// step brings what runs in line with the MeshConfig and keyring: it
// returns what runs afterwards, and an error if something should be
// retried.
func (l *Lifecycle) step(ctx context.Context, cur *running, mcs cache.GenericLister, secrets corelisters.SecretLister) (*running, error) {
	obj, err := mcs.ByNamespace(l.cfg.Namespace).Get(l.cfg.MeshConfigName)
	if apierrors.IsNotFound(err) {
		// Not installed yet, or being reinstalled: keep what runs.
		return cur, nil
	}
	if err != nil {
		return cur, fmt.Errorf("MeshConfig %s/%s: %w", l.cfg.Namespace, l.cfg.MeshConfigName, err)
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return cur, fmt.Errorf("MeshConfig %s/%s: unexpected %T", l.cfg.Namespace, l.cfg.MeshConfigName, obj)
	}
	spec, err := meshconfig.Parse(u)
	if err != nil {
		return cur, fmt.Errorf("MeshConfig %s/%s: %w", l.cfg.Namespace, l.cfg.MeshConfigName, err)
	}
	fs := spec.Federation
	if !fs.Enabled {
		if cur != nil {
			l.log.Info("federation disabled: leaving")
			l.stop(cur, false)
			if err := RemoveImports(ctx, l.cfg.Dynamic); err != nil {
				l.log.Warn("removing ServiceImports after leaving", "err", err)
			}
		}
		return nil, nil
	}
	keys, err := l.keys(secrets, fs.GossipKeySecretName)
	if err != nil {
		return cur, fmt.Errorf("federation enabled but the gossip keyring is unusable: %w", err)
	}
	if cur != nil && reflect.DeepEqual(cur.settings, fs) {
		if !reflect.DeepEqual(cur.keys, keys) {
			if err := cur.fed.SetGossipKeys(keys[0], keys[1:]...); err != nil {
				return cur, fmt.Errorf("rotating gossip keys: %w", err)
			}
			cur.keys = keys
			l.log.Info("gossip keyring updated", "keys", len(keys))
		}
		return cur, nil
	}
	restarting := cur != nil
	if restarting {
		l.log.Info("federation settings changed: rejoining (peers keep this cluster's services meanwhile)")
		l.stop(cur, true)
	}
	next, err := l.start(ctx, fs, keys, restarting)
	if err != nil {
		if restarting {
			l.junction.SetRemote(nil)
		}
		return nil, fmt.Errorf("starting federation: %w", err)
	}
	return next, nil
}

// keys reads the gossip keyring Secret name from the informer's cache.
func (l *Lifecycle) keys(secrets corelisters.SecretLister, name string) ([][]byte, error) {
	s, err := secrets.Secrets(l.cfg.Namespace).Get(name)
	if err != nil {
		return nil, fmt.Errorf("gossip key Secret %s/%s: %w", l.cfg.Namespace, name, err)
	}
	keys, err := ParseGossipKeyring(s.Data[GossipKeyringKey])
	if err != nil {
		return nil, fmt.Errorf("gossip key Secret %s/%s: %w", l.cfg.Namespace, name, err)
	}
	return keys, nil
}

// stop leaves the federation; with restart, only to rejoin at once (the
// Junction then keeps the remote view until the new member caught up).
func (l *Lifecycle) stop(cur *running, restart bool) {
	if cur == nil {
		return
	}
	if restart {
		cur.fed.MarkRestart()
	} else {
		pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := cur.fed.Publish(pctx, nil); err != nil {
			l.log.Warn("publishing an empty catalog before leaving", "err", err)
		}
		cancel()
	}
	cur.cancel()
	<-cur.done
	if !restart {
		l.junction.SetRemote(nil)
	}
}

// start starts a member and its bridge. With restarting, the Junction
// keeps passing on the previous member's remote view until the new one has
// the catalogs of every cluster it had, or for WithdrawAfter at most.
func (l *Lifecycle) start(ctx context.Context, fs meshconfig.Federation, keys [][]byte, restarting bool) (*running, error) {
	reg := l.registerer()
	fcfg := federation.DefaultConfig()
	fcfg.ClusterName, fcfg.Network, fcfg.TrustDomain = l.cfg.ClusterName, fs.Network, l.cfg.TrustDomain
	fcfg.Gateways = fs.GatewayAddresses
	fcfg.BindAddr, fcfg.BindPort = fs.BindAddress, fs.BindPort
	fcfg.AdvertiseAddr, fcfg.AdvertisePort = fs.AdvertiseAddress, fs.AdvertisePort
	fcfg.Seeds = fs.Peers
	fcfg.GossipKeys = keys
	fcfg.WithdrawAfter, fcfg.FailStatic = fs.WithdrawAfter, fs.FailStatic
	fcfg.Signer, fcfg.Bundle = l.cfg.Signer, l.cfg.Bundle
	fcfg.Registerer, fcfg.Logger = reg, l.log
	fcfg.EpochStore = NewEpochStore(l.cfg.Client, l.cfg.Namespace, l.log)
	if l.cfg.Member != nil {
		l.cfg.Member(&fcfg)
	}
	fed, err := federation.New(fcfg)
	if err != nil {
		return nil, err
	}
	bcfg := DefaultConfig()
	bcfg.Client, bcfg.Dynamic, bcfg.Federation = l.cfg.Client, l.cfg.Dynamic, fed
	bcfg.ClusterName, bcfg.Network, bcfg.TrustDomain = l.cfg.ClusterName, fs.Network, l.cfg.TrustDomain
	bcfg.Gateways, bcfg.Presence = fs.GatewayAddresses, l.cfg.Presence
	bcfg.Board = l.cfg.Board
	bcfg.Namespace, bcfg.MeshConfigName = l.cfg.Namespace, l.cfg.MeshConfigName
	bcfg.Registerer, bcfg.Logger = reg, l.log
	bcfg.Informers = l.cfg.Informers
	if l.cfg.Bridge != nil {
		l.cfg.Bridge(&bcfg)
	}
	bridge, err := New(bcfg)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for name, f := range map[string]func(context.Context) error{"member": fed.Run, "bridge": bridge.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(rctx); err != nil {
				l.log.Error("federation "+name+" stopped", "err", err)
			}
			cancel() // one part down: stop both; Run restarts them
		}()
	}
	go func() { wg.Wait(); close(done) }()
	if restarting {
		l.junction.ReplaceRemote(bridge, fs.WithdrawAfter)
	} else {
		l.junction.SetRemote(bridge)
	}
	l.log.Info("federation started", "cluster", l.cfg.ClusterName, "bind", fmt.Sprintf("%s:%d", fs.BindAddress, fs.BindPort), "seeds", fs.Peers)
	return &running{settings: fs, keys: keys, fed: fed, cancel: cancel, done: done}, nil
}

// registerer lets a restarted member and bridge register their metrics
// again: collectors of a previous run are replaced.
func (l *Lifecycle) registerer() prometheus.Registerer {
	if l.cfg.Registerer == nil {
		return nil
	}
	return replacingRegisterer{l.cfg.Registerer}
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

// MustRegister registers cs, replacing collectors of a previous run; it
// panics on any other error, as prometheus.Registerer's does.
func (r replacingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}
