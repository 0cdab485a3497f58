package federation

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meshfed/meshfed/federation/catalog"
)

// clusterState is everything the loop knows about one remote cluster.
type clusterState struct {
	name string

	// Membership.
	known       bool // memberlist has told us about it
	node        memberlist.Node
	mstate      MemberState
	since       time.Time
	lastContact time.Time
	leaving     bool      // it announced a graceful leave
	confirmedAt time.Time // last time we sent it our catalog though it held it (serve)
	sendFailAt  time.Time // last failed direct stream to it

	// Catalog: cat is hold.cat, kept apart for the snapshot code.
	cat        *catalog.Catalog
	hold       *holding
	receivedAt time.Time
	// wholeNext makes the next fetch ask for the whole catalog: a delta
	// was refused.
	wholeNext bool
	// takesUpdates: its member says (in its meta) that it takes catalog
	// updates, so new versions may be pushed to it.
	takesUpdates bool

	// Fetching a newer version. want comes from unsigned claims (notices,
	// digests, node meta): it makes us ask, and a want the owner does not
	// confirm for StaleAfter makes the catalog stale, but it never stops us
	// from accepting a newer signed catalog, far-future claims are refused
	// (farFuture), and the owner's own word (its answer to a fetch, its
	// meta, its digest) lowers it again (ownerSays).
	want       uint64    // newest version claimed; > held means we lack it
	wantSince  time.Time // when we first lacked a newer version
	learnedAt  time.Time // when we learned of want
	sources    []string  // members said to hold >= want
	attempt    int
	tries      int // fetches asked since want was raised
	inflightTo string
	inflightAt time.Time

	// A verified restart note: keep the catalog at restartVersion while
	// the owner is away, until restartUntil.
	restartVersion uint64
	restartUntil   time.Time

	// Policy outcome at the last snapshot, to detect changes.
	policyKey string
}

func (c *clusterState) held() uint64 {
	if c.hold == nil {
		return 0
	}
	return c.hold.version()
}

// loopState is owned by the loop goroutine; nothing else touches it.
type loopState struct {
	f      *Federation
	ml     *memberlist.Memberlist
	sendCh chan<- sendJob
	metaCh chan<- struct{}
	self   string

	local *catalog.Catalog
	own   *holding // local, as served to others
	// This run's epoch and the sequence of its last publication; the next
	// version is makeVersion(epoch, seq+1).
	epoch     uint32
	seq       uint32
	recoverAt time.Time // last time we asked a peer for our own catalog

	clusters map[string]*clusterState
	// parked are requests for versions this member is about to hold.
	parked   map[string][]parkedRequest
	joinedAt time.Time
	joined   bool
	dirty    bool
	lastSnap time.Time
	nextJoin time.Time
}

func newLoopState(f *Federation, ml *memberlist.Memberlist, sendCh chan<- sendJob, metaCh chan<- struct{}, epoch uint32) *loopState {
	return &loopState{f: f, ml: ml, sendCh: sendCh, metaCh: metaCh, self: f.cfg.ClusterName, clusters: map[string]*clusterState{}, epoch: epoch}
}

// current is the version this member is at: its last publication, or
// where its next one starts.
func (s *loopState) current() uint64 { return makeVersion(s.epoch, s.seq) }

func (s *loopState) loop(ctx context.Context) error {
	if err := s.join(); err != nil {
		return err
	}
	tick := time.NewTicker(tickInterval)
	defer tick.Stop()
	s.dirty = true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.f.events.signal:
			for _, e := range s.f.events.drain() {
				if err := s.handle(e); err != nil {
					return err
				}
			}
		case req := <-s.f.publishCh:
			v, err := s.publish(req.services, req.gateways)
			req.reply <- publishResult{version: v, err: err}
		case <-tick.C:
			if err := s.tick(); err != nil {
				return err
			}
		}
		now := time.Now()
		if s.dirty || now.Sub(s.lastSnap) >= snapshotInterval {
			s.snapshot(now)
		}
	}
}

// join tries the seeds. Failing to reach any seed is not fatal (the others
// may be down; the tick retries); finding our name taken is.
func (s *loopState) join() error {
	seeds := s.f.cfg.Seeds
	s.nextJoin = time.Now().Add(s.f.cfg.JoinRetryInterval)
	if len(seeds) == 0 {
		s.joined, s.joinedAt = true, time.Now()
		return nil
	}
	n, err := s.ml.Join(seeds)
	if n > 0 {
		s.joined, s.joinedAt = true, time.Now()
		s.f.log.Info("joined federation", "seeds", seeds, "reached", n)
	}
	if err != nil {
		s.f.log.Warn("joining federation: some seeds unreachable", "seeds", seeds, "err", err)
	}
	// A conflict found during the join's push/pull is already queued.
	for _, e := range s.f.events.drain() {
		if err := s.handle(e); err != nil {
			return err
		}
	}
	return nil
}

func (s *loopState) tick() error {
	now := time.Now()
	if len(s.f.cfg.Seeds) > 0 && now.After(s.nextJoin) && s.ml.NumMembers() <= 1 {
		if err := s.join(); err != nil {
			return err
		}
	}
	for _, c := range s.clusters {
		if c.inflightTo != "" && now.Sub(c.inflightAt) >= s.f.cfg.FetchTimeout {
			s.f.log.Warn("catalog fetch timed out", "from", c.inflightTo, "catalog", c.name, "version", c.want)
			c.inflightTo = ""
		}
		s.maybeFetch(c)
	}
	for name, c := range s.clusters {
		if _, ok := s.parked[name]; ok {
			s.answerParked(name, c.held())
		}
	}
	return nil
}

func (s *loopState) cluster(name string) *clusterState {
	c, ok := s.clusters[name]
	if !ok {
		c = &clusterState{name: name, mstate: StateUnknown, since: time.Now()}
		s.clusters[name] = c
	}
	return c
}

func (s *loopState) handle(e any) error {
	switch e := e.(type) {
	case evMember:
		s.member(e)
	case evContact:
		if c, ok := s.clusters[e.name]; ok {
			c.lastContact = e.at
		}
	case evMsg:
		s.message(e.b)
	case evState:
		s.remoteState(e.b)
	case evConflict:
		return s.conflict(e)
	case evSendFailed:
		if c, ok := s.clusters[e.to]; ok {
			c.sendFailAt = time.Now()
			s.dirty = true
		}
		if c, ok := s.clusters[e.cluster]; ok && c.inflightTo == e.to {
			c.inflightTo = ""
			s.maybeFetch(c)
		}
		s.f.log.Debug("stream to member failed", "member", e.to, "err", e.err)
	}
	return nil
}

func (s *loopState) conflict(e evConflict) error {
	if e.existing.Name != s.self {
		s.f.log.Error("two members claim one cluster name; keeping the first", "name", e.existing.Name,
			"existing", e.existing.Address(), "refused", e.other.Address())
		return nil
	}
	if !s.joined || time.Since(s.joinedAt) < joinGrace {
		s.f.log.Error("cluster name already in use: refusing to join", "other", e.other.Address())
		return fmt.Errorf("federation: cluster %s: %w (other member at %s)", s.self, ErrDuplicateName, e.other.Address())
	}
	s.f.log.Error("another node tries to join under this cluster's name; it was refused", "other", e.other.Address())
	return nil
}

func (s *loopState) member(e evMember) {
	if e.node.Name == s.self {
		return
	}
	c := s.cluster(e.node.Name)
	c.known = true
	c.node = e.node
	now := time.Now()
	prev := c.mstate
	switch e.kind {
	case "join", "update":
		c.mstate = StateAlive
		c.leaving = false
		c.lastContact = now
		c.restartUntil = time.Time{} // back: the note has served
		if m, err := decodeMeta(e.node.Meta); err == nil {
			c.takesUpdates = m.Updates
			s.ownerSays(c, m.CatalogVersion)
			if m.CatalogVersion > 0 {
				s.learn(notice{Cluster: c.name, Version: m.CatalogVersion, Holder: c.name})
			}
		}
	case "leave":
		c.mstate = StateDead
		if c.leaving {
			c.mstate = StateLeft
		}
	}
	if c.mstate != prev {
		c.since = now
		s.dirty = true
		s.f.log.Info("member state changed", "member", c.name, "from", prev, "to", c.mstate, "addr", e.node.Address())
	}
}

func (s *loopState) message(b []byte) {
	if len(b) == 0 {
		return
	}
	body := b[1:]
	switch b[0] {
	case kindNotice:
		n, err := decodeNotice(body)
		if err != nil {
			s.f.log.Warn("dropping undecodable version notice", "err", err)
			return
		}
		s.learn(n)
	case kindLeave:
		n, err := decodeNotice(body)
		if err == nil && n.Cluster != s.self {
			if c, ok := s.clusters[n.Cluster]; ok && !c.leaving {
				c.leaving = true
				if c.mstate == StateDead {
					// Its leave message was lost and it was judged failed:
					// the notice says it departed.
					c.mstate, c.since, s.dirty = StateLeft, time.Now(), true
					s.f.log.Info("member state changed", "member", c.name, "from", StateDead, "to", StateLeft, "addr", c.node.Address())
				}
				s.f.bcast.QueueBroadcast(&noticeBroadcast{n: notice{Cluster: leaveMarker + n.Cluster}, msg: slices.Clone(b)})
			}
		}
	case kindRequest:
		r, err := decodeRequest(body)
		if err != nil {
			s.f.log.Warn("dropping undecodable catalog request", "err", err)
			return
		}
		s.serve(r)
	case kindCatalog:
		s.accept(body)
	case kindUpdate:
		s.acceptUpdate(body)
	case kindRestart:
		s.restartNote(body)
	default:
		s.f.log.Warn("dropping message of unknown kind", "kind", b[0])
	}
}

// learn records an unsigned claim that n.Cluster is at n.Version, held by
// n.Holder ("" if unknown), and fetches the catalog if we lack it. A claim
// is only a hint: it is not passed on (only catalogs we verified are
// announced, by store), one far ahead of the held version is refused, and
// the fetch asks for anything newer than what we hold, so a claim nobody
// can satisfy never stops a real catalog from being accepted.
func (s *loopState) learn(n notice) {
	cluster, version, src := n.Cluster, n.Version, n.Holder
	if cluster == s.self {
		s.ownClaim(n)
		return
	}
	if _, ok := s.clusters[cluster]; !ok && len(s.clusters) >= maxClusters {
		s.f.log.Debug("ignoring a claim about one cluster too many", "catalog", cluster, "limit", maxClusters)
		return
	}
	c := s.cluster(cluster)
	if version <= c.held() {
		return
	}
	if farFuture(version, c.held()) {
		s.f.m.rejected.WithLabelValues("far-future").Inc()
		s.f.log.Debug("ignoring a far-future version claim", "catalog", cluster, "claimed", FormatVersion(version), "held", FormatVersion(c.held()), "holder", src)
		return
	}
	now := time.Now()
	if version > c.want {
		c.want = version
		c.learnedAt = now
		if c.wantSince.IsZero() {
			c.wantSince = now
		}
		c.attempt = rand.IntN(1 << 16) // spread fetches over the holders
		c.tries = 0
	}
	if src != "" && src != s.self && !slices.Contains(c.sources, src) && len(c.sources) < maxSources {
		c.sources = append(c.sources, src)
	}
	s.maybeFetch(c)
}

// maxClusters bounds the clusters the loop tracks, so that claims about
// made-up cluster names cannot grow its state without end.
const maxClusters = 4096

// maxSources bounds the members remembered as holding a wanted version.
const maxSources = 64

// ownerSays handles the owner of c telling us (unsigned: in its meta or
// digest, or signed: by answering a fetch) that its newest catalog is
// version v. A wait for a version above what the owner has is dropped: the
// claim that raised it was forged, or out of date.
func (s *loopState) ownerSays(c *clusterState, v uint64) {
	if c.want <= c.held() || v >= c.want {
		return
	}
	if v > c.held() {
		c.want = v // still newer than ours: keep fetching that
		return
	}
	s.f.log.Debug("owner is not ahead of the held catalog; no longer waiting", "catalog", c.name, "claimed", FormatVersion(c.want), "owner", FormatVersion(v))
	c.want, c.wantSince, c.learnedAt, c.sources, c.attempt, c.tries = 0, time.Time{}, time.Time{}, nil, 0, 0
	s.dirty = true
}

// ownClaim handles a peer claiming to hold this cluster's own catalog at
// n.Version. If that is newer than this run's versions, this member's
// epoch store was lost or rolled back: it asks the holder for that catalog,
// and only if the catalog verifies as signed by this cluster does it jump
// above it (recoverEpoch). Forged claims cost one request a second.
func (s *loopState) ownClaim(n notice) {
	if n.Version <= s.current() || n.Holder == "" || n.Holder == s.self {
		return
	}
	to, ok := s.clusters[n.Holder]
	if !ok || !to.known || to.mstate != StateAlive || time.Since(s.recoverAt) < time.Second {
		return
	}
	s.recoverAt = time.Now()
	s.f.log.Info("a peer holds a newer catalog of this cluster than this run has published; fetching it", "peer", n.Holder, "claimed", FormatVersion(n.Version), "current", FormatVersion(s.current()))
	s.send(to, s.self, encodeMsg(kindRequest, request{Cluster: s.self, MinVersion: s.current() + 1, From: s.self, Updates: true}))
}

// recoverEpoch moves this member past a catalog of its own, signed by this
// cluster and found at a peer, and republishes so that receivers holding
// that catalog accept the next one.
func (s *loopState) recoverEpoch(v uint64) {
	if v <= s.current() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), epochStoreTimeout)
	defer cancel()
	epoch, err := s.f.epochs.Advance(ctx, epochOf(v)+1)
	if err != nil {
		// Go on in memory; the next start recovers again from the peers.
		epoch = epochOf(v) + 1
		s.f.log.Error("storing the recovered catalog epoch", "epoch", epoch, "err", err)
	}
	s.f.log.Warn("catalog epoch recovered from peers (the epoch store was lost or rolled back)", "found", FormatVersion(v), "epoch", epoch)
	s.epoch, s.seq = max(epoch, epochOf(v)+1), 0
	if s.local != nil {
		if _, err := s.publish(s.local.Services, s.local.Gateways); err != nil {
			s.f.log.Error("republishing after recovering the catalog epoch", "err", err)
		}
	}
}

// epochStoreTimeout bounds a write to the epoch store from the loop.
const epochStoreTimeout = 10 * time.Second

// liveNodes returns copies of the other members that are alive or suspect,
// as the loop last saw them. (memberlist's Members returns its own nodes,
// which it goes on updating under its lock: reading their addresses later
// races with it.)
func (s *loopState) liveNodes() []*memberlist.Node {
	var out []*memberlist.Node
	for _, c := range s.clusters {
		if c.known && c.name != s.self && (c.mstate == StateAlive || c.mstate == StateSuspect) {
			n := c.node
			out = append(out, &n)
		}
	}
	return out
}

// fanOut sends this cluster's own notice straight to every member by UDP,
// one small packet each, so that a change reaches everyone in about one
// round trip; gossip (announce) and push/pull cover packets that are lost.
// Each notice names as holder one of seeds, the members the new version
// was pushed to, in turn, so that fetches spread over them rather than
// all landing on this member; seeds themselves are skipped.
func (s *loopState) fanOut(n notice, seeds []string) {
	msgs := map[string][]byte{}
	i := 0
	for _, c := range s.clusters {
		if !c.known || (c.mstate != StateAlive && c.mstate != StateSuspect) || slices.Contains(seeds, c.name) {
			continue
		}
		m := n
		if len(seeds) > 0 {
			m.Holder = seeds[i%len(seeds)]
			i++
		}
		msg, ok := msgs[m.Holder]
		if !ok {
			msg = encodeMsg(kindNotice, m)
			msgs[m.Holder] = msg
		}
		if err := s.ml.SendBestEffort(&c.node, msg); err != nil {
			s.f.log.Debug("direct notice failed", "to", c.name, "err", err)
		}
	}
}

func (s *loopState) announce(n notice) {
	s.f.bcast.QueueBroadcast(&noticeBroadcast{n: n, msg: encodeMsg(kindNotice, n)})
}

// maybeFetch asks one member for the newest version of c we know of: first
// a member said to hold it (one that told us, chosen at random), so that
// fetches do not all land on the owner; then, in turn, the owner and the
// others.
func (s *loopState) maybeFetch(c *clusterState) {
	if c.want <= c.held() || c.inflightTo != "" {
		return
	}
	var relays []*clusterState
	for _, name := range c.sources {
		if m, ok := s.clusters[name]; ok && name != c.name && m.known && m.mstate == StateAlive {
			relays = append(relays, m)
		}
	}
	candidates := relays
	if c.known && c.mstate == StateAlive {
		candidates = append(slices.Clone(relays), c)
	}
	if len(candidates) == 0 {
		return
	}
	var to *clusterState
	if c.tries == 0 && len(relays) > 0 {
		to = relays[rand.IntN(len(relays))]
	} else {
		to = candidates[c.attempt%len(candidates)]
		c.attempt++
	}
	c.tries++
	c.inflightTo, c.inflightAt = to.name, time.Now()
	// Ask for anything newer than what we hold, not for want: the owner
	// answers with its newest, so a want nobody has cannot block a fetch.
	// Have says what we hold, so that the answer can be a delta.
	r := request{Cluster: c.name, MinVersion: c.held() + 1, From: s.self, Updates: true}
	if !c.wholeNext {
		r.Have = c.held()
	}
	s.f.log.Debug("fetching catalog", "catalog", c.name, "from", to.name, "have", FormatVersion(r.Have), "want", FormatVersion(c.want))
	s.send(to, c.name, encodeMsg(kindRequest, r))
}

func (s *loopState) send(to *clusterState, about string, msg []byte) {
	job := sendJob{to: to.node, cluster: about, msg: msg}
	select {
	case s.sendCh <- job:
	default:
		// Workers are saturated; the fetch times out and is retried.
		s.f.log.Warn("send queue full; dropping stream message", "to", to.name, "catalog", about)
	}
}

// serve answers a catalog request: for our own catalog with the newest,
// even when the requester holds it already (so that a requester waiting for
// a version we never published learns that from us, signed) — but then at
// most once per StaleAfter/4 per requester, so that forged notices cannot
// make us send our catalog to everyone over and over; for another
// cluster's only if we hold what was asked for.
func (s *loopState) serve(r request) {
	to, ok := s.clusters[r.From]
	if !ok || !to.known || to.mstate == StateDead || to.mstate == StateLeft {
		return
	}
	now := time.Now()
	var h *holding
	if r.Cluster == s.self {
		h = s.own
		if h != nil && h.version() < r.MinVersion {
			if now.Sub(to.confirmedAt) < s.f.cfg.StaleAfter/4 {
				return
			}
			to.confirmedAt = now
		}
	} else if c, ok := s.clusters[r.Cluster]; ok {
		h = c.hold
		if h == nil || h.version() < r.MinVersion {
			s.park(r) // answered when it arrives; else the requester asks another
			return
		}
	}
	if h == nil {
		return
	}
	var msg []byte
	var err error
	if r.Updates {
		msg, err = s.updateFor(h, r.Have)
	} else {
		msg, err = s.envelopeFor(h) // nil if held only by deltas: it asks another
	}
	if err != nil {
		s.f.log.Warn("cannot serve catalog", "catalog", r.Cluster, "to", r.From, "err", err)
	}
	if msg == nil {
		return
	}
	to.lastContact = now
	s.sendUpdate(to, r.Cluster, msg)
}

// accept verifies a catalog envelope and, if it is good and newer, stores it.
// A bad one is reported and dropped; the last good catalog stays.
func (s *loopState) accept(env []byte) {
	claimed, version, err := catalog.Peek(env)
	if err == nil && !catalog.ValidClusterName(claimed) {
		err = fmt.Errorf("%w: cluster name %q", catalog.ErrDecode, claimed)
	}
	if err == nil && claimed == s.self {
		s.acceptOwn(env, version)
		return
	}
	if err == nil {
		if c, ok := s.clusters[claimed]; ok && version <= c.held() {
			s.acceptOlder(c, env)
			return
		}
		var cat *catalog.Catalog
		var h *holding
		cat, _, err = s.verify(env)
		if err == nil {
			h, err = newHolding(cat, nil, env)
		}
		if err == nil {
			s.store(s.cluster(cat.Cluster), h)
			return
		}
	}
	s.rejected(claimed, version, err)
	if c, ok := s.clusters[claimed]; ok && c.inflightTo != "" {
		c.inflightTo = "" // ask the next source
	}
}

func (s *loopState) verify(env []byte) (*catalog.Catalog, *catalog.Signed, error) {
	cfg := &s.f.cfg
	roots, _ := cfg.Bundle.X509Roots()
	return catalog.Verify(env, catalog.VerifyOptions{
		Roots: roots, TrustDomain: cfg.TrustDomain,
		MaxBytes: cfg.MaxCatalogBytes, MaxInflatedBytes: cfg.MaxInflatedCatalogBytes,
	})
}

func (s *loopState) rejected(claimed string, version uint64, err error) {
	reason := catalog.Reason(err)
	s.f.m.rejected.WithLabelValues(reason).Inc()
	s.f.log.Warn("rejected catalog", "claimedCluster", claimed, "version", FormatVersion(version), "reason", reason, "err", err)
}

// acceptOlder handles a catalog not newer than the one held. When we asked
// its owner (which answers with its newest), it is the owner's signed word
// that nothing newer exists: stop waiting for the version a claim promised.
func (s *loopState) acceptOlder(c *clusterState, env []byte) {
	if c.inflightTo != c.name || c.want <= c.held() {
		return // a copy relayed late, or a replay: nothing to learn
	}
	version := c.held()
	if !bytes.Equal(env, c.hold.env) {
		cat, _, err := s.verify(env)
		if err != nil || cat.Cluster != c.name {
			s.rejected(c.name, 0, err)
			return
		}
		version = cat.Version
	}
	c.inflightTo = ""
	s.ownerSays(c, version)
}

// acceptOwn handles this cluster's own catalog coming back from a peer: if
// it is newer than this run's versions and signed by this cluster, the
// epoch store was lost, and this member moves past it.
func (s *loopState) acceptOwn(env []byte, version uint64) {
	if version <= s.current() {
		return // our own catalog relayed back
	}
	cat, _, err := s.verify(env)
	if err != nil {
		s.rejected(s.self, version, err)
		return
	}
	s.recoverEpoch(cat.Version)
}

// restartNote keeps a cluster's catalog while its member restarts, if the
// note is signed by that cluster and names the catalog held here; a note is
// honoured once per catalog version, so a replay cannot extend the wait.
func (s *loopState) restartNote(b []byte) {
	roots, _ := s.f.cfg.Bundle.X509Roots()
	n, err := verifyRestartNote(b, roots, s.f.cfg.TrustDomain, time.Now())
	if err == nil && n.Cluster == s.self {
		return
	}
	var c *clusterState
	if err == nil {
		c = s.clusters[n.Cluster]
		switch {
		case c == nil || c.hold == nil || c.held() != n.Version || c.hold.shortDigest() != n.Digest:
			err = fmt.Errorf("restart note of %s names catalog %s, which is not the one held: out of date or replayed", n.Cluster, FormatVersion(n.Version))
		case c.restartVersion == n.Version:
			err = fmt.Errorf("restart note of %s for catalog %s was already honoured: replayed", n.Cluster, FormatVersion(n.Version))
		}
	}
	if err != nil {
		s.f.m.rejected.WithLabelValues("restart-note").Inc()
		s.f.log.Warn("refused restart note", "claimedCluster", n.Cluster, "err", err)
		return
	}
	c.restartVersion, c.restartUntil = n.Version, time.Now().Add(s.f.cfg.RestartGrace)
	s.f.log.Info("member restarting: keeping its catalog", "member", c.name, "catalog", FormatVersion(n.Version), "until", c.restartUntil.Format("15:04:05"))
	s.dirty = true
}

// store keeps a verified, newer catalog of c, answers the requests
// waiting for it and announces it.
func (s *loopState) store(c *clusterState, h *holding) {
	now := time.Now()
	cat := h.cat
	fromOwner := c.inflightTo == c.name
	c.cat, c.hold, c.receivedAt = cat, h, now
	c.inflightTo, c.wholeNext = "", false
	if c.known {
		c.lastContact = now
	}
	s.f.m.catalogVersion.WithLabelValues(cat.Cluster).Set(float64(cat.Version))
	s.f.m.propagation.Observe(max(0, now.Sub(cat.GeneratedAt).Seconds()))
	if !c.learnedAt.IsZero() && cat.Version >= c.want {
		s.f.m.viewUpdate.Observe(now.Sub(c.learnedAt).Seconds())
	}
	if cat.Version >= c.want {
		c.want, c.wantSince, c.learnedAt, c.sources, c.attempt, c.tries = 0, time.Time{}, time.Time{}, nil, 0, 0
		// Spread the news too: those who hear it from us fetch from us.
		s.announce(notice{Cluster: cat.Cluster, Version: cat.Version, Digest: h.shortDigest(), Holder: s.self})
	}
	s.answerParked(c.name, cat.Version)
	if fromOwner {
		s.ownerSays(c, cat.Version) // the owner's newest: a higher want was a false claim
	}
	s.f.log.Debug("catalog accepted", "catalog", cat.Cluster, "version", cat.Version, "services", len(cat.Services))
	s.storeLocalState()
	s.dirty = true
}

// remoteState handles a peer's push/pull digests.
func (s *loopState) remoteState(b []byte) {
	if len(b) == 0 {
		return
	}
	ds, err := decodeDigest(b)
	if err != nil {
		s.f.log.Warn("dropping undecodable push/pull state", "err", err)
		return
	}
	if c, ok := s.clusters[ds.From]; ok {
		c.lastContact = time.Now()
		var own uint64
		for _, n := range ds.Catalogs {
			if n.Cluster == ds.From {
				own = n.Version
			}
		}
		s.ownerSays(c, own)
	}
	for _, n := range ds.Catalogs {
		s.learn(n)
	}
}

func (s *loopState) storeLocalState() {
	ds := digestState{Format: wireFormat, From: s.self}
	if s.own != nil {
		ds.Catalogs = append(ds.Catalogs, notice{Cluster: s.self, Version: s.own.version(), Digest: s.own.shortDigest()})
	}
	for _, c := range s.clusters {
		if c.hold != nil {
			ds.Catalogs = append(ds.Catalogs, notice{Cluster: c.name, Version: c.held(), Digest: c.hold.shortDigest()})
		}
	}
	b := encodeMsg(0, ds)[1:]
	s.f.localState.Store(&b)
}

// publish signs this cluster's new catalog — its head, and a delta from
// the previous version when the change is small (signOwnDelta), else the
// whole catalog (signOwn) — and announces it: a push to a few members and
// a notice to all.
func (s *loopState) publish(services []catalog.ExportedService, gateways []string) (uint64, error) {
	cfg := &s.f.cfg
	key, chain, err := cfg.Signer.CatalogSigner()
	if err != nil {
		return 0, fmt.Errorf("publish catalog of %s: signer: %w", s.self, err)
	}
	_, fp := cfg.Bundle.X509Roots()
	version, err := s.nextVersion()
	if err != nil {
		return 0, fmt.Errorf("publish catalog of %s: %w", s.self, err)
	}
	cat := &catalog.Catalog{
		Format: catalog.FormatVersion, Cluster: s.self, Network: cfg.Network, Gateways: gateways, Version: version,
		GeneratedAt: cfg.now().UTC(), TrustBundleFingerprint: fp, Services: services,
	}
	catalog.Canonicalize(cat)
	prev := s.own
	var h *holding
	if prev != nil && prev.sizes != nil {
		h, err = s.signOwnDelta(prev, cat)
	}
	if h == nil && err == nil {
		h, err = s.signOwn(cat, key, chain)
	}
	if err != nil {
		return 0, fmt.Errorf("publish catalog of %s: %w", s.self, err)
	}
	var base uint64
	if prev != nil {
		base = prev.version()
	}
	s.local, s.own, s.seq = cat, h, uint32(version)
	s.f.m.catalogVersion.WithLabelValues(s.self).Set(float64(version))
	seeds := s.push(h, base)
	n := notice{Cluster: s.self, Version: version, Digest: h.shortDigest(), Holder: s.self}
	s.announce(n)
	s.fanOut(n, seeds)
	s.f.storeMeta(nodeMeta{Format: wireFormat, CatalogVersion: version, Digest: h.shortDigest(), Network: cfg.Network, Updates: true})
	select {
	case s.metaCh <- struct{}{}:
	default:
	}
	s.storeLocalState()
	s.dirty = true
	return version, nil
}

// signOwn signs cat as an envelope and as a head and checks both as
// receivers will, so that a wrong certificate or an oversize catalog fails
// here, loudly, and not silently at every receiver.
func (s *loopState) signOwn(cat *catalog.Catalog, key crypto.Signer, chain []*x509.Certificate) (*holding, error) {
	cfg := &s.f.cfg
	signed, err := catalog.Sign(cat, key, chain)
	if err != nil {
		return nil, err
	}
	if len(signed.Bytes) > cfg.MaxCatalogBytes {
		return nil, fmt.Errorf("v%d: %w: %d bytes, limit %d", cat.Version, catalog.ErrOversize, len(signed.Bytes), cfg.MaxCatalogBytes)
	}
	if _, _, err := s.verify(signed.Bytes); err != nil {
		return nil, fmt.Errorf("own catalog fails verification: %w", err)
	}
	h, err := s.ownHolding(cat, nil)
	if err != nil {
		return nil, err
	}
	h.env = signed.Bytes
	return h, nil
}

// ownHolding hashes cat (reusing prev's hashes of services that did not
// change) and signs its head.
func (s *loopState) ownHolding(cat *catalog.Catalog, prev *holding) (*holding, error) {
	cfg := &s.f.cfg
	key, chain, err := cfg.Signer.CatalogSigner()
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	hashes, sizes, err := reuseHashes(prev, cat)
	if err != nil {
		return nil, err
	}
	digest, err := catalog.ContentDigest(cat, hashes)
	if err != nil {
		return nil, err
	}
	head, err := catalog.SignHead(catalog.Head{Cluster: cat.Cluster, Version: cat.Version, Digest: digest[:]}, key, chain)
	if err != nil {
		return nil, err
	}
	roots, _ := cfg.Bundle.X509Roots()
	if _, err := catalog.VerifyHead(head.Bytes, roots, cfg.TrustDomain, time.Time{}); err != nil {
		return nil, fmt.Errorf("own catalog head fails verification: %w", err)
	}
	return &holding{cat: cat, hashes: hashes, sizes: sizes, digest: digest, head: head}, nil
}

// reuseHashes returns the ServiceHashAndSize of each of cat's services,
// taken from prev (nil: none) for services that did not change. Both are
// sorted by namespace then name.
func reuseHashes(prev *holding, cat *catalog.Catalog) ([][32]byte, []int, error) {
	hashes := make([][32]byte, len(cat.Services))
	sizes := make([]int, len(cat.Services))
	i := 0
	for j := range cat.Services {
		svc := &cat.Services[j]
		if prev != nil {
			for i < len(prev.cat.Services) && serviceBefore(&prev.cat.Services[i], svc) {
				i++
			}
			if i < len(prev.cat.Services) && catalog.SameService(&prev.cat.Services[i], svc) {
				hashes[j], sizes[j] = prev.hashes[i], prev.sizes[i]
				continue
			}
		}
		h, n, err := catalog.ServiceHashAndSize(svc)
		if err != nil {
			return nil, nil, err
		}
		hashes[j], sizes[j] = h, n
	}
	return hashes, sizes, nil
}

// serviceBefore orders services by namespace, then name.
func serviceBefore(a, b *catalog.ExportedService) bool {
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// signOwnDelta publishes cat as a delta from prev when the change is small
// enough: it hashes only the services that changed, signs the head, and
// checks what receivers will check — the delta decodes within their
// limits, and the whole catalog stays within them — without encoding or
// decoding the whole catalog (that is done only if someone asks for it).
// It returns nil and no error when the change is too large for a delta.
func (s *loopState) signOwnDelta(prev *holding, cat *catalog.Catalog) (*holding, error) {
	cfg := &s.f.cfg
	if err := cat.Validate(); err != nil {
		return nil, fmt.Errorf("v%d: %w: %w", cat.Version, catalog.ErrInvalid, err)
	}
	h, err := s.ownHolding(cat, prev)
	if err != nil {
		return nil, err
	}
	d := catalog.Diff(prev.cat, cat, prev.hashes, h.hashes)
	lim := s.deltaLimits()
	if d.Size() > lim.MaxServices {
		return nil, nil
	}
	b, err := d.Encode()
	if err != nil || len(b) > lim.MaxBytes {
		return nil, nil
	}
	if _, err := catalog.DecodeDelta(b, lim); err != nil {
		return nil, fmt.Errorf("v%d: own catalog delta fails verification: %w", cat.Version, err)
	}
	size, err := catalog.EncodedSize(cat, h.sizes)
	if err == nil && size > int64(cfg.MaxCatalogBytes)-int64(cfg.MaxCatalogBytes)/64-(64<<10) {
		return nil, nil // may not fit the envelope limit compressed: check it whole
	}
	if err == nil {
		roots, _ := cfg.Bundle.X509Roots()
		err = catalog.CheckBounds(cat, size, catalog.VerifyOptions{Roots: roots, MaxBytes: cfg.MaxCatalogBytes, MaxInflatedBytes: cfg.MaxInflatedCatalogBytes})
	}
	if err != nil {
		return nil, fmt.Errorf("v%d: %w", cat.Version, err)
	}
	h.history = appendHistory(prev.history, d, cfg.DeltaHistory)
	h.encoded = map[uint64][]byte{prev.version(): encodeUpdate(h.head.Bytes, updDelta, b)}
	return h, nil
}

// nextVersion is the version of the next publication: the next sequence
// number of this run's epoch, or the first of a new epoch once the
// sequence is used up.
func (s *loopState) nextVersion() (uint64, error) {
	if s.seq == math.MaxUint32 {
		ctx, cancel := context.WithTimeout(context.Background(), epochStoreTimeout)
		defer cancel()
		epoch, err := s.f.epochs.Advance(ctx, s.epoch+1)
		if err != nil {
			return 0, fmt.Errorf("next catalog epoch: %w", err)
		}
		s.epoch, s.seq = epoch, 0
	}
	return makeVersion(s.epoch, s.seq+1), nil
}

// snapshot builds the consumers' view and applies the failure policy.
func (s *loopState) snapshot(now time.Time) {
	view := &RemoteView{At: now, Clusters: make(map[string]ClusterView, len(s.clusters))}
	counts := map[MemberState]int{StateAlive: 1}
	self := Member{Name: s.self, Addr: s.f.Addr(), State: StateAlive, Local: true, LastContact: now}
	if s.local != nil {
		self.CatalogVersion, self.Services, self.TrustBundleFingerprint = s.local.Version, len(s.local.Services), s.local.TrustBundleFingerprint
	}
	view.Members = append(view.Members, self)
	changed := false
	for name, c := range s.clusters {
		if !c.known && c.cat == nil {
			continue
		}
		cv := s.policy(c, now)
		counts[cv.Member.State]++
		view.Clusters[name] = cv
		view.Members = append(view.Members, cv.Member)
		key := string(cv.Member.State) + strconv.FormatBool(cv.Member.Stale) + strconv.Itoa(len(cv.Withdrawn)) + strconv.FormatUint(cv.Member.CatalogVersion, 10)
		if key != c.policyKey {
			c.policyKey = key
			changed = true
			s.f.m.withdrawnService.WithLabelValues(name).Set(float64(len(cv.Withdrawn)))
		}
	}
	slices.SortFunc(view.Members, func(a, b Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	for _, st := range []MemberState{StateAlive, StateSuspect, StateDead, StateLeft, StateUnknown} {
		s.f.m.members.WithLabelValues(string(st)).Set(float64(counts[st]))
	}
	s.f.snap.Store(view)
	s.lastSnap = now
	if s.dirty || changed {
		s.f.notify()
	}
	s.dirty = false
}

// policy decides what of c's catalog consumers see.
func (s *loopState) policy(c *clusterState, now time.Time) ClusterView {
	cfg := &s.f.cfg
	m := Member{Name: c.name, State: c.mstate, Since: c.since, LastContact: c.lastContact}
	if c.known {
		m.Addr = c.node.Address()
	}
	if m.State == StateAlive && !c.sendFailAt.IsZero() && now.Sub(c.sendFailAt) < cfg.FetchTimeout {
		m.State = StateSuspect
	}
	if c.cat != nil {
		m.CatalogVersion, m.Services, m.TrustBundleFingerprint = c.cat.Version, len(c.cat.Services), c.cat.TrustBundleFingerprint
	}
	cv := ClusterView{Member: m, Catalog: c.cat}
	down, since, why := false, time.Time{}, ""
	switch m.State {
	case StateDead, StateLeft:
		down, since, why = true, c.since, string(m.State)
	case StateUnknown:
		down, since, why = true, c.receivedAt, "not a member"
	}
	if c.want > c.held() && !c.wantSince.IsZero() && now.Sub(c.wantSince) >= cfg.StaleAfter {
		cv.Member.Stale = true
		if !down {
			down, since = true, c.wantSince.Add(cfg.StaleAfter)
			why = fmt.Sprintf("catalog stale (%s announced, %s held)", FormatVersion(c.want), FormatVersion(c.held()))
		}
	}
	if c.cat == nil {
		cv.Reason = fmt.Sprintf("%s: %s, no catalog yet", c.name, m.State)
		return cv
	}
	if !down {
		cv.Services = c.cat.Services
		cv.Reason = fmt.Sprintf("%s: %s", c.name, m.State)
		return cv
	}
	at := since.Add(cfg.WithdrawAfter)
	if c.restartVersion == c.held() && c.restartUntil.After(at) && (m.State == StateDead || m.State == StateLeft) {
		at, why = c.restartUntil, why+" (restarting, signed restart note)"
	}
	sinceStr := since.Format("15:04:05")
	if now.Before(at) {
		cv.Services = c.cat.Services
		cv.Reason = fmt.Sprintf("%s: %s since %s, withdrawal at %s unless it returns", c.name, why, sinceStr, at.Format("15:04:05"))
		return cv
	}
	kept := make([]catalog.ExportedService, 0, len(c.cat.Services))
	for i := range c.cat.Services {
		svc := &c.cat.Services[i]
		if cfg.failStatic(c.name, svc) {
			kept = append(kept, *svc)
		} else {
			cv.Withdrawn = append(cv.Withdrawn, svc.Key())
		}
	}
	cv.Services = kept
	switch {
	case len(cv.Withdrawn) == 0:
		cv.Reason = fmt.Sprintf("%s: %s since %s, kept (fail-static)", c.name, why, sinceStr)
	case len(kept) == 0:
		cv.Reason = fmt.Sprintf("%s: %s since %s, withdrawn at %s", c.name, why, sinceStr, at.Format("15:04:05"))
	default:
		cv.Reason = fmt.Sprintf("%s: %s since %s, %d services withdrawn at %s, %d kept (fail-static)", c.name, why, sinceStr, len(cv.Withdrawn), at.Format("15:04:05"), len(kept))
	}
	return cv
}
