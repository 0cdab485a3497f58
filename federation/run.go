package federation

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

const (
	tickInterval     = 250 * time.Millisecond
	snapshotInterval = time.Second
	joinGrace        = 3 * time.Second // a name conflict this soon after joining means we are the duplicate
	// sendWorkers stream catalogs to members that asked for them. After a
	// change every member asks the owner at once: with 2 workers the last
	// of 49 waited ~0.9 s (p99) for a small catalog, with 8 ~0.15–0.35 s.
	sendWorkers = 8
	// bigSends bounds how many large catalogs (over bigMessage bytes) are
	// sent at once: each costs CPU on both ends (compression, encryption,
	// verification), and 8 at a time tripled a 10k-service catalog's
	// convergence time on 2 cores.
	bigSends   = 2
	bigMessage = 64 << 10
)

type sendJob struct {
	to      memberlist.Node
	cluster string // the catalog this is about, for failure reports
	msg     []byte
}

// Run joins the federation, serves until ctx ends, then leaves gracefully
// (memberlist Leave, bounded by LeaveTimeout) and returns after all of its
// goroutines have stopped. It returns ErrDuplicateName if another member
// already has this cluster's name, and nil after a clean leave. Run may be
// called once.
func (f *Federation) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return fmt.Errorf("federation %s: Run called twice", f.cfg.ClusterName)
	}
	ectx, ecancel := context.WithTimeout(ctx, epochStoreTimeout)
	epoch, err := f.epochs.Advance(ectx, 1)
	ecancel()
	if err != nil {
		return fmt.Errorf("federation %s: advance the catalog epoch: %w", f.cfg.ClusterName, err)
	}
	ml, err := f.createMemberlist()
	if err != nil {
		return err
	}
	addr := ml.LocalNode().Address() // read before anything can update the local node
	f.addr.Store(&addr)
	f.ml.Store(ml)
	f.log.Info("federation member listening", "addr", addr)

	workCtx, stopWork := context.WithCancel(context.Background())
	sendCh := make(chan sendJob, 256)
	metaCh := make(chan struct{}, 1)
	var wg sync.WaitGroup
	big := make(chan struct{}, bigSends)
	for range sendWorkers {
		wg.Go(func() { f.sendWorker(workCtx, ml, sendCh, big) })
	}
	wg.Go(func() { f.metaWorker(workCtx, ml, metaCh) })

	st := newLoopState(f, ml, sendCh, metaCh, epoch)
	f.log.Info("catalog epoch", "epoch", epoch)
	runErr := st.loop(ctx)

	stopWork()
	if runErr == nil && !f.abrupt.Load() && f.restarting.Load() {
		f.sendRestartNote(ml, st, &wg)
	}
	if runErr == nil && !f.abrupt.Load() {
		f.leave(ml, st.liveNodes(), &wg)
	}
	if err := ml.Shutdown(); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("federation %s: shutdown: %w", f.cfg.ClusterName, err))
	}
	wg.Wait()
	return runErr
}

// sendRestartNote tells every live member, with a note signed by this
// cluster, to keep this cluster's catalog while the member restarts. It
// sends by stream, in parallel, and waits at most LeaveTimeout; senders
// still running then are waited for through outer, after shutdown.
func (f *Federation) sendRestartNote(ml *memberlist.Memberlist, st *loopState, outer *sync.WaitGroup) {
	if st.own == nil {
		return // nothing published, nothing to keep
	}
	key, chain, err := f.cfg.Signer.CatalogSigner()
	var note []byte
	if err == nil {
		note, err = signRestartNote(restartNote{Cluster: f.cfg.ClusterName, Version: st.own.version(), Digest: st.own.shortDigest()}, key, chain)
	}
	if err != nil {
		f.log.Error("cannot sign the restart note; peers will withdraw this cluster's services after their withdrawAfter", "err", err)
		return
	}
	f.sendToAll(ml, st.liveNodes(), append([]byte{kindRestart}, note...), "restart note", outer)
	f.log.Info("restart note sent", "catalog", FormatVersion(st.own.version()))
}

// leave departs gracefully, so that the others report this cluster as
// left rather than failed. memberlist's own leave message is a best-effort
// broadcast that a loaded network can lose; so the departure is also told
// to every live member by stream (the leave notice, before leaving) and,
// after memberlist's Leave, by a push-pull state exchange with each, which
// carries this node's left state. Each step is bounded by LeaveTimeout.
// What is guaranteed: every member reachable by stream during the leave
// records it as left; one that is not reachable sees it fail and later,
// when any notice reaches it, as left (docs/federation.md).
func (f *Federation) leave(ml *memberlist.Memberlist, peers []*memberlist.Node, outer *sync.WaitGroup) {
	msg := encodeMsg(kindLeave, notice{Cluster: f.cfg.ClusterName})
	f.bcast.QueueBroadcast(&noticeBroadcast{n: notice{Cluster: leaveMarker}, msg: msg})
	f.sendToAll(ml, peers, msg, "leave notice", outer)
	if err := ml.Leave(f.cfg.LeaveTimeout); err != nil {
		f.log.Warn("federation leave incomplete", "err", err)
	}
	addrs := make([]string, 0, len(peers))
	for _, m := range peers {
		addrs = append(addrs, m.Name+"/"+m.Address())
	}
	if len(addrs) == 0 {
		return
	}
	done := make(chan struct{})
	outer.Go(func() {
		defer close(done)
		if n, err := ml.Join(addrs); err != nil {
			f.log.Warn("confirming the leave by push-pull", "reached", n, "of", len(addrs), "err", err)
		}
	})
	select {
	case <-done:
	case <-time.After(f.cfg.LeaveTimeout):
		f.log.Warn("leave not confirmed to every member in time")
	}
}

// sendToAll sends msg to each of to by stream, in parallel, and waits at
// most LeaveTimeout; senders still running then are waited for through
// outer, after shutdown. what names the message in logs.
func (f *Federation) sendToAll(ml *memberlist.Memberlist, to []*memberlist.Node, msg []byte, what string, outer *sync.WaitGroup) {
	var wg sync.WaitGroup
	done := make(chan struct{})
	for _, m := range to {
		wg.Go(func() {
			if err := ml.SendReliable(m, msg); err != nil {
				f.log.Warn("sending the "+what, "to", m.Name, "err", err)
			}
		})
	}
	outer.Go(func() { wg.Wait(); close(done) })
	select {
	case <-done:
	case <-time.After(f.cfg.LeaveTimeout):
		f.log.Warn(what + " not delivered to every member in time")
	}
}

// leaveMarker names the leave broadcast in the queue; it is not a cluster name.
const leaveMarker = "-leave-"

func (f *Federation) createMemberlist() (*memberlist.Memberlist, error) {
	cfg := f.cfg
	mlc := memberlist.DefaultLANConfig()
	mlc.Name = cfg.ClusterName
	logger := log.New(logWriter{log: f.log.With("component", "memberlist")}, "", 0)
	nt, err := newNetTransport(cfg.BindAddr, cfg.BindPort, logger)
	if err != nil {
		return nil, fmt.Errorf("federation %s: gossip listener on %s:%d: %w", cfg.ClusterName, cfg.BindAddr, cfg.BindPort, err)
	}
	mlc.BindAddr = cfg.BindAddr
	mlc.BindPort = nt.GetAutoBindPort()
	mlc.AdvertiseAddr = cfg.AdvertiseAddr
	mlc.AdvertisePort = cfg.AdvertisePort
	if mlc.AdvertisePort == 0 {
		mlc.AdvertisePort = mlc.BindPort
	}
	mlc.Transport = newCountingTransport(nt, f.m)
	mlc.Keyring = f.keyring
	mlc.GossipVerifyIncoming = true
	mlc.GossipVerifyOutgoing = true
	// Catalogs are gzip-compressed already; memberlist's LZW would grow
	// them (~37 % on incompressible data), and the rest of gossip is tiny.
	mlc.EnableCompression = false
	d := delegate{f: f}
	mlc.Delegate, mlc.Events, mlc.Conflict, mlc.Alive, mlc.Ping = d, d, d, d, d
	mlc.DeadNodeReclaimTime = cfg.DeadNameReclaimAfter
	mlc.Logger = logger
	f.storeMeta(nodeMeta{Format: wireFormat, Network: cfg.Network, Updates: true})
	if cfg.Tune != nil {
		cfg.Tune(mlc)
	}
	f.bcast.RetransmitMult = mlc.RetransmitMult
	ml, err := memberlist.Create(mlc)
	if err != nil {
		_ = mlc.Transport.Shutdown()
		return nil, fmt.Errorf("federation %s: start memberlist: %w", cfg.ClusterName, err)
	}
	return ml, nil
}

// newNetTransport binds UDP and TCP on the same port; with port 0 the
// kernel's pick for TCP may be taken for UDP, so retry like memberlist does.
func newNetTransport(addr string, port int, logger *log.Logger) (*memberlist.NetTransport, error) {
	var err error
	for range 10 {
		var nt *memberlist.NetTransport
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{addr}, BindPort: port, Logger: logger})
		if err == nil {
			return nt, nil
		}
		if port != 0 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

func (f *Federation) storeMeta(m nodeMeta) {
	b := encodeMsg(0, m)[1:]
	f.meta.Store(&b)
}

// sendWorker sends stream messages (requests, catalogs) so that a slow or
// dead peer never blocks the loop.
func (f *Federation) sendWorker(ctx context.Context, ml *memberlist.Memberlist, jobs <-chan sendJob, big chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-jobs:
			if len(j.msg) > bigMessage {
				select {
				case big <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
			if err := ml.SendReliable(&j.to, j.msg); err != nil {
				f.events.push(evSendFailed{to: j.to.Name, cluster: j.cluster, err: err})
			}
			if len(j.msg) > bigMessage {
				<-big
			}
		}
	}
}

// metaWorker re-advertises this node's metadata after a publication.
// UpdateNode waits for the broadcast, so it runs here, not in the loop.
func (f *Federation) metaWorker(ctx context.Context, ml *memberlist.Memberlist, dirty <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-dirty:
			if err := ml.UpdateNode(2 * time.Second); err != nil {
				f.log.Debug("re-advertising node meta", "err", err)
			}
		}
	}
}
