package generate

import (
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshfed/meshfed/mesh"
)

// MCS: every ServiceImport (mesh.State.Imports) makes the name
// "<svc>.<ns>.svc.clusterset.local" routable from every meshed workload,
// balanced over the endpoints of every exporting cluster. A clusterset
// name gets, per port, its own client listener and route (proxyless) or
// virtual host (sidecar), a cluster, and a load assignment that puts each
// exporting cluster's endpoints in a locality of their own weighted by
// that cluster's ready endpoint count (DESIGN.md, Known traps: grpc-go's
// round robin ignores endpoint weights, its locality-weighted round robin
// honours locality weights). With Settings.ClusterSetLocalFirst the local
// cluster's locality is priority 0 and the others priority 1 — but only
// while the local cluster has a ready endpoint: grpc-go fails over to the
// next priority only after 10 s not READY and ignores overprovisioning, so
// the control plane drops an empty local priority itself.

// ClusterSetFQDN returns "<name>.<namespace>.svc.clusterset.local".
func ClusterSetFQDN(svc mesh.NamespacedName) string {
	return svc.Name + "." + svc.Namespace + ".svc.clusterset.local"
}

// ClusterSetName names the proxyless client listener, route configuration,
// cluster and load assignment of a clusterset name's port: the target
// clients dial ("bookstore.bookstore.svc.clusterset.local:14001").
func ClusterSetName(svc mesh.NamespacedName, port uint32) string {
	return ClusterSetFQDN(svc) + ":" + strconv.FormatUint(uint64(port), 10)
}

// clusterSetImports returns the imports that get clusterset names: the
// first of each name, in State order, with its ports of a non-zero number.
func clusterSetImports(s *mesh.State) []*mesh.Import {
	seen := map[mesh.NamespacedName]bool{}
	var out []*mesh.Import
	for i := range s.Imports {
		imp := &s.Imports[i]
		k := mesh.NamespacedName{Namespace: imp.Namespace, Name: imp.Name}
		if seen[k] || imp.Name == "" || imp.Namespace == "" {
			continue
		}
		seen[k] = true
		out = append(out, imp)
	}
	return out
}

// ClusterSetMember is one exporting cluster's service behind a clusterset
// name.
type ClusterSetMember struct {
	Cluster string
	// Local is true for the local cluster's own service.
	Local   bool
	Service *mesh.Service
}

// ClusterSetMembers returns the services behind imp: the local service if
// the local cluster exports it, and each exporting remote cluster's, in
// imp.Clusters order. Clusters whose catalog does not (yet) hold the
// service are left out.
func (ix *Index) ClusterSetMembers(imp *mesh.Import) []ClusterSetMember {
	key := mesh.NamespacedName{Namespace: imp.Namespace, Name: imp.Name}
	out := make([]ClusterSetMember, 0, len(imp.Clusters))
	for _, c := range imp.Clusters {
		local := c == ix.State.Settings.ClusterName
		svc, ok := ix.RemoteService(c, key)
		if !ok {
			continue
		}
		out = append(out, ClusterSetMember{Cluster: c, Local: local, Service: svc})
	}
	return out
}

// ClusterSetImport returns the import of key, if there is one.
func (ix *Index) ClusterSetImport(key mesh.NamespacedName) (*mesh.Import, bool) {
	i, ok := ix.imports[key]
	if !ok {
		return nil, false
	}
	return ix.importList[i], true
}

// ClusterSetImports returns the imports that get clusterset names, in order.
func (ix *Index) ClusterSetImports() []*mesh.Import { return ix.importList }

// clusterSetSANs returns the identities a client accepts behind imp: the
// union of every member's server identities, or, if any member's are
// unknown, the prefix of its namespace's identities.
func clusterSetSANs(ix *Index, members []ClusterSetMember, ns string) ([]mesh.Identity, string) {
	prefix := mesh.TrustDomainPrefix(ix.State.Settings.TrustDomain) + "ns/" + ns + "/sa/"
	var ids []mesh.Identity
	seen := map[mesh.Identity]bool{}
	for _, m := range members {
		sans, p := serverSANs(ix, m.Service)
		if p != "" {
			return nil, prefix
		}
		for _, id := range sans {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	if len(ids) == 0 {
		return nil, prefix
	}
	return ids, ""
}

// ClusterSetEndpoints returns the load assignments of every clusterset
// name's ports.
func ClusterSetEndpoints(ix *Index) []types.Resource {
	var out []types.Resource
	for _, imp := range ix.ClusterSetImports() {
		for _, cla := range ClusterSetLoadAssignments(ix, imp) {
			out = append(out, cla)
		}
	}
	return out
}

// ClusterSetLoadAssignments returns the load assignment of each port of
// imp, from ix's settings and the members' endpoints.
func ClusterSetLoadAssignments(ix *Index, imp *mesh.Import) []*endpointv3.ClusterLoadAssignment {
	members := ix.ClusterSetMembers(imp)
	key := mesh.NamespacedName{Namespace: imp.Namespace, Name: imp.Name}
	out := make([]*endpointv3.ClusterLoadAssignment, 0, len(imp.Ports))
	for _, p := range imp.Ports {
		out = append(out, ClusterSetLoadAssignment(key, p.Port, members, ix.State.Settings.ClusterSetLocalFirst))
	}
	return out
}

// ClusterSetLoadAssignment returns the load assignment of port of a
// clusterset name over members: one locality per member cluster with a
// ready endpoint (sub_zone "<cluster>"), weighted by its ready endpoint
// count; each endpoint at the port its own cluster's service maps the
// port to (a remote export's target port travels in its catalog).
// Members without a ready endpoint are left out: their endpoints could
// take no traffic, and an empty local priority would hold traffic back
// for grpc-go's 10 s failover timer. With localFirst, the local member is
// priority 0 and the others priority 1.
func ClusterSetLoadAssignment(svc mesh.NamespacedName, port uint32, members []ClusterSetMember, localFirst bool) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: ClusterSetName(svc, port)}
	var locals, remotes []*endpointv3.LocalityLbEndpoints
	for _, m := range members {
		sp, ok := m.Service.Port(port)
		if !ok {
			continue
		}
		l := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{SubZone: m.Cluster}}
		var ready uint32
		for _, ep := range m.Service.Endpoints {
			health := corev3.HealthStatus_UNHEALTHY
			switch {
			case ep.Terminating:
				health = corev3.HealthStatus_DRAINING
			case ep.Ready:
				health = corev3.HealthStatus_HEALTHY
				ready += ep.Weight()
			}
			l.LbEndpoints = append(l.LbEndpoints, &endpointv3.LbEndpoint{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress(ep.Address, ep.TargetPort(sp)),
				}},
				HealthStatus: health,
			})
		}
		if ready == 0 {
			continue
		}
		l.LoadBalancingWeight = wrapperspb.UInt32(ready)
		if m.Local {
			locals = append(locals, l)
		} else {
			remotes = append(remotes, l)
		}
	}
	cla.Endpoints = append(locals, remotes...)
	if localFirst && len(locals) > 0 && len(remotes) > 0 {
		for _, l := range remotes {
			l.Priority = 1
		}
	}
	return cla
}
