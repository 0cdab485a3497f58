package federation

import (
	"encoding/json"
	"fmt"

	"github.com/hashicorp/memberlist"

	"github.com/meshfed/meshfed/federation/catalog"
)

// Message kinds: the first byte of every user message.
const (
	kindNotice  byte = 'N' // broadcast: cluster C is at version V
	kindRequest byte = 'R' // stream: send me cluster C at version >= V
	kindCatalog byte = 'C' // stream: a signed catalog envelope follows
	kindLeave   byte = 'L' // broadcast: cluster C is leaving on purpose
	kindRestart byte = 'S' // stream: a signed restart note follows (note.go)
	kindUpdate  byte = 'U' // stream: a signed head and a catalog or delta (update.go)
)

// wireFormat is the version of meshfed's own messages (notices, requests,
// push/pull digests, node meta).
const wireFormat = 1

// notice is the broadcast that a cluster's catalog moved. It is ~60 bytes,
// far below memberlist's 1,400-byte packet limit, so it always fits.
type notice struct {
	Cluster string `json:"c"`
	Version uint64 `json:"v"`
	Digest  string `json:"d,omitempty"`
	// Holder is a member that holds this version (the owner, or a member
	// that verified it), to spread fetches away from the owner.
	Holder string `json:"h,omitempty"`
}

// request asks a member for a catalog; the answer comes back as a separate
// stream message (kindCatalog) addressed to From.
type request struct {
	Cluster    string `json:"c"`
	MinVersion uint64 `json:"v"`
	From       string `json:"from"`
	// Have is the version the requester holds (0: none, or it wants the
	// whole catalog), so that the answer can be a delta from it.
	Have uint64 `json:"have,omitempty"`
	// Updates says the requester takes updates (kindUpdate); a member of
	// an older meshfed does not, and is answered with a bare signed
	// envelope (kindCatalog).
	Updates bool `json:"u,omitempty"`
}

// digestState is what push/pull carries: who sent it and, per cluster, the
// newest catalog version it holds. Catalogs themselves are fetched by
// version, so push/pull stays a few KB even with 10,000 services.
type digestState struct {
	Format   int      `json:"f"`
	From     string   `json:"from"`
	Catalogs []notice `json:"catalogs"`
}

// nodeMeta is this member's memberlist metadata (well under 512 bytes).
type nodeMeta struct {
	Format         int    `json:"f"`
	CatalogVersion uint64 `json:"cv,omitempty"`
	Digest         string `json:"d,omitempty"`
	Network        string `json:"n,omitempty"`
	// Updates says this member takes catalog updates (kindUpdate), so
	// that it may be sent one unasked.
	Updates bool `json:"u,omitempty"`
}

func encodeMsg(kind byte, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("federation: marshal %T: %v", v, err)) // only our own plain structs
	}
	return append([]byte{kind}, b...)
}

// maxDigestEntries bounds the catalogs one push/pull digest may list; a
// federation has tens of clusters.
const maxDigestEntries = 4096

// decodeNotice parses a version notice (or a leave, which has no version).
// Nothing in it is trusted: a notice is a hint that makes the receiver ask
// for the catalog, never a reason to wait for a version (see learn).
func decodeNotice(b []byte) (notice, error) {
	var n notice
	if err := json.Unmarshal(b, &n); err != nil {
		return n, fmt.Errorf("version notice: %w", err)
	}
	if !catalog.ValidClusterName(n.Cluster) {
		return n, fmt.Errorf("version notice: cluster name %q is not a DNS label", n.Cluster)
	}
	if n.Holder != "" && !catalog.ValidClusterName(n.Holder) {
		return n, fmt.Errorf("version notice about %s: holder %q is not a cluster name", n.Cluster, n.Holder)
	}
	if len(n.Digest) > 64 {
		return n, fmt.Errorf("version notice about %s: digest of %d characters", n.Cluster, len(n.Digest))
	}
	return n, nil
}

// decodeRequest parses a catalog request.
func decodeRequest(b []byte) (request, error) {
	var r request
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("catalog request: %w", err)
	}
	if !catalog.ValidClusterName(r.Cluster) || !catalog.ValidClusterName(r.From) {
		return r, fmt.Errorf("catalog request: cluster %q from %q: not cluster names", r.Cluster, r.From)
	}
	return r, nil
}

// decodeDigest parses a peer's push/pull state. Entries that do not name a
// cluster are dropped; so is a digest listing more than maxDigestEntries.
func decodeDigest(b []byte) (digestState, error) {
	var ds digestState
	if err := json.Unmarshal(b, &ds); err != nil {
		return ds, fmt.Errorf("push/pull state: %w", err)
	}
	if ds.Format != wireFormat {
		return ds, fmt.Errorf("push/pull state: format %d, want %d", ds.Format, wireFormat)
	}
	if !catalog.ValidClusterName(ds.From) {
		return ds, fmt.Errorf("push/pull state: sender %q is not a cluster name", ds.From)
	}
	if len(ds.Catalogs) > maxDigestEntries {
		return ds, fmt.Errorf("push/pull state from %s: %d catalogs, limit %d", ds.From, len(ds.Catalogs), maxDigestEntries)
	}
	kept := ds.Catalogs[:0]
	for _, n := range ds.Catalogs {
		if catalog.ValidClusterName(n.Cluster) && len(n.Digest) <= 64 {
			n.Holder = ds.From
			kept = append(kept, n)
		}
	}
	ds.Catalogs = kept
	return ds, nil
}

func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if len(b) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("node meta: %w", err)
	}
	if m.Format != wireFormat {
		return m, fmt.Errorf("node meta: format %d, want %d", m.Format, wireFormat)
	}
	return m, nil
}

// noticeBroadcast is a notice queued for gossip; a newer notice for the same
// cluster replaces an older one in the queue.
type noticeBroadcast struct {
	n   notice
	msg []byte
}

func (b *noticeBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(*noticeBroadcast)
	return ok && o.n.Cluster == b.n.Cluster && o.n.Version <= b.n.Version
}
func (b *noticeBroadcast) Message() []byte { return b.msg }
func (b *noticeBroadcast) Finished()       {}
