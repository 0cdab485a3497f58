package debug

import (
	"fmt"
	"maps"
	"slices"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/mesh"
)

// PathMesh is the mesh as this cluster serves it now (MeshView): what the
// web view shows.
const PathMesh = "/debug/mesh"

// StateSource is the mesh state proxies are served from (the xDS server's).
type StateSource interface {
	State() (mesh.State, bool)
}

// MeshView is the mesh as one cluster serves it: the federation's
// members, the services here and those imported from other clusters, who
// may call whom, and the split weights in force.
type MeshView struct {
	Cluster    string          `json:"cluster"`
	Federated  bool            `json:"federated"`
	Federation federate.Status `json:"federation"`
	// Permissive: every meshed workload may call every other (no
	// TrafficTarget is needed).
	Permissive bool          `json:"permissive"`
	Services   []ServiceView `json:"services"`
	Imports    []ImportView  `json:"imports"`
	Policies   []PolicyView  `json:"policies"`
	Splits     []SplitView   `json:"splits"`
}

// ServiceView is one service, local or exported by another cluster.
type ServiceView struct {
	Name      string `json:"name"` // namespace/name
	Cluster   string `json:"cluster"`
	Endpoints int    `json:"endpoints"`
}

// ImportView is a clusterset service and the clusters that export it.
type ImportView struct {
	Name     string   `json:"name"` // namespace/name
	Clusters []string `json:"clusters"`
}

// PolicyView is one TrafficTarget: the sources may call the destination
// on the routes named.
type PolicyView struct {
	Name        string   `json:"name"` // namespace/name
	Destination string   `json:"destination"`
	Sources     []string `json:"sources"`
	Routes      []string `json:"routes"`
}

// SplitView is one TrafficSplit with the weights in force.
type SplitView struct {
	Name     string        `json:"name"` // namespace/name
	Service  string        `json:"service"`
	Backends []BackendView `json:"backends"`
}

// BackendView is one weighted backend; Share is its part of the total.
type BackendView struct {
	Service string  `json:"service"`
	Cluster string  `json:"cluster,omitempty"`
	Weight  int64   `json:"weight"`
	Share   float64 `json:"share"`
}

// View summarizes st for cluster.
func View(cluster string, st mesh.State, fed federate.Status, federated bool) MeshView {
	v := MeshView{Cluster: cluster, Federated: federated, Federation: fed, Permissive: st.Settings.PermissiveTrafficPolicy,
		Services: []ServiceView{}, Imports: []ImportView{}, Policies: []PolicyView{}, Splits: []SplitView{}}
	for _, s := range st.Services {
		v.Services = append(v.Services, ServiceView{Name: s.Namespace + "/" + s.Name, Cluster: cluster, Endpoints: len(s.Endpoints)})
	}
	for _, name := range slices.Sorted(maps.Keys(st.Remote)) {
		for _, s := range st.Remote[name].Services {
			v.Services = append(v.Services, ServiceView{Name: s.Namespace + "/" + s.Name, Cluster: name, Endpoints: len(s.Endpoints)})
		}
	}
	for _, im := range st.Imports {
		v.Imports = append(v.Imports, ImportView{Name: im.Namespace + "/" + im.Name, Clusters: im.Clusters})
	}
	for _, tt := range st.TrafficTargets {
		p := PolicyView{Name: tt.Namespace + "/" + tt.Name, Destination: string(tt.Destination)}
		for _, src := range tt.Sources {
			p.Sources = append(p.Sources, string(src))
		}
		for _, r := range tt.Rules {
			route := fmt.Sprintf("%s %s", r.Kind, r.Name)
			if len(r.Matches) > 0 {
				route += fmt.Sprintf(" %v", r.Matches)
			}
			p.Routes = append(p.Routes, route)
		}
		v.Policies = append(v.Policies, p)
	}
	for _, sp := range st.TrafficSplits {
		var total int64
		for _, b := range sp.Backends {
			total += b.Weight
		}
		s := SplitView{Name: sp.Namespace + "/" + sp.Name, Service: sp.Service}
		for _, b := range sp.Backends {
			share := 0.0
			if total > 0 {
				share = float64(b.Weight) / float64(total)
			}
			s.Backends = append(s.Backends, BackendView{Service: b.Service, Cluster: b.Cluster, Weight: b.Weight, Share: share})
		}
		v.Splits = append(v.Splits, s)
	}
	return v
}
