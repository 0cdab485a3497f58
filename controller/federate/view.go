package federate

import (
	"sort"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
)

// RemoteState is the federation as the controller's mesh.State needs it:
// assign Remote to mesh.State.Remote and Imports to mesh.State.Imports.
// Values are shared and must not be modified.
type RemoteState struct {
	// Version increases with every change the bridge hands out; pass it
	// to Bridge.Pushed once proxies have the state built from it.
	Version uint64
	// Remote holds every other cluster's routable exported services by
	// cluster name: what its member published, minus what the failure
	// policy withdrew and minus exports that lost MCS conflict resolution.
	// Every endpoint carries its cluster, network, zone and identity.
	Remote map[string]mesh.ClusterCatalog
	// Imports are the MCS imports (one per exported name across the
	// federation, this cluster included), sorted by namespace and name.
	Imports []mesh.Import
}

// view is what one reconcile computes from the local exports and the
// federation's snapshot. Pure data; see computeView.
type view struct {
	// published is what this cluster publishes: its valid exports,
	// sorted by namespace and name (a remote export never evicts one).
	published []catalog.ExportedService
	// conflicts are the local exports that remote exports conflict with,
	// by key.
	conflicts map[string]conflict
	// leftOut are the remote exports that lost conflict resolution here.
	leftOut []leftOutExport
	// imports are the desired ServiceImports, sorted.
	imports []importSpec
	remote  RemoteState
}

// importSpec is one desired ServiceImport.
type importSpec struct {
	Namespace, Name string
	Ports           []catalog.Port
	Headless        bool
	// Clusters are the exporting clusters, sorted.
	Clusters []string
}

// computeView applies MCS conflict resolution to the local exports (by
// "namespace/name") and the remote clusters' routable services, the remote
// export times bounded by seen (see conflict.go).
func computeView(local string, exports map[string]catalog.ExportedService, rv *federation.RemoteView, seen *firstSeen) view {
	byName := map[string][]exporter{}
	for k, es := range exports {
		byName[k] = append(byName[k], localExporter(local, es))
	}
	network := map[string]string{}
	version := map[string]uint64{}
	if rv != nil {
		for name, cv := range rv.Clusters {
			if cv.Catalog != nil {
				network[name], version[name] = cv.Catalog.Network, cv.Catalog.Version
			}
			for _, es := range cv.Services {
				byName[es.Key()] = append(byName[es.Key()], remoteExporter(name, es, seen))
			}
		}
	}
	v := view{conflicts: map[string]conflict{}, remote: RemoteState{Remote: map[string]mesh.ClusterCatalog{}}}
	if rv != nil {
		for name := range rv.Clusters {
			v.remote.Remote[name] = mesh.ClusterCatalog{Cluster: name, Network: network[name], Version: version[name]}
		}
	}
	keys := make([]string, 0, len(byName))
	for k := range byName {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := byName[keys[i]][0].Service, byName[keys[j]][0].Service
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	for _, k := range keys {
		res := resolve(byName[k])
		v.noteConflicts(k, res)
		if len(res.Accepted) == 0 {
			continue
		}
		first := res.Accepted[0].Service
		imp := importSpec{Namespace: first.Namespace, Name: first.Name, Ports: res.Ports, Headless: res.Headless}
		for _, e := range res.Accepted {
			imp.Clusters = append(imp.Clusters, e.Cluster)
			if e.Cluster == local {
				v.published = append(v.published, e.Service)
				continue
			}
			cc := v.remote.Remote[e.Cluster]
			cc.Services = append(cc.Services, serviceFromCatalog(e.Cluster, network[e.Cluster], e.Service))
			v.remote.Remote[e.Cluster] = cc
		}
		sort.Strings(imp.Clusters)
		v.imports = append(v.imports, imp)
		mi := mesh.Import{Namespace: imp.Namespace, Name: imp.Name, Clusters: imp.Clusters}
		for _, p := range imp.Ports {
			mi.Ports = append(mi.Ports, mesh.Port{Name: p.Name, Port: uint32(p.Port), Protocol: protocolFromCatalog(p.Protocol)})
		}
		v.remote.Imports = append(v.remote.Imports, mi)
	}
	keepWithdrawn(&v, rv, network)
	return v
}

// keepWithdrawn puts each remote cluster's withdrawn services into the view
// with no endpoints: they are no longer imported (no ServiceImport lists
// the cluster, no clusterset name balances over it), but a TrafficSplit
// that names one keeps it as a backend at weight 0, so that clients keep
// its cluster and lose no RPC when the cluster returns (DESIGN.md, Known
// traps: grpc-go fails RPCs briefly for a cluster that comes back).
func keepWithdrawn(v *view, rv *federation.RemoteView, network map[string]string) {
	if rv == nil {
		return
	}
	for name, cv := range rv.Clusters {
		if cv.Catalog == nil || len(cv.Withdrawn) == 0 {
			continue
		}
		withdrawn := map[string]bool{}
		for _, k := range cv.Withdrawn {
			withdrawn[k] = true
		}
		cc := v.remote.Remote[name]
		for _, es := range cv.Catalog.Services {
			if !withdrawn[es.Key()] {
				continue
			}
			svc := serviceFromCatalog(name, network[name], es)
			svc.Endpoints = nil
			cc.Services = append(cc.Services, svc)
		}
		sort.Slice(cc.Services, func(i, j int) bool {
			a, b := cc.Services[i], cc.Services[j]
			return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
		})
		v.remote.Remote[name] = cc
	}
}
