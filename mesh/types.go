package mesh

import "fmt"

// NamespacedName names a namespaced object.
type NamespacedName struct {
	Namespace string
	Name      string
}

// String returns "namespace/name".
func (n NamespacedName) String() string { return n.Namespace + "/" + n.Name }

// Protocol is the application protocol of a service port. It decides which
// generator features apply (HTTP routing and RBAC on HTTP, gRPC and HTTP2;
// port-level rules only on TCP).
type Protocol string

// Protocols a port may declare (Kubernetes appProtocol or the port name
// prefix, as OSM read them).
const (
	ProtocolHTTP  Protocol = "http"
	ProtocolHTTP2 Protocol = "http2"
	ProtocolGRPC  Protocol = "grpc"
	ProtocolTCP   Protocol = "tcp"
)

// IsHTTP reports whether requests on the protocol are HTTP requests
// (HTTP/1.1, HTTP/2 or gRPC), so HTTP route matches apply to them.
func (p Protocol) IsHTTP() bool {
	return p == ProtocolHTTP || p == ProtocolHTTP2 || p == ProtocolGRPC || p == ""
}

// Port is one port of a Service.
type Port struct {
	// Name is the service port's name; endpoints refer to it. May be empty
	// for a service with one port.
	Name string
	// Port is the port clients dial on the service's name.
	Port uint32
	// TargetPort is the port the workloads listen on, unless an endpoint
	// says otherwise (Endpoint.TargetPorts). Zero means the same as Port.
	TargetPort uint32
	// Protocol is the application protocol; empty means HTTP.
	Protocol Protocol
}

// Target returns the port workloads listen on by default.
func (p Port) Target() uint32 {
	if p.TargetPort != 0 {
		return p.TargetPort
	}
	return p.Port
}

// Locality is where an endpoint runs, as Kubernetes topology labels say.
type Locality struct {
	Region  string
	Zone    string
	SubZone string
}

// Endpoint is one workload address backing a Service.
type Endpoint struct {
	// Address is the workload's IP address.
	Address string
	// TargetPorts overrides Port.TargetPort per service port name for this
	// endpoint (EndpointSlices may carry different numbers per workload).
	// Nil means every port uses its TargetPort.
	TargetPorts map[string]uint32
	// Cluster is the name of the cluster the workload runs in.
	Cluster string
	// Network names the flat network the address is reachable on.
	Network string
	// Locality is the workload's region and zone.
	Locality Locality
	// Ready is the EndpointSlice's ready condition. Only ready endpoints
	// receive new traffic.
	Ready bool
	// Terminating marks an endpoint that is shutting down (draining).
	Terminating bool
	// Identity is the workload's identity (its pod's ServiceAccount); empty
	// if unknown.
	Identity Identity
	// Pod names the workload, for diagnostics only; may be empty.
	Pod string
	// Stands is how many ready workloads this address stands for: 0 or 1
	// for a workload's own address; for another network's east-west
	// gateway, its share of that cluster's ready workloads, so that
	// clients balance over clusters by their workloads, not their
	// gateways (ThroughGateways).
	Stands uint32
}

// Weight is how many ready workloads e counts for when clients balance
// over localities: 0 if it is not ready, else Stands or 1.
func (e Endpoint) Weight() uint32 {
	switch {
	case !e.Ready || e.Terminating:
		return 0
	case e.Stands > 0:
		return e.Stands
	}
	return 1
}

// TargetPort returns the port this endpoint listens on for service port p.
func (e Endpoint) TargetPort(p Port) uint32 {
	if tp, ok := e.TargetPorts[p.Name]; ok && tp != 0 {
		return tp
	}
	return p.Target()
}

// Service is a Kubernetes Service in a meshed namespace (or a service
// another cluster exports), with its endpoints.
type Service struct {
	Namespace string
	Name      string
	// Cluster is the cluster the service and its endpoints belong to.
	Cluster string
	Ports   []Port
	// Identities are the identities of the workloads backing the service,
	// sorted; clients accept a server that presents any of them. When empty,
	// generators use the identities found on Endpoints.
	Identities []Identity
	// Endpoints are the workloads backing the service, sorted by address.
	Endpoints []Endpoint
}

// Key returns the service's namespace and name.
func (s Service) Key() NamespacedName { return NamespacedName{s.Namespace, s.Name} }

// FQDN returns "<name>.<namespace>.svc.cluster.local", the name clients in
// the cluster dial.
func (s Service) FQDN() string { return s.Name + "." + s.Namespace + ".svc.cluster.local" }

// Port returns the port numbered port, and whether there is one.
func (s Service) Port(port uint32) (Port, bool) {
	for _, p := range s.Ports {
		if p.Port == port {
			return p, true
		}
	}
	return Port{}, false
}

// ServerIdentities returns Identities, or, when empty, the distinct
// identities of the endpoints in order of first appearance.
func (s Service) ServerIdentities() []Identity {
	if len(s.Identities) > 0 {
		return s.Identities
	}
	var out []Identity
	seen := map[Identity]bool{}
	for _, e := range s.Endpoints {
		if e.Identity != "" && !seen[e.Identity] {
			seen[e.Identity] = true
			out = append(out, e.Identity)
		}
	}
	return out
}

// RouteKind is the kind of object a TrafficTarget rule refers to.
type RouteKind string

// Route kinds, as SMI names them.
const (
	KindHTTPRouteGroup RouteKind = "HTTPRouteGroup"
	KindTCPRoute       RouteKind = "TCPRoute"
)

// HTTPMatch is one named match of an HTTPRouteGroup (SMI specs v1alpha4).
type HTTPMatch struct {
	Name string
	// PathRegex is an RE2 regular expression the whole request path must
	// match; empty matches every path. For gRPC the path is
	// "/<package>.<Service>/<Method>".
	PathRegex string
	// Methods are HTTP methods; empty or "*" matches every method. gRPC
	// requests are always POST.
	Methods []string
	// Headers maps a header name to an RE2 regular expression its value
	// must match.
	Headers map[string]string
}

// HTTPRouteGroup is an SMI HTTPRouteGroup: named HTTP matches that
// TrafficTarget rules select.
type HTTPRouteGroup struct {
	Namespace string
	Name      string
	Matches   []HTTPMatch
}

// TCPRoute is an SMI TCPRoute: the destination ports a rule allows; empty
// means every port.
type TCPRoute struct {
	Namespace string
	Name      string
	Ports     []uint32
}

// TrafficTargetRule selects routes of a route object in the TrafficTarget's
// namespace.
type TrafficTargetRule struct {
	Kind RouteKind
	Name string
	// Matches names matches of an HTTPRouteGroup; empty means all of them.
	Matches []string
}

// TrafficTarget is an SMI TrafficTarget: the source identities may reach the
// destination identity's workloads on the routes its rules select. It lives
// in the destination's namespace.
type TrafficTarget struct {
	Namespace   string
	Name        string
	Destination Identity
	Sources     []Identity
	Rules       []TrafficTargetRule
}

// SplitBackend is one weighted backend of a TrafficSplit.
type SplitBackend struct {
	// Service names a service in the split's namespace.
	Service string
	// Cluster, when set, picks that cluster's export of Service (from
	// State.Remote or the local cluster); empty means the local service.
	Cluster string
	// Weight is the backend's relative weight; zero keeps the backend
	// configured but sends it nothing.
	Weight int64
}

// TrafficSplit is an SMI TrafficSplit: requests to the root service are
// shared among the backends by weight.
type TrafficSplit struct {
	Namespace string
	Name      string
	// Service is the root service's name, in the split's namespace.
	Service  string
	Backends []SplitBackend
}

// Import is an MCS ServiceImport: a service exported by one or more
// clusters, reachable as "<name>.<namespace>.svc.clusterset.local".
type Import struct {
	Namespace string
	Name      string
	Ports     []Port
	// Clusters are the exporting clusters, sorted.
	Clusters []string
}

// ClusterCatalog is what one remote cluster exports, as federation
// received it.
type ClusterCatalog struct {
	// Cluster is the exporting cluster's name.
	Cluster string
	// Network is the network its endpoints are reachable on.
	Network string
	// Version increases with every change the cluster publishes.
	Version uint64
	// Services are its exported services with their endpoints; each has
	// Cluster set to the catalog's cluster.
	Services []Service
}

// Settings are the mesh-wide settings from MeshConfig and installation.
type Settings struct {
	// MeshName names the mesh (meshfed install --mesh-name).
	MeshName string
	// ClusterName is the local cluster's name in the federation.
	ClusterName string
	// Network is the local cluster's network name (DefaultNetwork unless
	// MeshConfig spec.federation.network says otherwise).
	Network string
	// TrustDomain is the SPIFFE trust domain of all identities.
	TrustDomain string
	// PermissiveTrafficPolicy allows every authenticated mesh peer to reach
	// every meshed workload; mTLS stays required.
	PermissiveTrafficPolicy bool
	// ClusterSetLocalFirst sends clients of a "<svc>.<ns>.svc.clusterset.local"
	// name to the local cluster's ready endpoints while it has any, and to
	// the other exporting clusters only when it has none. When false, every
	// exporting cluster takes a share of the requests proportional to its
	// ready endpoints.
	ClusterSetLocalFirst bool
}

// State is everything the control plane knows about the mesh at one
// moment. It is immutable by convention: whoever builds one hands it out and
// never changes it (nor the slices and maps it holds) again.
type State struct {
	Settings Settings
	// Services are the local cluster's meshed services, sorted by
	// namespace and name.
	Services        []Service
	TrafficTargets  []TrafficTarget
	HTTPRouteGroups []HTTPRouteGroup
	TCPRoutes       []TCPRoute
	TrafficSplits   []TrafficSplit
	Imports         []Import
	// Remote holds the catalogs of the other clusters by cluster name.
	Remote map[string]ClusterCatalog
	// MeshedNamespaces are the local namespaces the mesh monitors (label
	// meshfed.io/monitored-by), sorted. Permissive mode admits only
	// identities of meshed namespaces.
	MeshedNamespaces []string
}

// Service returns the local service namespace/name, if it exists.
func (s *State) Service(namespace, name string) (Service, bool) {
	for _, svc := range s.Services {
		if svc.Namespace == namespace && svc.Name == name {
			return svc, true
		}
	}
	return Service{}, false
}

// RemoteService returns the service namespace/name that cluster exports, if
// it does. The local cluster's name finds the local service.
func (s *State) RemoteService(cluster, namespace, name string) (Service, bool) {
	if cluster == "" || cluster == s.Settings.ClusterName {
		return s.Service(namespace, name)
	}
	cat, ok := s.Remote[cluster]
	if !ok {
		return Service{}, false
	}
	for _, svc := range cat.Services {
		if svc.Namespace == namespace && svc.Name == name {
			return svc, true
		}
	}
	return Service{}, false
}

// ObjectKind names the kind of a mesh object in problems.
type ObjectKind string

// Kinds of objects Validate reports on.
const (
	ObjectService        ObjectKind = "service"
	ObjectTrafficTarget  ObjectKind = "traffictarget"
	ObjectHTTPRouteGroup ObjectKind = "httproutegroup"
	ObjectTCPRoute       ObjectKind = "tcproute"
	ObjectTrafficSplit   ObjectKind = "trafficsplit"
	ObjectSettings       ObjectKind = "settings"
)

// Problem is one reason an object cannot be served. The controller reports
// it (Event, log) and the object is skipped; the rest of the mesh is served.
type Problem struct {
	Kind      ObjectKind
	Namespace string
	Name      string
	Err       error
}

// Error says what is wrong with which object, e.g.
// "trafficsplit bookstore/bookstore-split: backend bookstore-v3: no such service".
func (p Problem) Error() string {
	return fmt.Sprintf("%s %s/%s: %v", p.Kind, p.Namespace, p.Name, p.Err)
}

// Unwrap returns the underlying error.
func (p Problem) Unwrap() error { return p.Err }

// DefaultNetwork is the network of a cluster whose MeshConfig names none:
// clusters on the same network reach each other's pod addresses directly.
const DefaultNetwork = "default"
