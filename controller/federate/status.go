package federate

import (
	"context"
	"encoding/json"
	"sort"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/mesh"
)

// Status is what the bridge writes into the MeshConfig's status.federation
// and `meshfed cluster list` shows.
type Status struct {
	// Cluster is the local cluster's name.
	Cluster string `json:"cluster"`
	// UpdatedAt is when the controller wrote this status.
	UpdatedAt time.Time `json:"updatedAt"`
	// Members are every federation member this cluster knows of,
	// itself included, sorted by name.
	Members []MemberStatus `json:"members"`
}

// MemberStatus is one member as the local cluster sees it.
type MemberStatus struct {
	Name string `json:"name"`
	// Address is its gossip address (host:port).
	Address string `json:"address,omitempty"`
	// Network is the network its catalog names; Gateways are the usable
	// east-west gateway addresses it lists (clusters on other networks
	// reach it through them).
	Network  string   `json:"network,omitempty"`
	Gateways []string `json:"gateways,omitempty"`
	// Unreachable says why clients here cannot reach its services (it is
	// on another network and lists no usable gateway); empty otherwise.
	Unreachable string `json:"unreachable,omitempty"`
	// State is alive, suspect, dead, left or unknown.
	State string `json:"state"`
	// Since is when State last changed.
	Since *time.Time `json:"since,omitempty"`
	// LastContact is the last direct contact with it.
	LastContact *time.Time `json:"lastContact,omitempty"`
	// CatalogVersion is the version of its catalog held here (0: none).
	CatalogVersion uint64 `json:"catalogVersion"`
	// Services are its exported services ("namespace/name"), at most
	// MaxListedServices of them; ServiceCount is the total.
	Services     []string `json:"services,omitempty"`
	ServiceCount int      `json:"serviceCount"`
	// Withdrawn are services the failure policy withdrew.
	Withdrawn []string `json:"withdrawn,omitempty"`
	// Invalid are services of its catalog this cluster skipped, each
	// with why, names escaped (mesh.Quote), at most MaxListedServices of
	// them of at most 300 bytes each; InvalidCount is the total.
	Invalid      []string `json:"invalid,omitempty"`
	InvalidCount int      `json:"invalidCount,omitempty"`
	// Reason explains its state ("west: dead since …").
	Reason string `json:"reason,omitempty"`
	// TrustBundleFingerprint is the trust bundle its catalog names,
	// escaped with mesh.Quote.
	TrustBundleFingerprint string `json:"trustBundleFingerprint,omitempty"`
	Stale                  bool   `json:"stale,omitempty"`
	Local                  bool   `json:"local,omitempty"`
}

// MaxListedServices bounds the service names per member in the status, so
// that a 10,000-service catalog does not blow up the MeshConfig.
const MaxListedServices = 50

// StatusFrom builds the status for a federation snapshot; published are
// the local exports' keys.
func StatusFrom(cluster string, rv *federation.RemoteView, published []string, now time.Time) Status {
	st := Status{Cluster: cluster, UpdatedAt: now.UTC().Truncate(time.Second)}
	if rv == nil {
		return st
	}
	tp := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC().Truncate(time.Second)
		return &t
	}
	for _, m := range rv.Members {
		ms := MemberStatus{
			Name: m.Name, Address: m.Addr, State: string(m.State), Since: tp(m.Since), LastContact: tp(m.LastContact),
			CatalogVersion: m.CatalogVersion, ServiceCount: m.Services, TrustBundleFingerprint: quoteNonEmpty(m.TrustBundleFingerprint),
			Stale: m.Stale, Local: m.Local,
		}
		var names []string
		if m.Local {
			names = published
		} else if cv, ok := rv.Clusters[m.Name]; ok {
			if cv.Catalog != nil {
				for _, s := range cv.Catalog.Services {
					names = append(names, s.Key())
				}
				ms.Network = cv.Catalog.Network
				gws, _ := parseGateways(cv.Catalog.Gateways)
				for _, g := range gws {
					ms.Gateways = append(ms.Gateways, g.String())
				}
			}
			ms.Withdrawn, ms.Reason = cv.Withdrawn, cv.Reason
		}
		sort.Strings(names)
		if len(names) > MaxListedServices {
			names = names[:MaxListedServices]
		}
		ms.Services = names
		st.Members = append(st.Members, ms)
	}
	return st
}

// StatusBoard holds the federation status the running bridge last
// computed — after every reconcile and every StatusInterval — for the
// controller's debug API: the live view `meshfed cluster list` reads. It
// is empty while federation is off. Safe for concurrent use.
type StatusBoard struct{ p atomic.Pointer[Status] }

// Load returns the latest status, false while federation is off.
func (sb *StatusBoard) Load() (Status, bool) {
	if sb == nil {
		return Status{}, false
	}
	st := sb.p.Load()
	if st == nil {
		return Status{}, false
	}
	return *st, true
}

func (sb *StatusBoard) store(st *Status) {
	if sb != nil {
		sb.p.Store(st)
	}
}

// status builds the members' status as this cluster sees them now.
func (b *Bridge) status() Status {
	published := make([]string, 0, len(b.published))
	for _, s := range b.published {
		published = append(published, s.Key())
	}
	st := StatusFrom(b.cfg.ClusterName, b.validRemote(b.cfg.Federation.Snapshot()), published, time.Now())
	for i := range st.Members {
		if st.Members[i].Local {
			st.Members[i].Network, st.Members[i].Gateways = b.cfg.Network, b.publishedGateways
		}
		st.Members[i].Unreachable = b.unreachable[st.Members[i].Name]
		inv := b.invalid[st.Members[i].Name]
		st.Members[i].InvalidCount = inv.count
		for _, err := range inv.problems {
			st.Members[i].Invalid = append(st.Members[i].Invalid, shorten(err.Error(), maxInvalidMessage))
		}
	}
	return st
}

// publishStatus puts the current status on the board.
func (b *Bridge) publishStatus() Status {
	st := b.status()
	b.cfg.Board.store(&st)
	return st
}

// writeStatus publishes the status and writes it into the MeshConfig's
// status.federation (a merge patch of the status subresource). Failures
// are logged: the status is informational and rewritten every
// StatusInterval.
func (b *Bridge) writeStatus(ctx context.Context) {
	b.statusAt = time.Now()
	st := b.publishStatus()
	if b.cfg.MeshConfigName == "" {
		return
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"federation": st}})
	if err != nil {
		b.log.Error("federate: encoding status", "err", err)
		return
	}
	_, err = b.cfg.Dynamic.Resource(MeshConfigGVR).Namespace(b.cfg.Namespace).Patch(ctx, b.cfg.MeshConfigName, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil && ctx.Err() == nil {
		b.log.Warn("federate: writing federation status into MeshConfig", "namespace", b.cfg.Namespace, "name", b.cfg.MeshConfigName, "err", err)
	}
}

// quoteNonEmpty escapes what another cluster's catalog says (mesh.Quote),
// leaving "" empty.
func quoteNonEmpty(s string) string {
	if s == "" {
		return ""
	}
	return mesh.Quote(s)
}

// maxInvalidMessage bounds one entry of MemberStatus.Invalid.
const maxInvalidMessage = 300

// shorten cuts the (ASCII) message s to n bytes.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
