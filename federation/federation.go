// Package federation is meshfed's membership and catalog gossip between
// clusters, on hashicorp/memberlist.
//
// It owns: who is in the federation (one memberlist node per cluster, node
// name = cluster name, encrypted gossip with a rotatable keyring), each
// cluster's signed catalog of exported services and how it travels (a small
// "cluster C is at version V" broadcast; updates over memberlist's encrypted
// TCP stream — the owner's signed head with a delta from the version the
// receiver holds, or the whole catalog — pushed by the owner to a few
// members and fetched by the rest from any member that holds them; and
// version digests in push/pull for guaranteed convergence), liveness, and
// the failure policy that decides whether a lost cluster's services stay in
// the view (fail-static) or are withdrawn after WithdrawAfter.
//
// It does not own: what a cluster exports (the controller reads
// ServiceExports and calls Publish), how remote services become xDS (the
// controller reads Snapshot), or certificates (package trust hands in a
// SigningIdentity and a TrustBundle). The wire types live in
// federation/catalog.
//
// See docs/decisions/0001-catalogs-by-pushpull-and-version-broadcast.md,
// docs/decisions/0003-catalog-versions-epoch-and-sequence.md and
// docs/decisions/0004-catalog-deltas-and-relays.md.
package federation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
)

// ErrDuplicateName is returned by Run when another member already uses this
// cluster's name: the newcomer refuses to join.
var ErrDuplicateName = errors.New("cluster name already used by another federation member")

// MemberState is a member's liveness as this member sees it.
type MemberState string

const (
	// StateAlive: memberlist reports the member alive.
	StateAlive MemberState = "alive"
	// StateSuspect: memberlist reports it alive but meshfed's own direct
	// TCP contact with it failed recently. (memberlist v0.7.0 does not
	// expose SWIM suspicion through its API.)
	StateSuspect MemberState = "suspect"
	// StateDead: memberlist declared it failed.
	StateDead MemberState = "dead"
	// StateLeft: it left gracefully (announced before leaving).
	StateLeft MemberState = "left"
	// StateUnknown: its catalog reached us through another member but we
	// have never seen the member itself.
	StateUnknown MemberState = "unknown"
)

// Member describes one federation member, for `meshfed cluster list`.
type Member struct {
	Name string
	// Addr is the gossip address, host:port.
	Addr  string
	State MemberState
	// Since is when State last changed.
	Since time.Time
	// LastContact is the last time this member heard from it directly
	// (probe ack, push/pull, catalog); zero if never.
	LastContact time.Time
	// CatalogVersion is the version of its catalog held here (0: none).
	CatalogVersion uint64
	// Services is the number of services in that catalog.
	Services int
	// TrustBundleFingerprint is what its catalog says it trusts.
	TrustBundleFingerprint string
	// Stale is true when a newer catalog has been claimed (by a notice,
	// digest or metadata) and for StaleAfter has neither been obtained nor
	// denied by the owner (see learn and ownerSays).
	Stale bool
	// Local is true for this cluster's own entry.
	Local bool
}

// ClusterView is one remote cluster in a RemoteView. Values reachable from
// it are shared between snapshots and must not be modified.
type ClusterView struct {
	Member Member
	// Catalog is the last good (verified) catalog, nil if none yet.
	Catalog *catalog.Catalog
	// Services is what consumers should route to: the catalog's services
	// minus those the failure policy withdrew.
	Services []catalog.ExportedService
	// Withdrawn lists "namespace/name" of withdrawn services.
	Withdrawn []string
	// Reason says why, e.g. "west: dead since 12:01:03, withdrawn at
	// 12:01:33"; "west: alive" when nothing is wrong.
	Reason string
}

// RemoteView is an immutable snapshot of the federation as this member sees
// it.
type RemoteView struct {
	At time.Time
	// Clusters holds every remote cluster (not this one) by name.
	Clusters map[string]ClusterView
	// Members lists every member including this one, sorted by name.
	Members []Member
}

// Federation is one cluster's federation member. Create it with New, start
// it with Run.
type Federation struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	keyring *memberlist.Keyring

	events    eventQueue
	publishCh chan publishReq

	snap   atomic.Pointer[RemoteView]
	subsMu sync.Mutex
	subs   map[chan struct{}]struct{}

	epochs     EpochStore
	running    atomic.Bool
	restarting atomic.Bool // MarkRestart: send a restart note before leaving
	abrupt     atomic.Bool // tests: stop without leaving, as a crash would
	ml         atomic.Pointer[memberlist.Memberlist]
	addr       atomic.Pointer[string]
	bcast      *memberlist.TransmitLimitedQueue
	meta       atomic.Pointer[[]byte]
	localState atomic.Pointer[[]byte]
}

type publishReq struct {
	services []catalog.ExportedService
	gateways []string
	reply    chan publishResult
}

type publishResult struct {
	version uint64
	err     error
}

// New checks cfg and returns a Federation that is not yet running.
func New(cfg Config) (*Federation, error) {
	cfg = cfg.withDeltaDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("federation config for cluster %q: %w", cfg.ClusterName, err)
	}
	kr, err := memberlist.NewKeyring(cfg.GossipKeys, cfg.GossipKeys[0])
	if err != nil {
		return nil, fmt.Errorf("federation %s: gossip keyring: %w", cfg.ClusterName, err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	f := &Federation{
		cfg: cfg, log: logger.With("cluster", cfg.ClusterName), m: newMetrics(cfg.Registerer),
		keyring: kr, publishCh: make(chan publishReq), subs: map[chan struct{}]struct{}{},
	}
	f.epochs = cfg.EpochStore
	if f.epochs == nil {
		f.epochs = &MemoryEpochStore{}
	}
	f.events.signal = make(chan struct{}, 1)
	empty := []byte{}
	f.localState.Store(&empty)
	f.meta.Store(&empty)
	f.snap.Store(&RemoteView{At: time.Now(), Clusters: map[string]ClusterView{}})
	f.bcast = &memberlist.TransmitLimitedQueue{NumNodes: f.numNodes, RetransmitMult: 4}
	return f, nil
}

func (f *Federation) numNodes() int {
	if ml := f.ml.Load(); ml != nil {
		return ml.NumMembers()
	}
	return 1
}

// Publish replaces this cluster's catalog with services: it assigns the next
// version, signs the catalog, and announces it. It returns the version.
//
// Contract: call it from any goroutine, any number of times; the latest call
// wins. It blocks until Run's goroutine has signed the catalog (milliseconds;
// a 10,000-service catalog signed whole — the first publication, or a
// change too large for a delta — takes ~0.2 s, a small change to it a few
// milliseconds), or until ctx ends,
// so before Run starts it waits. It never calls back into the caller. The
// services slice is copied.
func (f *Federation) Publish(ctx context.Context, services []catalog.ExportedService) (uint64, error) {
	return f.PublishWithGateways(ctx, services, f.cfg.Gateways)
}

// PublishWithGateways is Publish with the gateway addresses the catalog
// lists: those of the cluster's gateway while it serves (configured, or
// its load balancer's), none while it does not (other networks then know
// the cluster is unreachable). They are checked as Config.Gateways are.
func (f *Federation) PublishWithGateways(ctx context.Context, services []catalog.ExportedService, gateways []string) (uint64, error) {
	if len(gateways) > catalog.MaxGateways {
		return 0, fmt.Errorf("publish catalog of %s: %d gateway addresses, at most %d", f.cfg.ClusterName, len(gateways), catalog.MaxGateways)
	}
	for _, g := range gateways {
		if err := mesh.CheckGatewayAddress(g); err != nil {
			return 0, fmt.Errorf("publish catalog of %s: gateway %q: %w", f.cfg.ClusterName, g, err)
		}
	}
	req := publishReq{services: cloneServices(services), gateways: slices.Clone(gateways), reply: make(chan publishResult, 1)}
	select {
	case f.publishCh <- req:
	case <-ctx.Done():
		return 0, fmt.Errorf("publish catalog of %s: %w", f.cfg.ClusterName, ctx.Err())
	}
	select {
	case r := <-req.reply:
		return r.version, r.err
	case <-ctx.Done():
		return 0, fmt.Errorf("publish catalog of %s: %w", f.cfg.ClusterName, ctx.Err())
	}
}

// MarkRestart says that Run's context is about to end only so that the
// member can start again (with new settings), not because this cluster
// leaves. Before leaving, Run then sends every member a restart note signed
// with this cluster's catalog key, naming the catalog it holds of this
// cluster; each keeps that catalog for up to its RestartGrace while this
// member is away, instead of withdrawing it after WithdrawAfter. Without
// MarkRestart, a stop is an ordinary leave. Safe from any goroutine.
func (f *Federation) MarkRestart() { f.restarting.Store(true) }

// Snapshot returns the current view. It never blocks; the value is
// immutable and shared, so do not modify it.
func (f *Federation) Snapshot() *RemoteView { return f.snap.Load() }

// Members returns every member including this one (Snapshot().Members).
func (f *Federation) Members() []Member { return f.snap.Load().Members }

// Subscribe returns a channel that receives a value whenever the view
// changes in a way consumers care about (a catalog arrives, a member's state
// changes, the policy withdraws or restores services), and a func to stop.
// Signals coalesce: the channel has room for one, so after a signal read
// Snapshot for the latest state. The federation never blocks on a slow
// subscriber.
func (f *Federation) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	f.subsMu.Lock()
	f.subs[ch] = struct{}{}
	f.subsMu.Unlock()
	return ch, func() {
		f.subsMu.Lock()
		delete(f.subs, ch)
		f.subsMu.Unlock()
	}
}

func (f *Federation) notify() {
	f.subsMu.Lock()
	defer f.subsMu.Unlock()
	for ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// SetGossipKeys makes the keyring hold exactly primary and others, with
// primary used to encrypt. It is safe to call at any time from any
// goroutine, and idempotent, so a Secret watcher can call it on every
// change. To rotate without a restart: first add the new key on every
// member (SetGossipKeys(old, new)), then make it primary everywhere
// (SetGossipKeys(new, old)), then drop the old one (SetGossipKeys(new)).
func (f *Federation) SetGossipKeys(primary []byte, others ...[]byte) error {
	all := append([][]byte{primary}, others...)
	for i, k := range all {
		if err := f.keyring.AddKey(k); err != nil {
			return fmt.Errorf("federation %s: gossip key %d: %w", f.cfg.ClusterName, i, err)
		}
	}
	if err := f.keyring.UseKey(primary); err != nil {
		return fmt.Errorf("federation %s: use primary gossip key: %w", f.cfg.ClusterName, err)
	}
	for _, k := range f.keyring.GetKeys() {
		if !slices.ContainsFunc(all, func(w []byte) bool { return string(w) == string(k) }) {
			if err := f.keyring.RemoveKey(k); err != nil {
				return fmt.Errorf("federation %s: remove old gossip key: %w", f.cfg.ClusterName, err)
			}
		}
	}
	return nil
}

// Addr returns the gossip address this member advertises, once Run has
// started listening ("" before).
func (f *Federation) Addr() string {
	if a := f.addr.Load(); a != nil {
		return *a
	}
	return ""
}

func cloneServices(in []catalog.ExportedService) []catalog.ExportedService {
	out := make([]catalog.ExportedService, len(in))
	for i, s := range in {
		out[i] = s
		out[i].Ports = slices.Clone(s.Ports)
		out[i].Endpoints = slices.Clone(s.Endpoints)
		if s.FailStatic != nil {
			v := *s.FailStatic
			out[i].FailStatic = &v
		}
	}
	slices.SortFunc(out, func(a, b catalog.ExportedService) int {
		if a.Namespace != b.Namespace {
			if a.Namespace < b.Namespace {
				return -1
			}
			return 1
		}
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}
