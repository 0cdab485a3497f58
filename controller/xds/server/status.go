package server

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshfed/meshfed/mesh"
)

// What the server knows of each connected proxy, for operators (`meshfed
// proxy status`, `meshfed proxy get`): proxyless gRPC workloads have no
// admin endpoint of their own, so the controller is the one place that
// knows what each was sent and whether it accepted it.

// ProxyStatus is one open xDS stream.
type ProxyStatus struct {
	// Key is the proxy key the stream is served as: its authenticated
	// identity and kind ("<spiffe id>|<kind>[|no-sni]").
	Key      string `json:"key"`
	Identity string `json:"identity"`
	Kind     Kind   `json:"kind"`
	// NodeID is the node ID the proxy gave itself (meshfed agent writes
	// "<namespace>/<pod>"). It is not verified: only Identity is.
	NodeID    string       `json:"nodeID"`
	Connected time.Time    `json:"connected"`
	Types     []TypeStatus `json:"types"`
}

// TypeStatus is one resource type's exchange on a stream.
type TypeStatus struct {
	// Type is lds, rds, cds, eds or sds.
	Type string `json:"type"`
	// Sent is the version last sent, Acked the version last accepted.
	Sent    string    `json:"sent"`
	SentAt  time.Time `json:"sentAt"`
	Acked   string    `json:"acked,omitempty"`
	AckedAt time.Time `json:"ackedAt,omitzero"`
	// NACK is the last rejection since the last acceptance, if any.
	NACK *NACK `json:"nack,omitempty"`
}

// NACK is a response a proxy rejected, with the proxy's own message.
type NACK struct {
	Version string    `json:"version"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// claimedNodeID is the node metadata field where stamp keeps the node ID
// the proxy sent, before the stream's node is renamed after its identity.
const claimedNodeID = "meshfed.io/claimed-node-id"

// claim records, in the stamped node, the ID the proxy gave itself.
func claim(stamped *corev3.Node, id string) {
	if stamped.Metadata == nil {
		stamped.Metadata = &structpb.Struct{}
	}
	if stamped.Metadata.Fields == nil {
		stamped.Metadata.Fields = map[string]*structpb.Value{}
	}
	stamped.Metadata.Fields[claimedNodeID] = structpb.NewStringValue(truncate(id, 256))
}

// typeExchange is one type's exchange on a stream (under streamsMu).
type typeExchange struct {
	sent    sentResponse
	acked   string
	ackedAt time.Time
	nack    *NACK
}

// Proxies returns every open stream's status, ordered by key and node ID.
func (s *Server) Proxies() []ProxyStatus {
	s.streamsMu.Lock()
	out := make([]ProxyStatus, 0, len(s.streams))
	for _, st := range s.streams {
		if st.key == "" {
			continue // no request read yet
		}
		p := ProxyStatus{Key: st.key, NodeID: st.nodeID, Connected: st.opened}
		if k, ok := parseProxyKey(st.key); ok {
			p.Identity, p.Kind = string(k.id), k.kind
		}
		for url, x := range st.types {
			t := TypeStatus{Type: shortType(url), Sent: x.sent.version, SentAt: x.sent.at, Acked: x.acked, AckedAt: x.ackedAt}
			if x.nack != nil {
				n := *x.nack
				t.NACK = &n
			}
			p.Types = append(p.Types, t)
		}
		out = append(out, p)
	}
	s.streamsMu.Unlock()
	for i := range out {
		slices.SortFunc(out[i].Types, func(a, b TypeStatus) int { return cmp.Compare(typeOrder(a.Type), typeOrder(b.Type)) })
	}
	slices.SortFunc(out, func(a, b ProxyStatus) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.NodeID, b.NodeID), a.Connected.Compare(b.Connected))
	})
	return out
}

func typeOrder(t string) int { return slices.Index([]string{"lds", "rds", "cds", "eds", "sds"}, t) }

// ResourceTypes are the type URLs Resources returns, in xDS order.
var ResourceTypes = []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.SecretType}

// Resources returns what is served to the proxies of key (a
// ProxyStatus.Key), by type URL and resource name: the snapshot their
// streams are answered from.
func (s *Server) Resources(key string) (map[string]map[string]types.Resource, error) {
	if _, ok := parseProxyKey(key); !ok {
		return nil, fmt.Errorf("%q is not a proxy key", truncate(key, 256))
	}
	snap, err := s.cache.GetSnapshot(key)
	if err != nil {
		return nil, fmt.Errorf("no configuration is served to %s: %w", truncate(key, 256), err)
	}
	out := map[string]map[string]types.Resource{}
	for _, url := range ResourceTypes {
		out[url] = snap.GetResources(url)
	}
	return out, nil
}

// State returns the mesh state the proxies are served from now (invalid
// objects already skipped), false before the first Update. Its slices
// are shared: read them only.
func (s *Server) State() (mesh.State, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.builder.ix == nil {
		return mesh.State{}, false
	}
	return s.builder.ix.State, true
}
