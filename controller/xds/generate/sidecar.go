package generate

import (
	"fmt"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshfed/meshfed/mesh"
)

// Envoy sidecar ports and names (iptables redirects outbound traffic to
// SidecarOutboundPort and inbound traffic to SidecarInboundPort, as OSM did).
const (
	SidecarOutboundPort     = 15001
	SidecarInboundPort      = 15003
	SidecarOutboundListener = "outbound-listener"
	SidecarInboundListener  = "inbound-listener"
	httpProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	originalDstFilterName   = "envoy.filters.listener.original_dst"
)

// SidecarOutboundRouteName names the outbound route configuration of a port.
func SidecarOutboundRouteName(port uint32) string { return fmt.Sprintf("outbound|%d", port) }

// SidecarInboundName names the inbound route configuration and local
// cluster of a workload port.
func SidecarInboundName(port uint32) string { return fmt.Sprintf("inbound|%d", port) }

func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsSource()}
}

func originalDst() []*listenerv3.ListenerFilter {
	return []*listenerv3.ListenerFilter{{Name: originalDstFilterName, ConfigType: &listenerv3.ListenerFilter_TypedConfig{
		TypedConfig: mustAny(&originaldstv3.OriginalDst{}),
	}}}
}

func hcmFilter(statPrefix string, hcm *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	hcm.StatPrefix = statPrefix
	return &listenerv3.Filter{Name: hcmFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}}
}

// outboundPorts returns the distinct ports of cps, sorted.
func outboundPorts(cps []ClientPort) []uint32 {
	seen := map[uint32]bool{}
	var ports []uint32
	for _, c := range cps {
		if !seen[c.Port] {
			seen[c.Port] = true
			ports = append(ports, c.Port)
		}
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	return ports
}

// SidecarOutboundListeners returns the outbound listener: one filter chain
// per service port, routing HTTP by RDS (SidecarOutboundRouteName).
func SidecarOutboundListeners(ix *Index) []types.Resource {
	if l := SidecarOutbound(ix.ClientPorts()); l != nil {
		return []types.Resource{l}
	}
	return nil
}

// SidecarOutbound is the outbound listener for the client ports
// cps (nil if there are none).
func SidecarOutbound(cps []ClientPort) *listenerv3.Listener {
	ports := outboundPorts(cps)
	if len(ports) == 0 {
		return nil
	}
	l := &listenerv3.Listener{
		Name:             SidecarOutboundListener,
		Address:          socketAddress("0.0.0.0", SidecarOutboundPort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		ListenerFilters:  originalDst(),
	}
	for _, port := range ports {
		name := SidecarOutboundRouteName(port)
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:             name,
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(port)},
			Filters: []*listenerv3.Filter{hcmFilter(name, &hcmv3.HttpConnectionManager{
				RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: adsSource(), RouteConfigName: name}},
				HttpFilters:    []*hcmv3.HttpFilter{routerFilter()},
			})},
		})
	}
	return l
}

// SidecarOutboundRoutes returns a route configuration per port with one
// virtual host per service on that port (its qualified names, with and
// without the port), forwarding to its cluster or its TrafficSplit's
// weighted backends.
func SidecarOutboundRoutes(ix *Index) []types.Resource {
	cps := ix.ClientPorts()
	byPort := map[uint32][]*routev3.VirtualHost{}
	for i := range cps {
		byPort[cps[i].Port] = append(byPort[cps[i].Port], SidecarVirtualHost(&cps[i]))
	}
	out := make([]types.Resource, 0, len(byPort))
	for _, port := range outboundPorts(cps) {
		rc := SidecarOutboundRoute(port)
		rc.VirtualHosts = byPort[port]
		out = append(out, rc)
	}
	return out
}

// SidecarOutboundRoute is the outbound route configuration of port
// without its virtual hosts (SidecarVirtualHost of each client port on
// port, in ClientPorts order).
func SidecarOutboundRoute(port uint32) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: SidecarOutboundRouteName(port), ValidateClusters: wrapperspb.Bool(false)}
}

// SidecarVirtualHost is the outbound virtual host of one client port.
func SidecarVirtualHost(c *ClientPort) *routev3.VirtualHost {
	var domains []string
	hosts := []string{c.Service.Name + "." + c.Service.Namespace, c.Service.Name + "." + c.Service.Namespace + ".svc", fqdn(c.Service)}
	if c.ClusterSet {
		hosts = []string{ClusterSetFQDN(c.Service)}
	}
	for _, host := range hosts {
		domains = append(domains, host, fmt.Sprintf("%s:%d", host, c.Port))
	}
	return &routev3.VirtualHost{
		Name:    c.Cluster(),
		Domains: domains,
		Routes:  []*routev3.Route{{Name: "default", Match: prefixMatch("/"), Action: routeAction(c)}},
	}
}

// SidecarClusters returns an EDS cluster per port of every local service and
// remote export, with upstream mTLS: the SVID and trust bundle come by SDS
// (SDSIdentitySecret, SDSTrustBundleSecret) and the server must present one
// of the service's SPIFFE IDs. gRPC and HTTP/2 ports speak HTTP/2 upstream.
func SidecarClusters(ix *Index) []types.Resource {
	var out []types.Resource
	for _, u := range ix.UpstreamPorts() {
		out = append(out, SidecarCluster(&u))
	}
	return out
}

// SidecarCluster is the cluster of one upstream port.
func SidecarCluster(u *UpstreamPort) *clusterv3.Cluster {
	var sans []*tlsv3.SubjectAltNameMatcher
	for _, m := range sanMatchers(u) {
		sans = append(sans, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: m})
	}
	name := u.Name()
	tlsCtx := &tlsv3.UpstreamTlsContext{
		Sni: SNI(u.Service, u.Port.Port),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(SDSIdentitySecret)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
				ValidationContextSdsSecretConfig: sdsSecret(SDSTrustBundleSecret),
			}},
		},
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name},
		LbPolicy:             defaultClusterLBPol,
		OutlierDetection:     outlierDetection(),
		TransportSocket: &corev3.TransportSocket{Name: tlsTransportName, ConfigType: &corev3.TransportSocket_TypedConfig{
			TypedConfig: mustAny(tlsCtx),
		}},
	}
	if u.Port.Protocol == mesh.ProtocolGRPC || u.Port.Protocol == mesh.ProtocolHTTP2 {
		c.TypedExtensionProtocolOptions = http2Options()
	}
	if u.ClusterSet {
		// Envoy honours locality weights (one locality per exporting
		// cluster) only when told to.
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
			LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{},
		}}
	}
	return c
}

// SidecarInboundConfig is the identity-specific part of a sidecar's
// configuration.
type SidecarInboundConfig struct {
	Listeners, Routes, Clusters []types.Resource
}

// SidecarInbound returns the inbound listener of the workloads of id: per
// workload port a filter chain that requires mTLS (SVID and trust bundle by
// SDS), enforces the TrafficTargets naming id with the RBAC filter (deny by
// default; permissive mode admits every peer of the trust domain) and
// forwards to the local workload through a static cluster.
func SidecarInbound(ix *Index, id mesh.Identity) SidecarInboundConfig {
	var ports []uint32
	proto := map[uint32]mesh.Protocol{}
	for _, a := range ix.ServerAddresses(id) {
		if _, ok := proto[a.Port]; !ok {
			proto[a.Port] = a.Proto
			ports = append(ports, a.Port)
		}
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	if len(ports) == 0 {
		return SidecarInboundConfig{}
	}
	var out SidecarInboundConfig
	rbac := rbacFilter(ix, id)
	tlsCtx := mustAny(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(SDSIdentitySecret)},
			ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: sdsSecret(SDSTrustBundleSecret)},
		},
	})
	l := &listenerv3.Listener{
		Name:             SidecarInboundListener,
		Address:          socketAddress("0.0.0.0", SidecarInboundPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		ListenerFilters:  originalDst(),
	}
	for _, port := range ports {
		name := SidecarInboundName(port)
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:             name,
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(port)},
			Filters: []*listenerv3.Filter{hcmFilter(name, &hcmv3.HttpConnectionManager{
				RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: adsSource(), RouteConfigName: name}},
				HttpFilters:    []*hcmv3.HttpFilter{rbac, routerFilter()},
			})},
			TransportSocket: &corev3.TransportSocket{Name: tlsTransportName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx}},
		})
		out.Routes = append(out.Routes, &routev3.RouteConfiguration{
			Name: name,
			VirtualHosts: []*routev3.VirtualHost{{
				Name: name, Domains: []string{"*"},
				Routes: []*routev3.Route{{Name: "local", Match: prefixMatch("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name},
				}}}},
			}},
		})
		local := &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			LbPolicy:             defaultClusterLBPol,
			LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress("127.0.0.1", port),
				}}}},
			}}},
		}
		if p := proto[port]; p == mesh.ProtocolGRPC || p == mesh.ProtocolHTTP2 {
			local.TypedExtensionProtocolOptions = http2Options()
		}
		out.Clusters = append(out.Clusters, local)
	}
	out.Listeners = []types.Resource{l}
	return out
}

// http2Options makes a cluster speak HTTP/2 upstream.
func http2Options() map[string]*anypb.Any {
	return map[string]*anypb.Any{httpProtocolOptionsName: mustAny(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})}
}
