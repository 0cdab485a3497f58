package generate

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshfed/meshfed/mesh"
)

// Well-known filter and transport socket names.
const (
	routerFilterName    = "envoy.filters.http.router"
	rbacFilterName      = "envoy.filters.http.rbac"
	hcmFilterName       = "envoy.filters.network.http_connection_manager"
	tlsTransportName    = "envoy.transport_sockets.tls"
	inboundRouteName    = "inbound"
	inboundVirtualHost  = "inbound"
	defaultClusterLBPol = clusterv3.Cluster_ROUND_ROBIN
)

// mustAny packs m, marshaled deterministically (so that equal content —
// an RBAC filter's policy map — packs to equal bytes and hashes equal); it
// panics only on a programming error (an unregistered message type), which
// every golden test would catch.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(fmt.Sprintf("generate: pack %T: %v", m, err))
	}
	return a
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func routerFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: routerFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}
}

// clientPorts calls f for every HTTP-family port of every local service, in
// order; these are the ports clients get listeners and routes for.
func clientPorts(ix *Index, f func(svc *mesh.Service, p mesh.Port)) {
	for i := range ix.State.Services {
		svc := &ix.State.Services[i]
		for _, p := range svc.Ports {
			if p.Protocol.IsHTTP() {
				f(svc, p)
			}
		}
	}
}

// ProxylessClientListeners returns one ApiListener per HTTP-family service
// port, named for the target clients dial, that takes its routes by RDS.
func ProxylessClientListeners(ix *Index) []types.Resource {
	var out []types.Resource
	for _, c := range ix.ClientPorts() {
		out = append(out, ProxylessClientListener(&c))
	}
	return out
}

// ProxylessClientListener is the ApiListener of one client port.
func ProxylessClientListener(c *ClientPort) *listenerv3.Listener {
	name := c.Name()
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource(), RouteConfigName: name,
		}},
		HttpFilters: []*hcmv3.HttpFilter{routerFilter()},
	}
	return &listenerv3.Listener{
		Name:        name,
		ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)},
	}
}

// ProxylessRoutes returns the route configuration of every client
// listener: all requests go to the service's cluster, or are shared among a
// TrafficSplit's backends by weight.
func ProxylessRoutes(ix *Index) []types.Resource {
	var out []types.Resource
	for _, c := range ix.ClientPorts() {
		out = append(out, ProxylessRoute(&c))
	}
	return out
}

// ProxylessRoute is the route configuration of one client port: its
// default route, then the route that keeps the clusters it may move to
// known to grpc-go (keepWarmRoute).
func ProxylessRoute(c *ClientPort) *routev3.RouteConfiguration {
	name := c.Name()
	routes := []*routev3.Route{{Name: "default", Match: prefixMatch("/"), Action: routeAction(c)}}
	if warm := keepWarmRoute(c); warm != nil {
		routes = append(routes, warm)
	}
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: []string{name},
			Routes:  routes,
		}},
	}
}

func prefixMatch(prefix string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}}
}

// splitBackends resolves a split's backends on port to cluster names and
// uint32 weights (scaled down if the sum would not fit). Backends without
// the port are left out.
func splitBackends(ix *Index, ts *mesh.TrafficSplit, port uint32) []WeightedBackend {
	var sum int64
	for _, b := range ts.Backends {
		sum += b.Weight
	}
	scale := int64(1)
	for sum/scale > 1<<31 {
		scale *= 2
	}
	var out []WeightedBackend
	anyReady := false
	for _, b := range ts.Backends {
		remote := b.Cluster
		if remote == ix.State.Settings.ClusterName {
			remote = ""
		}
		svc, ok := ix.RemoteService(remote, mesh.NamespacedName{Namespace: ts.Namespace, Name: b.Service})
		if !ok {
			continue
		}
		if _, ok := svc.Port(port); !ok {
			continue
		}
		r := svc.HasReady()
		out = append(out, WeightedBackend{
			Cluster: ClusterName(svc.Key(), port, remote),
			Weight:  uint32(b.Weight / scale),
			Ready:   r,
		})
		anyReady = anyReady || (r && b.Weight > 0)
	}
	// A backend with no ready endpoint (scaled to zero, or a lost cluster's
	// export kept without endpoints) gets no traffic while another backend
	// can take it; it stays in the list at weight 0, and the keep-warm
	// route names it, so that grpc-go keeps its cluster and does not fail
	// RPCs when it comes back (routes.go).
	if anyReady {
		for i := range out {
			if !out[i].Ready {
				out[i].Weight = 0
			}
		}
	}
	return out
}

// sanMatchers are the identities a client accepts from a service's
// servers: its workloads' identities, or, when none are known, any identity
// of the service's namespace in the trust domain.
func sanMatchers(u *UpstreamPort) []*matcherv3.StringMatcher {
	if len(u.SANs) == 0 {
		return []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: u.SANPrefix}}}
	}
	out := make([]*matcherv3.StringMatcher, 0, len(u.SANs))
	for _, id := range u.SANs {
		out = append(out, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: string(id)}})
	}
	return out
}

// ProxylessClusters returns an EDS cluster per port of every local service
// and remote export, with upstream mTLS through grpc-go's certificate
// provider instances and a SAN match on the server's SPIFFE IDs.
func ProxylessClusters(ix *Index) []types.Resource {
	var out []types.Resource
	for _, u := range ix.UpstreamPorts() {
		out = append(out, ProxylessCluster(&u))
	}
	return out
}

// ProxylessCluster is the cluster of one upstream port.
func ProxylessCluster(u *UpstreamPort) *clusterv3.Cluster {
	name := u.Name()
	tlsCtx := &tlsv3.UpstreamTlsContext{Sni: SNI(u.Service, u.Port.Port), CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: ProxylessIdentityProvider},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: ProxylessRootProvider},
			MatchSubjectAltNames:          sanMatchers(u),
		}},
	}}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name},
		LbPolicy:             defaultClusterLBPol,
		// No outlier detection for grpc-go: see outlier.go.
		TransportSocket: &corev3.TransportSocket{Name: tlsTransportName, ConfigType: &corev3.TransportSocket_TypedConfig{
			TypedConfig: mustAny(tlsCtx),
		}},
	}
}

// Endpoints returns the cluster load assignment of every cluster that
// ProxylessClusters and SidecarClusters name; both data planes share them.
func Endpoints(ix *Index) []types.Resource {
	var out []types.Resource
	for _, u := range ix.upstreams() {
		for _, p := range u.svc.Ports {
			out = append(out, LoadAssignment(u.svc, p, u.remote))
		}
	}
	return append(out, ClusterSetEndpoints(ix)...)
}

// LoadAssignment returns the endpoints of one service port, grouped by
// locality: one locality per (cluster, region, zone, sub-zone), whose
// sub_zone is "<cluster>" or "<cluster>/<sub-zone>" so that two clusters'
// zones never merge, and whose weight is its number of ready endpoints
// (grpc-go honours locality weights, not endpoint weights; counting
// endpoints that take no traffic would overload a zone's ready ones; an
// east-west gateway's address counts for the workloads it stands for).
// Ready endpoints are HEALTHY, terminating ones DRAINING, the rest
// UNHEALTHY.
func LoadAssignment(svc *mesh.Service, p mesh.Port, remote string) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: ClusterName(svc.Key(), p.Port, remote)}
	type locKey struct{ region, zone, subZone string }
	index := map[locKey]int{}
	for _, ep := range svc.Endpoints {
		loc := locKey{region: ep.Locality.Region, zone: ep.Locality.Zone, subZone: ep.Cluster}
		if ep.Locality.SubZone != "" {
			loc.subZone += "/" + ep.Locality.SubZone
		}
		i, ok := index[loc]
		if !ok {
			i = len(cla.Endpoints)
			index[loc] = i
			cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
				Locality: &corev3.Locality{Region: loc.region, Zone: loc.zone, SubZone: loc.subZone},
			})
		}
		health := corev3.HealthStatus_UNHEALTHY
		switch {
		case ep.Terminating:
			health = corev3.HealthStatus_DRAINING
		case ep.Ready:
			health = corev3.HealthStatus_HEALTHY
		}
		l := cla.Endpoints[i]
		l.LbEndpoints = append(l.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddress(ep.Address, ep.TargetPort(p)),
			}},
			HealthStatus: health,
		})
	}
	weights := make([]uint32, len(cla.Endpoints))
	for _, ep := range svc.Endpoints {
		loc := locKey{region: ep.Locality.Region, zone: ep.Locality.Zone, subZone: ep.Cluster}
		if ep.Locality.SubZone != "" {
			loc.subZone += "/" + ep.Locality.SubZone
		}
		weights[index[loc]] += ep.Weight()
	}
	for i, l := range cla.Endpoints {
		ready := weights[i]
		// A locality with nothing ready takes no traffic in grpc-go (it is
		// not READY) whatever its weight; weights must be ≥ 1.
		l.LoadBalancingWeight = wrapperspb.UInt32(max(ready, 1))
	}
	return cla
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// rbacFilter is the RBAC HTTP filter enforcing access to dest.
func rbacFilter(ix *Index, dest mesh.Identity) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: rbacFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{
		TypedConfig: mustAny(&rbacfilterv3.RBAC{Rules: accessRules(ix, dest)}),
	}}
}

// ProxylessServerListeners returns, for every address the workloads of id
// serve on, the listener grpc-go's xDS server asks for: mTLS with a client
// certificate required, then the RBAC filter enforcing the TrafficTargets
// whose destination is id (deny by default; permissive mode admits every
// peer of the trust domain).
func ProxylessServerListeners(ix *Index, id mesh.Identity) []types.Resource {
	addrs := ix.ServerAddresses(id)
	if len(addrs) == 0 {
		return nil
	}
	rbac := rbacFilter(ix, id)
	tlsCtx := mustAny(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: ProxylessIdentityProvider},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: ProxylessRootProvider},
			}},
		},
	})
	out := make([]types.Resource, 0, len(addrs))
	for _, a := range addrs {
		hcm := &hcmv3.HttpConnectionManager{
			StatPrefix: "inbound",
			RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
				Name: inboundRouteName,
				VirtualHosts: []*routev3.VirtualHost{{
					Name: inboundVirtualHost, Domains: []string{"*"},
					Routes: []*routev3.Route{{Match: prefixMatch("/"), Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}}}},
				}},
			}},
			HttpFilters: []*hcmv3.HttpFilter{rbac, routerFilter()},
		}
		out = append(out, &listenerv3.Listener{
			Name:    ServerListenerName(a.IP, a.Port),
			Address: socketAddress(a.IP, a.Port),
			FilterChains: []*listenerv3.FilterChain{{
				Name:    "inbound-mtls",
				Filters: []*listenerv3.Filter{{Name: hcmFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}}},
				TransportSocket: &corev3.TransportSocket{Name: tlsTransportName, ConfigType: &corev3.TransportSocket_TypedConfig{
					TypedConfig: tlsCtx,
				}},
			}},
		})
	}
	return out
}
