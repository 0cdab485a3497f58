package federation

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/meshfed/meshfed/federation/catalog"
)

// Catalogs travel as updates: the owner's signed head for a version (see
// catalog.Head) with the whole catalog or only a delta from a version the
// receiver holds. Any member holding a verified copy serves it; the
// receiver rebuilds the catalog and accepts it only if its content digest
// is the one the owner signed. See
// docs/decisions/0004-catalog-deltas-and-relays.md.

// Kinds of update body, the byte after the signed head.
const (
	updWhole   byte = 'C' // the owner's signed envelope
	updPayload byte = 'F' // the whole catalog, unsigned (a relay built it)
	updDelta   byte = 'D' // an encoded catalog.Delta
	updHead    byte = 'H' // nothing: the head alone, the owner's newest
)

// pushFanout is how many members the owner sends a new version to
// unasked. The others are told (fanOut) to fetch from one of them, so the
// owner serves a few copies per change however large the federation.
const pushFanout = 3

// maxParked bounds the requests one cluster's copy may wait on.
const maxParked = 256

// maxEncoded bounds the update messages cached per catalog held.
const maxEncoded = 8

// errBaseNotHeld is wrapped by a delta whose base is not the version held:
// not an attack, the receiver fetches the whole catalog.
var errBaseNotHeld = errors.New("delta base not held")

// holding is a verified catalog of one cluster as held here (the owner's
// own, or a copy) with what it takes to pass it on. It belongs to the loop
// goroutine; the catalog is shared with snapshots and never modified.
type holding struct {
	cat    *catalog.Catalog
	hashes [][32]byte // catalog.ServiceHashes(cat)
	// sizes are the services' encoded lengths; only for this cluster's
	// own catalog (see signOwnDelta).
	sizes  []int
	digest [32]byte // catalog.ContentDigest(cat, hashes)
	// head is the owner's signed head for cat; nil when the catalog came
	// as a bare signed envelope (kindCatalog) and no head with it since.
	head *catalog.SignedHead
	// env is the owner's signed envelope; nil when cat was built from a
	// delta.
	env []byte
	// history are the deltas that led to cat, oldest first, each based on
	// the previous one's version, at most Config.DeltaHistory.
	history []*catalog.Delta
	// encoded caches update messages by the requester's version.
	encoded map[uint64][]byte
}

func (h *holding) version() uint64 { return h.cat.Version }

func (h *holding) shortDigest() string { return hex.EncodeToString(h.digest[:8]) }

// newHolding hashes a verified catalog and, when head is given, checks that
// the catalog is the one the owner signed.
func newHolding(cat *catalog.Catalog, head *catalog.SignedHead, env []byte) (*holding, error) {
	hashes, err := catalog.ServiceHashes(cat)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", catalog.ErrDecode, err)
	}
	return finishHolding(cat, hashes, head, env)
}

func finishHolding(cat *catalog.Catalog, hashes [][32]byte, head *catalog.SignedHead, env []byte) (*holding, error) {
	digest, err := catalog.ContentDigest(cat, hashes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", catalog.ErrDecode, err)
	}
	if head != nil {
		if cat.Cluster != head.Cluster || cat.Version != head.Version {
			return nil, fmt.Errorf("%w: catalog %s v%d sent with the head of %s v%d", catalog.ErrIdentity, cat.Cluster, cat.Version, head.Cluster, head.Version)
		}
		if !head.EqualDigest(digest) {
			return nil, fmt.Errorf("catalog %s %s: %w: content digest differs from the owner's signed head", cat.Cluster, FormatVersion(cat.Version), catalog.ErrInvalid)
		}
	}
	return &holding{cat: cat, hashes: hashes, digest: digest, head: head, env: env}, nil
}

// encodeUpdate frames an update: kind, head length, signed head, body kind,
// body.
func encodeUpdate(head []byte, kind byte, body []byte) []byte {
	b := make([]byte, 0, 6+len(head)+len(body))
	b = append(b, kindUpdate)
	b = binary.BigEndian.AppendUint32(b, uint32(len(head)))
	b = append(b, head...)
	b = append(b, kind)
	return append(b, body...)
}

// splitUpdate is encodeUpdate's inverse (without the kind byte).
func splitUpdate(b []byte) (head []byte, kind byte, body []byte, err error) {
	if len(b) < 5 {
		return nil, 0, nil, fmt.Errorf("%w: update of %d bytes", catalog.ErrDecode, len(b))
	}
	n := binary.BigEndian.Uint32(b)
	if n > catalog.MaxHeadBytes || uint64(n) > uint64(len(b)-5) {
		return nil, 0, nil, fmt.Errorf("%w: update with a head of %d bytes", catalog.ErrDecode, n)
	}
	return b[4 : 4+n], b[4+n], b[5+n:], nil
}

// updateFor is the update that brings a member holding version have (0:
// none) to h: the head alone if it holds h, a delta if h's history reaches
// back to have, else the whole catalog. Messages are cached per have.
func (s *loopState) updateFor(h *holding, have uint64) ([]byte, error) {
	if h.head == nil {
		return append([]byte{kindCatalog}, h.env...), nil
	}
	if have != h.version() && !slices.ContainsFunc(h.history, func(d *catalog.Delta) bool { return d.Base == have }) {
		have = 0
	}
	if msg, ok := h.encoded[have]; ok {
		return msg, nil
	}
	msg, err := s.buildUpdate(h, have)
	if err != nil {
		return nil, err
	}
	if len(h.encoded) >= maxEncoded || h.encoded == nil {
		h.encoded = map[uint64][]byte{}
	}
	h.encoded[have] = msg
	return msg, nil
}

func (s *loopState) buildUpdate(h *holding, have uint64) ([]byte, error) {
	if have == h.version() {
		return encodeUpdate(h.head.Bytes, updHead, nil), nil
	}
	if have != 0 {
		i := slices.IndexFunc(h.history, func(d *catalog.Delta) bool { return d.Base == have })
		d, err := catalog.Compose(h.history[i:])
		var b []byte
		if err == nil {
			b, err = d.Encode()
		}
		if lim := s.deltaLimits(); err == nil && len(b) <= lim.MaxBytes && d.Size() <= lim.MaxServices {
			return encodeUpdate(h.head.Bytes, updDelta, b), nil
		}
	}
	if h.env != nil {
		return encodeUpdate(h.head.Bytes, updWhole, h.env), nil
	}
	b, err := catalog.EncodePayload(h.cat)
	if err != nil {
		return nil, fmt.Errorf("relaying catalog %s %s: %w", h.cat.Cluster, FormatVersion(h.version()), err)
	}
	return encodeUpdate(h.head.Bytes, updPayload, b), nil
}

// envelopeFor is h as a bare signed envelope, for a member of an older
// meshfed that takes no updates: the owner's envelope if held (this
// cluster's own is signed now if it was published as a delta), else nil.
func (s *loopState) envelopeFor(h *holding) ([]byte, error) {
	if h.env == nil && h.cat.Cluster == s.self {
		key, chain, err := s.f.cfg.Signer.CatalogSigner()
		if err != nil {
			return nil, fmt.Errorf("signer: %w", err)
		}
		signed, err := catalog.Sign(h.cat, key, chain)
		if err != nil {
			return nil, err
		}
		h.env = signed.Bytes
	}
	if h.env == nil {
		return nil, nil
	}
	return append([]byte{kindCatalog}, h.env...), nil
}

// deltaLimits are what one delta may carry and make.
func (s *loopState) deltaLimits() catalog.DeltaLimits {
	return catalog.DeltaLimits{MaxBytes: min(s.f.cfg.MaxDeltaBytes, s.f.cfg.MaxCatalogBytes), MaxServices: s.f.cfg.MaxDeltaServices,
		MaxCatalogServices: catalog.DefaultLimits().MaxServices}
}

// acceptUpdate verifies an update from any member and, if it brings a
// newer catalog that is exactly the one its owner signed, stores it. A bad
// one is reported with the cluster it claims and dropped; the last good
// catalog stays, and a refused delta makes this member fetch the whole
// catalog.
func (s *loopState) acceptUpdate(b []byte) {
	headBytes, kind, body, err := splitUpdate(b)
	if err != nil {
		s.rejected("", 0, err)
		return
	}
	roots, _ := s.f.cfg.Bundle.X509Roots()
	head, err := catalog.VerifyHead(headBytes, roots, s.f.cfg.TrustDomain, time.Time{})
	if err != nil {
		claimed, version := catalog.PeekHead(headBytes)
		s.rejected(claimed, version, err)
		return
	}
	if head.Cluster == s.self {
		s.recoverEpoch(head.Version) // our own signed word: only ever moves forward
		return
	}
	if _, ok := s.clusters[head.Cluster]; !ok && len(s.clusters) >= maxClusters {
		return
	}
	c := s.cluster(head.Cluster)
	if head.Version <= c.held() {
		s.notNewer(c, head)
		return
	}
	var h *holding
	switch kind {
	case updWhole:
		h, err = s.wholeFromEnvelope(head, body)
	case updPayload:
		h, err = s.wholeFromPayload(head, body)
	case updDelta:
		h, err = s.fromDelta(c, head, body)
	case updHead:
		// The owner signed this version: fetch it.
		s.learn(notice{Cluster: head.Cluster, Version: head.Version})
		return
	default:
		err = fmt.Errorf("%w: update body of kind %q", catalog.ErrDecode, kind)
	}
	if err != nil {
		s.refusedUpdate(c, head, err)
		return
	}
	s.store(c, h)
}

// refusedUpdate reports an update that did not verify and fetches the
// version its (verified) head names as a whole catalog.
func (s *loopState) refusedUpdate(c *clusterState, head *catalog.SignedHead, err error) {
	if errors.Is(err, errBaseNotHeld) {
		s.f.log.Info("delta does not apply to the catalog held; fetching the whole catalog", "catalog", c.name, "version", FormatVersion(head.Version), "held", FormatVersion(c.held()), "err", err)
	} else {
		s.rejected(c.name, head.Version, err)
	}
	c.wholeNext = true
	if c.inflightTo != "" {
		c.inflightTo = "" // ask the next source
	}
	s.learn(notice{Cluster: c.name, Version: head.Version})
}

// notNewer handles an update not newer than the catalog held: the same
// version's head completes a catalog that came without one; the owner's
// answer to a fetch is its word that nothing newer exists; an older
// version is a replay or a late copy and is refused.
func (s *loopState) notNewer(c *clusterState, head *catalog.SignedHead) {
	if head.Version == c.held() && c.hold.head == nil && head.EqualDigest(c.hold.digest) {
		c.hold.head = head
	}
	if c.inflightTo == c.name && c.want > c.held() {
		c.inflightTo = ""
		s.ownerSays(c, head.Version)
	}
	if head.Version < c.held() {
		s.f.m.rejected.WithLabelValues("old").Inc()
		s.f.log.Warn("refused catalog update older than the catalog held (replayed or late)", "claimedCluster", c.name,
			"version", FormatVersion(head.Version), "held", FormatVersion(c.held()))
	}
}

func (s *loopState) wholeFromEnvelope(head *catalog.SignedHead, env []byte) (*holding, error) {
	cat, _, err := s.verify(env)
	if err != nil {
		return nil, err
	}
	return newHolding(cat, head, env)
}

func (s *loopState) wholeFromPayload(head *catalog.SignedHead, payload []byte) (*holding, error) {
	cfg := &s.f.cfg
	cat, err := catalog.DecodePayload(payload, catalog.VerifyOptions{MaxBytes: cfg.MaxCatalogBytes, MaxInflatedBytes: cfg.MaxInflatedCatalogBytes})
	if err != nil {
		return nil, fmt.Errorf("catalog %s %s from a relay: %w", head.Cluster, FormatVersion(head.Version), err)
	}
	return newHolding(cat, head, nil)
}

// fromDelta applies a delta to the catalog held of c.
func (s *loopState) fromDelta(c *clusterState, head *catalog.SignedHead, b []byte) (*holding, error) {
	lim := s.deltaLimits()
	d, err := catalog.DecodeDelta(b, lim)
	if err != nil {
		return nil, fmt.Errorf("delta of %s to %s: %w", head.Cluster, FormatVersion(head.Version), err)
	}
	if d.Changed.Cluster != head.Cluster || d.Changed.Version != head.Version {
		return nil, fmt.Errorf("%w: delta to %s v%d sent with the head of %s v%d", catalog.ErrIdentity, d.Changed.Cluster, d.Changed.Version, head.Cluster, head.Version)
	}
	if c.hold == nil || d.Base != c.held() {
		return nil, fmt.Errorf("delta of %s from %s: %w (held: %s)", c.name, FormatVersion(d.Base), errBaseNotHeld, FormatVersion(c.held()))
	}
	cat, hashes, err := d.Apply(c.hold.cat, c.hold.hashes, lim)
	if err != nil {
		return nil, err
	}
	h, err := finishHolding(cat, hashes, head, nil)
	if err != nil {
		return nil, err
	}
	h.history = appendHistory(c.hold.history, d, s.f.cfg.DeltaHistory)
	// Members at the same base get the delta as it came, not re-encoded.
	h.encoded = map[uint64][]byte{d.Base: encodeUpdate(head.Bytes, updDelta, b)}
	return h, nil
}

// appendHistory returns history with d added and the oldest dropped
// beyond limit; history itself is not changed.
func appendHistory(history []*catalog.Delta, d *catalog.Delta, limit int) []*catalog.Delta {
	if n := len(history); n > 0 && history[n-1].Changed.Version != d.Base {
		history = nil // not consecutive: start again
	}
	out := append(slices.Clone(history), d)
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// park keeps a request for a version this member does not hold yet (it
// was told to ask here because this member is about to hold it) until
// the version arrives or FetchTimeout passes.
func (s *loopState) park(r request) {
	ps := s.parked[r.Cluster]
	ps = slices.DeleteFunc(ps, func(p parkedRequest) bool { return p.r.From == r.From })
	if len(ps) >= maxParked {
		return
	}
	if s.parked == nil {
		s.parked = map[string][]parkedRequest{}
	}
	s.parked[r.Cluster] = append(ps, parkedRequest{r: r, at: time.Now()})
}

// parkedRequest is a request waiting for a version.
type parkedRequest struct {
	r  request
	at time.Time
}

// answerParked serves the requests for cluster that its newly stored
// version satisfies, and drops those that waited too long.
func (s *loopState) answerParked(cluster string, held uint64) {
	ps, ok := s.parked[cluster]
	if !ok {
		return
	}
	now := time.Now()
	var keep []parkedRequest
	for _, p := range ps {
		switch {
		case p.r.MinVersion <= held:
			s.serve(p.r)
		case now.Sub(p.at) < s.f.cfg.FetchTimeout:
			keep = append(keep, p)
		}
	}
	if len(keep) == 0 {
		delete(s.parked, cluster)
		return
	}
	s.parked[cluster] = keep
}

// push sends this cluster's new catalog, unasked, to a few live members
// chosen at random, as the delta from base when there is one, and returns
// their names.
func (s *loopState) push(h *holding, base uint64) []string {
	var live []*clusterState
	for _, c := range s.clusters {
		if c.known && c.mstate == StateAlive && c.takesUpdates {
			live = append(live, c)
		}
	}
	rand.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	live = live[:min(pushFanout, len(live))]
	msg, err := s.updateFor(h, base)
	if err != nil {
		s.f.log.Error("encoding this cluster's catalog update", "err", err)
		return nil
	}
	names := make([]string, 0, len(live))
	for _, c := range live {
		s.sendUpdate(c, s.self, msg)
		names = append(names, c.name)
	}
	return names
}

// sendUpdate sends an update (or a bare envelope) about cluster and counts
// it by role and kind.
func (s *loopState) sendUpdate(to *clusterState, cluster string, msg []byte) {
	role := "relay"
	if cluster == s.self {
		role = "owner"
	}
	s.f.m.updatesSent.WithLabelValues(role, updateKind(msg)).Inc()
	s.send(to, cluster, msg)
}

// updateKind names what an update message carries, for metrics.
func updateKind(msg []byte) string {
	if len(msg) > 0 && msg[0] == kindUpdate {
		if _, kind, _, err := splitUpdate(msg[1:]); err == nil {
			switch kind {
			case updDelta:
				return "delta"
			case updHead:
				return "head"
			}
		}
	}
	return "whole"
}
