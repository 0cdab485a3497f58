package generate

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshfed/meshfed/mesh"
)

// The east-west gateway. Clients in other networks reach a service this
// cluster exports through its gateway, an Envoy that routes TLS
// connections by their SNI and never terminates them: the client's mTLS
// session runs end to end to the destination pod, which sees the client's
// own SPIFFE ID and enforces its TrafficTargets as for any other caller.
//
// The gateway gets one listener on GatewayPort: a TLS inspector reads the
// ClientHello, and one filter chain per exported service port matches its
// SNI exactly (server_names, transport_protocol "tls"; no ALPN match, for
// grpc-go offers only "h2"; no catch-all, so a connection naming anything
// else is closed). Each chain's tcp_proxy forwards to a TLS-less EDS
// cluster of that port's local endpoints. Only services this cluster
// exports (an MCS import listing it) are reachable.

// Gateway listener names and port.
const (
	GatewayListenerName = "gateway"
	GatewayPort         = 15443
	tlsInspectorName    = "envoy.filters.listener.tls_inspector"
	tcpProxyName        = "envoy.filters.network.tcp_proxy"
	// maxSNI is the longest server name TLS carries (RFC 6066: a
	// HostName is at most 255 bytes; grpc-go NACKs longer ones).
	maxSNI = 255
)

// SNI is the server name a client sends when it calls port of svc, and the
// name the destination cluster's gateway routes on:
// "outbound_.<port>_._.<name>.<namespace>.svc.cluster.local" (Istio's
// format, so that one gateway can serve both).
func SNI(svc mesh.NamespacedName, port uint32) string {
	return "outbound_." + strconv.FormatUint(uint64(port), 10) + "_._." + fqdn(svc)
}

// GatewayClusterName names the gateway's cluster of one exported port.
func GatewayClusterName(svc mesh.NamespacedName, port uint32) string {
	return "gateway|" + ClusterName(svc, port, "")
}

// ExportedPort is one port of a local service this cluster exports.
type ExportedPort struct {
	Service *mesh.Service
	Port    mesh.Port
}

// ExportedPorts returns every port of every local service that this
// cluster exports (an import lists it among the exporting clusters),
// sorted by SNI.
func ExportedPorts(ix *Index) []ExportedPort {
	self := ix.State.Settings.ClusterName
	var out []ExportedPort
	for _, imp := range ix.State.Imports {
		if !slices.Contains(imp.Clusters, self) {
			continue
		}
		svc, ok := ix.Service(mesh.NamespacedName{Namespace: imp.Namespace, Name: imp.Name})
		if !ok {
			continue
		}
		for _, p := range svc.Ports {
			out = append(out, ExportedPort{Service: svc, Port: p})
		}
	}
	slices.SortFunc(out, func(a, b ExportedPort) int {
		return cmpString(SNI(a.Service.Key(), a.Port.Port), SNI(b.Service.Key(), b.Port.Port))
	})
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Gateway is the configuration of this cluster's east-west gateway.
type Gateway struct {
	Listeners, Clusters, Endpoints []types.Resource
}

// GatewayConfig returns the gateway's listener (none when nothing is
// exported: the gateway then accepts no connection), clusters and the load
// assignments they read (those of the exported ports, as every proxy
// gets them).
func GatewayConfig(ix *Index) Gateway {
	ports := ExportedPorts(ix)
	var g Gateway
	if len(ports) == 0 {
		return g
	}
	l := &listenerv3.Listener{
		Name:    GatewayListenerName,
		Address: socketAddress("0.0.0.0", GatewayPort),
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name:       tlsInspectorName,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})},
		}},
	}
	for _, e := range ports {
		key := e.Service.Key()
		cluster := GatewayClusterName(key, e.Port.Port)
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:             SNI(key, e.Port.Port),
			FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: []string{SNI(key, e.Port.Port)}, TransportProtocol: "tls"},
			Filters: []*listenerv3.Filter{{Name: tcpProxyName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&tcpproxyv3.TcpProxy{
				StatPrefix:       cluster,
				ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
			})}}},
		})
		// The port's endpoints are the load assignment every proxy of the
		// cluster gets: the xDS server shares one copy.
		g.Clusters = append(g.Clusters, &clusterv3.Cluster{
			Name:                 cluster,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: ClusterName(key, e.Port.Port, "")},
			ConnectTimeout:       durationpb.New(5 * time.Second),
			LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		})
		g.Endpoints = append(g.Endpoints, LoadAssignment(e.Service, e.Port, ""))
	}
	g.Listeners = []types.Resource{l}
	return g
}

// ErrGatewayConfig is wrapped by every error CheckGateway returns.
var ErrGatewayConfig = errors.New("gateway configuration")

// CheckGateway checks what ValidateAll cannot see in a gateway's
// configuration and Envoy would refuse or misroute: two filter chains with
// the same match (Envoy rejects the whole listener), a server name over
// 255 bytes, a chain without an exact server name or the TLS transport
// (a catch-all), and a tcp_proxy naming a cluster that is not there, or a
// cluster without a load assignment.
func CheckGateway(g Gateway) error {
	var errs []error
	clusters, endpoints := map[string]bool{}, map[string]bool{}
	for _, r := range g.Endpoints {
		endpoints[r.(*endpointv3.ClusterLoadAssignment).GetClusterName()] = true
	}
	for _, r := range g.Clusters {
		c := r.(*clusterv3.Cluster)
		clusters[c.GetName()] = true
		if eds := c.GetEdsClusterConfig().GetServiceName(); !endpoints[eds] {
			errs = append(errs, fmt.Errorf("%w: cluster %s has no load assignment %s", ErrGatewayConfig, c.GetName(), eds))
		}
	}
	for _, r := range g.Listeners {
		l := r.(*listenerv3.Listener)
		seen := map[string]string{}
		for _, fc := range l.GetFilterChains() {
			m := fc.GetFilterChainMatch()
			if len(m.GetServerNames()) == 0 || m.GetTransportProtocol() != "tls" {
				errs = append(errs, fmt.Errorf("%w: listener %s: filter chain %s matches more than a TLS server name", ErrGatewayConfig, l.GetName(), fc.GetName()))
			}
			for _, sni := range m.GetServerNames() {
				if len(sni) > maxSNI {
					errs = append(errs, fmt.Errorf("%w: listener %s: server name of %d bytes (at most %d)", ErrGatewayConfig, l.GetName(), len(sni), maxSNI))
				}
				if prev, dup := seen[sni]; dup {
					errs = append(errs, fmt.Errorf("%w: listener %s: filter chains %s and %s both match %s", ErrGatewayConfig, l.GetName(), prev, fc.GetName(), sni))
				}
				seen[sni] = fc.GetName()
			}
			for _, f := range fc.GetFilters() {
				tp := &tcpproxyv3.TcpProxy{}
				if f.GetName() != tcpProxyName || f.GetTypedConfig().UnmarshalTo(tp) != nil {
					errs = append(errs, fmt.Errorf("%w: listener %s: filter chain %s: filter %s is not a tcp_proxy", ErrGatewayConfig, l.GetName(), fc.GetName(), f.GetName()))
					continue
				}
				if !clusters[tp.GetCluster()] {
					errs = append(errs, fmt.Errorf("%w: listener %s: filter chain %s forwards to missing cluster %s", ErrGatewayConfig, l.GetName(), fc.GetName(), tp.GetCluster()))
				}
			}
		}
	}
	return errors.Join(errs...)
}
