package federation

import (
	"encoding/json"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// Message kinds: the first byte of every user message.
const (
	kindNotice  byte = 'N' // broadcast: cluster C is at version V
	kindRequest byte = 'R' // stream: send me cluster C at version >= V
	kindCatalog byte = 'C' // stream: a signed catalog envelope follows
	kindLeave   byte = 'L' // broadcast: cluster C is leaving on purpose
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
}

func encodeMsg(kind byte, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("federation: marshal %T: %v", v, err)) // only our own plain structs
	}
	return append([]byte{kind}, b...)
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
