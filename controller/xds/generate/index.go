package generate

import (
	"sort"

	"github.com/meshfed/meshfed/mesh"
)

// Index is a sanitized State with the lookups generators need. It is
// immutable and safe to share between goroutines.
type Index struct {
	State    mesh.State
	Problems []mesh.Problem

	// services indexes State.Services by key (positions, so that an Index
	// for the same services with other endpoints can share the map).
	services map[mesh.NamespacedName]int
	// remote indexes each remote catalog's services by key.
	remote  map[string]map[mesh.NamespacedName]int
	splits  map[mesh.NamespacedName]*mesh.TrafficSplit
	groups  map[mesh.NamespacedName]*mesh.HTTPRouteGroup
	tcp     map[mesh.NamespacedName]*mesh.TCPRoute
	targets map[mesh.Identity][]*mesh.TrafficTarget
	// idServices lists, per identity, the positions of the services that
	// have endpoints of that identity. Server addresses are computed from
	// it when asked for (per proxy, O(its services)), not for every
	// identity at every update.
	idServices map[mesh.Identity][]int
	// importList are the imports that get clusterset names (first of each
	// name), imports indexes them by key.
	importList []*mesh.Import
	imports    map[mesh.NamespacedName]int
}

// ServerAddress is one address a workload of an identity listens on, with
// the service port it serves there.
type ServerAddress struct {
	IP      string
	Port    uint32
	Service mesh.NamespacedName
	Proto   mesh.Protocol
}

// NewIndex sanitizes s (objects with problems are skipped and returned in
// Index.Problems) and indexes it.
func NewIndex(s mesh.State) *Index {
	clean, problems := mesh.Sanitize(s)
	ix := &Index{
		State:      clean,
		Problems:   problems,
		services:   make(map[mesh.NamespacedName]int, len(clean.Services)),
		remote:     make(map[string]map[mesh.NamespacedName]int, len(clean.Remote)),
		splits:     make(map[mesh.NamespacedName]*mesh.TrafficSplit, len(clean.TrafficSplits)),
		groups:     make(map[mesh.NamespacedName]*mesh.HTTPRouteGroup, len(clean.HTTPRouteGroups)),
		tcp:        make(map[mesh.NamespacedName]*mesh.TCPRoute, len(clean.TCPRoutes)),
		targets:    map[mesh.Identity][]*mesh.TrafficTarget{},
		idServices: map[mesh.Identity][]int{},
	}
	for i := range clean.Services {
		svc := &clean.Services[i]
		ix.services[svc.Key()] = i
		for _, id := range svc.EndpointIdentities() {
			ix.idServices[id] = append(ix.idServices[id], i)
		}
	}
	for c, cat := range clean.Remote {
		m := make(map[mesh.NamespacedName]int, len(cat.Services))
		for i := range cat.Services {
			m[cat.Services[i].Key()] = i
		}
		ix.remote[c] = m
	}
	ix.importList = clusterSetImports(&clean)
	ix.imports = make(map[mesh.NamespacedName]int, len(ix.importList))
	for i, imp := range ix.importList {
		ix.imports[mesh.NamespacedName{Namespace: imp.Namespace, Name: imp.Name}] = i
	}
	for i := range clean.TrafficSplits {
		ts := &clean.TrafficSplits[i]
		ix.splits[mesh.NamespacedName{Namespace: ts.Namespace, Name: ts.Service}] = ts
	}
	for i := range clean.HTTPRouteGroups {
		g := &clean.HTTPRouteGroups[i]
		ix.groups[mesh.NamespacedName{Namespace: g.Namespace, Name: g.Name}] = g
	}
	for i := range clean.TCPRoutes {
		r := &clean.TCPRoutes[i]
		ix.tcp[mesh.NamespacedName{Namespace: r.Namespace, Name: r.Name}] = r
	}
	for i := range clean.TrafficTargets {
		t := &clean.TrafficTargets[i]
		ix.targets[t.Destination] = append(ix.targets[t.Destination], t)
	}
	return ix
}

// computeServerAddresses returns the sorted, distinct addresses on which
// the workloads of id serve, from the services that have its endpoints.
func (ix *Index) computeServerAddresses(id mesh.Identity) []ServerAddress {
	var addrs []ServerAddress
	for _, i := range ix.idServices[id] {
		svc := &ix.State.Services[i]
		for _, ep := range svc.Endpoints {
			if ep.Identity != id {
				continue
			}
			for _, p := range svc.Ports {
				addrs = append(addrs, ServerAddress{IP: ep.Address, Port: ep.TargetPort(p), Service: svc.Key(), Proto: p.Protocol})
			}
		}
	}
	sort.SliceStable(addrs, func(i, j int) bool {
		if addrs[i].IP != addrs[j].IP {
			return addrs[i].IP < addrs[j].IP
		}
		return addrs[i].Port < addrs[j].Port
	})
	out := addrs[:0]
	for i, a := range addrs {
		if i > 0 && a.IP == addrs[i-1].IP && a.Port == addrs[i-1].Port {
			continue
		}
		out = append(out, a)
	}
	return out
}

// WithEndpoints returns the Index of next, a state that differs from the
// one ix was built from only in the endpoints of local services and in
// remote catalogs' endpoints, without sanitizing or indexing the whole
// state again: O(1), not O(mesh) (server addresses are computed from the
// services when asked for).
//
// The caller guarantees what makes this exact (the server checks it with
// mesh.Service.SameShape): next has the same settings, policy objects,
// remote catalogs and services, in the same order, as ix's input; every
// service of next is valid (ix.State.Services is next's list, unfiltered);
// each changed service is SameShape with its old self. The sanitized
// policy and the problems of ix carry over unchanged.
func (ix *Index) WithEndpoints(next mesh.State) *Index {
	out := *ix
	clean := ix.State
	clean.Services = next.Services
	clean.Remote = next.Remote
	out.State = clean
	return &out
}

// ServerAddresses returns the addresses the workloads of id serve on, sorted.
func (ix *Index) ServerAddresses(id mesh.Identity) []ServerAddress {
	return ix.computeServerAddresses(id)
}

// Service returns the local service, if any.
func (ix *Index) Service(key mesh.NamespacedName) (*mesh.Service, bool) {
	i, ok := ix.services[key]
	if !ok {
		return nil, false
	}
	return &ix.State.Services[i], true
}

// RemoteService returns the service key that cluster exports (the local
// service for "" or the local cluster's name), like mesh.State.RemoteService
// but without a scan.
func (ix *Index) RemoteService(cluster string, key mesh.NamespacedName) (*mesh.Service, bool) {
	if cluster == "" || cluster == ix.State.Settings.ClusterName {
		return ix.Service(key)
	}
	i, ok := ix.remote[cluster][key]
	if !ok {
		return nil, false
	}
	return &ix.State.Remote[cluster].Services[i], true
}

// upstream is one service whose clusters clients get: a local service or a
// remote cluster's export.
type upstream struct {
	svc *mesh.Service
	// remote is the exporting cluster for a remote service, "" for local.
	remote string
}

// upstreams returns every local service and then every remote export,
// in a stable order.
func (ix *Index) upstreams() []upstream {
	out := make([]upstream, 0, len(ix.State.Services))
	for i := range ix.State.Services {
		out = append(out, upstream{svc: &ix.State.Services[i]})
	}
	clusters := make([]string, 0, len(ix.State.Remote))
	for c := range ix.State.Remote {
		if c != ix.State.Settings.ClusterName {
			clusters = append(clusters, c)
		}
	}
	sort.Strings(clusters)
	for _, c := range clusters {
		cat := ix.State.Remote[c]
		for i := range cat.Services {
			out = append(out, upstream{svc: &cat.Services[i], remote: c})
		}
	}
	return out
}
