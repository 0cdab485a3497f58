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

	services map[mesh.NamespacedName]*mesh.Service
	splits   map[mesh.NamespacedName]*mesh.TrafficSplit
	groups   map[mesh.NamespacedName]*mesh.HTTPRouteGroup
	tcp      map[mesh.NamespacedName]*mesh.TCPRoute
	targets  map[mesh.Identity][]*mesh.TrafficTarget
	// serverAddrs lists, per identity, the addresses its workloads serve on.
	serverAddrs map[mesh.Identity][]ServerAddress
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
		State:       clean,
		Problems:    problems,
		services:    make(map[mesh.NamespacedName]*mesh.Service, len(clean.Services)),
		splits:      make(map[mesh.NamespacedName]*mesh.TrafficSplit, len(clean.TrafficSplits)),
		groups:      make(map[mesh.NamespacedName]*mesh.HTTPRouteGroup, len(clean.HTTPRouteGroups)),
		tcp:         make(map[mesh.NamespacedName]*mesh.TCPRoute, len(clean.TCPRoutes)),
		targets:     map[mesh.Identity][]*mesh.TrafficTarget{},
		serverAddrs: map[mesh.Identity][]ServerAddress{},
	}
	for i := range clean.Services {
		svc := &clean.Services[i]
		ix.services[svc.Key()] = svc
		for _, ep := range svc.Endpoints {
			if ep.Identity == "" {
				continue
			}
			for _, p := range svc.Ports {
				ix.serverAddrs[ep.Identity] = append(ix.serverAddrs[ep.Identity], ServerAddress{IP: ep.Address, Port: ep.TargetPort(p), Service: svc.Key(), Proto: p.Protocol})
			}
		}
	}
	for id, addrs := range ix.serverAddrs {
		sort.Slice(addrs, func(i, j int) bool {
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
		ix.serverAddrs[id] = out
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

// ServerAddresses returns the addresses the workloads of id serve on, sorted.
func (ix *Index) ServerAddresses(id mesh.Identity) []ServerAddress { return ix.serverAddrs[id] }

// Service returns the local service, if any.
func (ix *Index) Service(key mesh.NamespacedName) (*mesh.Service, bool) {
	s, ok := ix.services[key]
	return s, ok
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
