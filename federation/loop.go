package federation

import (
	"context"
	"encoding/json"
	"fmt"
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
	sendFailAt  time.Time // last failed direct stream to it

	// Catalog.
	cat        *catalog.Catalog
	signed     *catalog.Signed
	receivedAt time.Time

	// Fetching a newer version.
	want       uint64    // newest version announced; > held means we lack it
	wantSince  time.Time // when we first lacked a newer version
	learnedAt  time.Time // when we learned of want
	sources    []string  // members said to hold >= want
	attempt    int
	inflightTo string
	inflightAt time.Time

	// Policy outcome at the last snapshot, to detect changes.
	policyKey string
}

func (c *clusterState) held() uint64 {
	if c.signed == nil {
		return 0
	}
	return c.signed.Version
}

// loopState is owned by the loop goroutine; nothing else touches it.
type loopState struct {
	f      *Federation
	ml     *memberlist.Memberlist
	sendCh chan<- sendJob
	metaCh chan<- struct{}
	self   string

	local       *catalog.Catalog
	localSigned *catalog.Signed

	clusters map[string]*clusterState
	joinedAt time.Time
	joined   bool
	dirty    bool
	lastSnap time.Time
	nextJoin time.Time
}

func newLoopState(f *Federation, ml *memberlist.Memberlist, sendCh chan<- sendJob, metaCh chan<- struct{}) *loopState {
	return &loopState{f: f, ml: ml, sendCh: sendCh, metaCh: metaCh, self: f.cfg.ClusterName, clusters: map[string]*clusterState{}}
}

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
			v, err := s.publish(req.services)
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
		if m, err := decodeMeta(e.node.Meta); err == nil && m.CatalogVersion > 0 {
			s.learn(notice{Cluster: c.name, Version: m.CatalogVersion, Holder: c.name}, false)
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
		var n notice
		if err := json.Unmarshal(body, &n); err != nil {
			s.f.log.Warn("dropping undecodable version notice", "err", err)
			return
		}
		if n.Cluster != s.self && catalogNameOK(n.Cluster) {
			s.learn(n, true)
		}
	case kindLeave:
		var n notice
		if err := json.Unmarshal(body, &n); err == nil && n.Cluster != s.self && catalogNameOK(n.Cluster) {
			if c, ok := s.clusters[n.Cluster]; ok && !c.leaving {
				c.leaving = true
				s.f.bcast.QueueBroadcast(&noticeBroadcast{n: notice{Cluster: leaveMarker + n.Cluster}, msg: slices.Clone(b)})
			}
		}
	case kindRequest:
		var r request
		if err := json.Unmarshal(body, &r); err != nil {
			s.f.log.Warn("dropping undecodable catalog request", "err", err)
			return
		}
		s.serve(r)
	case kindCatalog:
		s.accept(body)
	default:
		s.f.log.Warn("dropping message of unknown kind", "kind", b[0])
	}
}

func catalogNameOK(name string) bool { return catalog.ValidClusterName(name) }

// learn records that n.Cluster is at n.Version, held by n.Holder ("" if
// unknown), and fetches it if we lack it. With rebroadcast, news is passed
// on by gossip.
func (s *loopState) learn(n notice, rebroadcast bool) {
	cluster, version, src := n.Cluster, n.Version, n.Holder
	if cluster == s.self {
		return
	}
	c := s.cluster(cluster)
	if version <= c.held() {
		return
	}
	now := time.Now()
	if version > c.want {
		c.want = version
		c.learnedAt = now
		if c.wantSince.IsZero() {
			c.wantSince = now
		}
		c.attempt = rand.IntN(1 << 16) // spread first fetches over the holders
		if rebroadcast {
			s.announce(n)
		}
	}
	if src != "" && src != s.self && !slices.Contains(c.sources, src) {
		c.sources = append(c.sources, src)
	}
	s.maybeFetch(c)
}

// fanOut sends this cluster's own notice straight to every member by UDP,
// one small packet each, so that a change reaches everyone in about one
// round trip; gossip (announce) and push/pull cover packets that are lost.
func (s *loopState) fanOut(n notice) {
	msg := encodeMsg(kindNotice, n)
	for _, c := range s.clusters {
		if c.known && (c.mstate == StateAlive || c.mstate == StateSuspect) {
			if err := s.ml.SendBestEffort(&c.node, msg); err != nil {
				s.f.log.Debug("direct notice failed", "to", c.name, "err", err)
			}
		}
	}
}

func (s *loopState) announce(n notice) {
	s.f.bcast.QueueBroadcast(&noticeBroadcast{n: n, msg: encodeMsg(kindNotice, n)})
}

// maybeFetch asks one member for the newest version of c we know of: the
// owner first, then members that said they hold it, in turn.
func (s *loopState) maybeFetch(c *clusterState) {
	if c.want <= c.held() || c.inflightTo != "" {
		return
	}
	var candidates []*clusterState
	if c.known && c.mstate == StateAlive {
		candidates = append(candidates, c)
	}
	for _, name := range c.sources {
		if m, ok := s.clusters[name]; ok && name != c.name && m.known && m.mstate == StateAlive {
			candidates = append(candidates, m)
		}
	}
	if len(candidates) == 0 {
		return
	}
	to := candidates[c.attempt%len(candidates)]
	c.attempt++
	c.inflightTo, c.inflightAt = to.name, time.Now()
	s.send(to, c.name, encodeMsg(kindRequest, request{Cluster: c.name, MinVersion: c.want, From: s.self}))
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

// serve answers a catalog request if we hold what was asked for.
func (s *loopState) serve(r request) {
	var signed *catalog.Signed
	if r.Cluster == s.self {
		signed = s.localSigned
	} else if c, ok := s.clusters[r.Cluster]; ok {
		signed = c.signed
	}
	if signed == nil || signed.Version < r.MinVersion {
		return // the requester times out and asks someone else
	}
	to, ok := s.clusters[r.From]
	if !ok || !to.known || to.mstate == StateDead || to.mstate == StateLeft {
		return
	}
	to.lastContact = time.Now()
	s.send(to, r.Cluster, append([]byte{kindCatalog}, signed.Bytes...))
}

// accept verifies a catalog envelope and, if it is good and newer, stores it.
// A bad one is reported and dropped; the last good catalog stays.
func (s *loopState) accept(env []byte) {
	cfg := &s.f.cfg
	claimed, version, err := catalog.Peek(env)
	if err == nil && (claimed == s.self || !catalog.ValidClusterName(claimed)) {
		if claimed == s.self {
			return // our own catalog relayed back
		}
		err = fmt.Errorf("%w: cluster name %q", catalog.ErrDecode, claimed)
	}
	if err == nil {
		if c, ok := s.clusters[claimed]; ok && version <= c.held() {
			return // already have it (or newer)
		}
		roots, _ := cfg.Bundle.X509Roots()
		var cat *catalog.Catalog
		var signed *catalog.Signed
		cat, signed, err = catalog.Verify(env, catalog.VerifyOptions{
			Roots: roots, TrustDomain: cfg.TrustDomain,
			MaxBytes: cfg.MaxCatalogBytes, MaxInflatedBytes: cfg.MaxInflatedCatalogBytes,
		})
		if err == nil {
			s.store(cat, signed)
			return
		}
	}
	reason := catalog.Reason(err)
	s.f.m.rejected.WithLabelValues(reason).Inc()
	s.f.log.Warn("rejected catalog", "claimedCluster", claimed, "version", version, "reason", reason, "err", err)
	if c, ok := s.clusters[claimed]; ok && c.inflightTo != "" {
		c.inflightTo = "" // ask the next source
	}
}

func (s *loopState) store(cat *catalog.Catalog, signed *catalog.Signed) {
	now := time.Now()
	c := s.cluster(cat.Cluster)
	c.cat, c.signed, c.receivedAt = cat, signed, now
	c.inflightTo = ""
	if c.known {
		c.lastContact = now
	}
	s.f.m.catalogVersion.WithLabelValues(cat.Cluster).Set(float64(cat.Version))
	s.f.m.propagation.Observe(max(0, now.Sub(cat.GeneratedAt).Seconds()))
	if !c.learnedAt.IsZero() && cat.Version >= c.want {
		s.f.m.viewUpdate.Observe(now.Sub(c.learnedAt).Seconds())
	}
	if cat.Version >= c.want {
		c.want, c.wantSince, c.learnedAt, c.sources, c.attempt = 0, time.Time{}, time.Time{}, nil, 0
		// Spread the news too: those who hear it from us fetch from the owner.
		s.announce(notice{Cluster: cat.Cluster, Version: cat.Version, Digest: signed.ShortDigest(), Holder: s.self})
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
	var ds digestState
	if err := json.Unmarshal(b, &ds); err != nil || ds.Format != wireFormat {
		s.f.log.Warn("dropping undecodable push/pull state", "err", err)
		return
	}
	if c, ok := s.clusters[ds.From]; ok {
		c.lastContact = time.Now()
	}
	for _, n := range ds.Catalogs {
		if catalog.ValidClusterName(n.Cluster) {
			n.Holder = ds.From
			s.learn(n, false)
		}
	}
}

func (s *loopState) storeLocalState() {
	ds := digestState{Format: wireFormat, From: s.self}
	if s.localSigned != nil {
		ds.Catalogs = append(ds.Catalogs, notice{Cluster: s.self, Version: s.localSigned.Version, Digest: s.localSigned.ShortDigest()})
	}
	for _, c := range s.clusters {
		if c.signed != nil {
			ds.Catalogs = append(ds.Catalogs, notice{Cluster: c.name, Version: c.signed.Version, Digest: c.signed.ShortDigest()})
		}
	}
	b := encodeMsg(0, ds)[1:]
	s.f.localState.Store(&b)
}

// publish signs and announces this cluster's new catalog.
func (s *loopState) publish(services []catalog.ExportedService) (uint64, error) {
	cfg := &s.f.cfg
	key, chain, err := cfg.Signer.CatalogSigner()
	if err != nil {
		return 0, fmt.Errorf("publish catalog of %s: signer: %w", s.self, err)
	}
	roots, fp := cfg.Bundle.X509Roots()
	now := time.Now()
	// Versions are milliseconds since the epoch, or one more than the last,
	// so they keep increasing across restarts without stored state.
	version := uint64(now.UnixMilli())
	if s.localSigned != nil && version <= s.localSigned.Version {
		version = s.localSigned.Version + 1
	}
	cat := &catalog.Catalog{
		Format: catalog.FormatVersion, Cluster: s.self, Network: cfg.Network, Version: version,
		GeneratedAt: now.UTC(), TrustBundleFingerprint: fp, Services: services,
	}
	signed, err := catalog.Sign(cat, key, chain)
	if err != nil {
		return 0, fmt.Errorf("publish catalog of %s: %w", s.self, err)
	}
	if len(signed.Bytes) > cfg.MaxCatalogBytes {
		return 0, fmt.Errorf("publish catalog of %s v%d: %w: %d bytes, limit %d", s.self, version, catalog.ErrOversize, len(signed.Bytes), cfg.MaxCatalogBytes)
	}
	// Check what others will check, so a wrong certificate fails here,
	// loudly, and not silently at every receiver.
	if _, _, err := catalog.Verify(signed.Bytes, catalog.VerifyOptions{Roots: roots, TrustDomain: cfg.TrustDomain, MaxBytes: cfg.MaxCatalogBytes, MaxInflatedBytes: cfg.MaxInflatedCatalogBytes}); err != nil {
		return 0, fmt.Errorf("publish catalog of %s: own catalog fails verification: %w", s.self, err)
	}
	s.local, s.localSigned = cat, signed
	s.f.m.catalogVersion.WithLabelValues(s.self).Set(float64(version))
	n := notice{Cluster: s.self, Version: version, Digest: signed.ShortDigest(), Holder: s.self}
	s.announce(n)
	s.fanOut(n)
	s.f.storeMeta(nodeMeta{Format: wireFormat, CatalogVersion: version, Digest: signed.ShortDigest(), Network: cfg.Network})
	select {
	case s.metaCh <- struct{}{}:
	default:
	}
	s.storeLocalState()
	s.dirty = true
	return version, nil
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
			why = fmt.Sprintf("catalog stale (v%d announced, v%d held)", c.want, c.held())
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
