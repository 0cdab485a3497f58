package generate

import (
	"slices"

	"github.com/meshfed/meshfed/mesh"
)

// A service port's client-side resources (proxyless client listener and
// route configuration, sidecar virtual host) and its clusters (both data
// planes) are pure functions of small input values, ClientPort and
// UpstreamPort. The Index computes those values; the resources are built
// from them alone. A consumer that keeps the resources of the last inputs
// may reuse them whenever the new inputs are Equal (controller/xds/server
// does, so that a new Service costs its own resources, not the mesh's).

// ClientPort is everything the client-side configuration of one
// HTTP-family port of a local service depends on.
type ClientPort struct {
	Service mesh.NamespacedName
	Port    uint32
	// Backends are the weighted clusters of the TrafficSplit rooted at the
	// service, on this port; empty, or all at weight zero, means the
	// service's own cluster.
	Backends []WeightedBackend
	// Warming are backend clusters new to this route, or whose endpoints
	// just became ready: it refers to them (keepWarmRoute) but sends them
	// nothing yet (routes.go).
	Warming []string
	// ClusterSet makes this the port of the service's clusterset name
	// ("<svc>.<ns>.svc.clusterset.local", an MCS import) rather than of the
	// local service; it has no Backends.
	ClusterSet bool
}

// WeightedBackend is one cluster of a split with its weight, and whether
// the backend has a ready endpoint (one without is at weight 0 while
// another backend can take its share).
type WeightedBackend struct {
	Cluster string
	Weight  uint32
	Ready   bool
}

// Equal reports whether c and o produce the same resources.
func (c *ClientPort) Equal(o *ClientPort) bool {
	return c.Service == o.Service && c.Port == o.Port && c.ClusterSet == o.ClusterSet && slices.Equal(c.Backends, o.Backends) &&
		slices.Equal(c.Warming, o.Warming)
}

// Name is the proxyless client listener's and route configuration's name.
func (c *ClientPort) Name() string {
	if c.ClusterSet {
		return ClusterSetName(c.Service, c.Port)
	}
	return clientListenerName(c.Service, c.Port)
}

// Cluster is the name of the service's own cluster (or clusterset
// cluster) on this port.
func (c *ClientPort) Cluster() string {
	if c.ClusterSet {
		return ClusterSetName(c.Service, c.Port)
	}
	return ClusterName(c.Service, c.Port, "")
}

// UpstreamPort is everything the cluster of one port of a local service
// or remote export depends on, in either data plane.
type UpstreamPort struct {
	Service mesh.NamespacedName
	// Remote is the exporting cluster, "" for a local service.
	Remote string
	// ClusterSet makes this the cluster of a clusterset name's port,
	// balancing over every exporting cluster (Remote is "").
	ClusterSet bool
	Port       mesh.Port
	// SANs are the server identities clients accept; when empty, any
	// identity whose SPIFFE ID starts with SANPrefix.
	SANs      []mesh.Identity
	SANPrefix string
}

// Equal reports whether u and o produce the same clusters.
func (u *UpstreamPort) Equal(o *UpstreamPort) bool {
	return u.Service == o.Service && u.Remote == o.Remote && u.ClusterSet == o.ClusterSet && u.Port == o.Port &&
		u.SANPrefix == o.SANPrefix && slices.Equal(u.SANs, o.SANs)
}

// Name is the cluster's (and its load assignment's) name.
func (u *UpstreamPort) Name() string {
	if u.ClusterSet {
		return ClusterSetName(u.Service, u.Port.Port)
	}
	return ClusterName(u.Service, u.Port.Port, u.Remote)
}

// ClientPorts returns the inputs of every HTTP-family port of every local
// service and then of every clusterset name, in order: the ports clients
// get listeners and routes for.
func (ix *Index) ClientPorts() []ClientPort {
	out := make([]ClientPort, 0, len(ix.State.Services)+len(ix.importList))
	clientPorts(ix, func(svc *mesh.Service, p mesh.Port) {
		out = append(out, ClientPort{Service: svc.Key(), Port: p.Port, Backends: routeBackends(ix, svc, p.Port)})
	})
	for _, imp := range ix.importList {
		for _, p := range imp.Ports {
			if p.Protocol.IsHTTP() {
				out = append(out, ClientPort{Service: mesh.NamespacedName{Namespace: imp.Namespace, Name: imp.Name}, Port: p.Port, ClusterSet: true})
			}
		}
	}
	return out
}

// UpstreamPorts returns the inputs of every port of every local service
// and then every remote export (upstreams order).
func (ix *Index) UpstreamPorts() []UpstreamPort {
	out := make([]UpstreamPort, 0, len(ix.State.Services))
	for _, u := range ix.upstreams() {
		sans, prefix := serverSANs(ix, u.svc)
		for _, p := range u.svc.Ports {
			out = append(out, UpstreamPort{Service: u.svc.Key(), Remote: u.remote, Port: p, SANs: sans, SANPrefix: prefix})
		}
	}
	for _, imp := range ix.importList {
		sans, prefix := clusterSetSANs(ix, ix.ClusterSetMembers(imp), imp.Namespace)
		for _, p := range imp.Ports {
			out = append(out, UpstreamPort{Service: mesh.NamespacedName{Namespace: imp.Namespace, Name: imp.Name}, ClusterSet: true, Port: p, SANs: sans, SANPrefix: prefix})
		}
	}
	return out
}

// serverSANs returns the identities a client accepts from svc's servers:
// its workloads' identities, or, when none are known, the prefix of any
// identity of the service's namespace in the trust domain.
func serverSANs(ix *Index, svc *mesh.Service) ([]mesh.Identity, string) {
	ids := svc.Identities
	if len(ids) == 0 {
		ids = svc.EndpointIdentities() // ServerIdentities without its map
	}
	if len(ids) == 0 {
		return nil, mesh.TrustDomainPrefix(ix.State.Settings.TrustDomain) + "ns/" + svc.Namespace + "/sa/"
	}
	return ids, ""
}

// routeBackends resolves the TrafficSplit rooted at svc on port; nil when
// there is none or its weights on this port sum to zero (then the service's
// own cluster takes the traffic).
func routeBackends(ix *Index, svc *mesh.Service, port uint32) []WeightedBackend {
	split, ok := ix.splits[svc.Key()]
	if !ok {
		return nil
	}
	return splitBackends(ix, split, port)
}
