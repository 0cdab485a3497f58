// Package gateway is the local clusters' stand-in for the Envoy that runs
// a cluster's east-west gateway, as sandbox stands in for the kubelet: no
// Envoy binary can be had where meshfed's tests and demo run. It connects
// to meshfed-controller over ADS as Envoy would (mTLS with the gateway's
// SVID, listeners and clusters by wildcard, load assignments by name, ACK
// and NACK) and implements exactly the subset of Envoy's API that
// meshfed generates for a gateway (controller/xds/generate.GatewayConfig):
// a TLS inspector, filter chains matching exact server names with the TLS
// transport, tcp_proxy round robin over a cluster's healthy endpoints. It
// NACKs every other field, so that what meshfed generates and what the
// tests exercise cannot drift apart. It is not a product gateway.
package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ErrUnsupported is wrapped by every error that makes the gateway NACK.
var ErrUnsupported = errors.New("not supported by the gateway stand-in")

// route is one filter chain: an exact server name and the cluster its
// connections go to.
type route struct {
	sni, cluster string
}

// listener is an accepted listener: its port and routes by server name.
type listener struct {
	name   string
	port   uint32
	routes map[string]string
}

// cluster is an accepted cluster: the load assignment it reads.
type cluster struct {
	name, eds string
}

func unsupported(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUnsupported}, args...)...)
}

// fieldsBeyond reports the fields set in m other than allowed.
func fieldsBeyond(m proto.Message, allowed ...string) []string {
	var extra []string
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(allowed, string(fd.Name())) {
			extra = append(extra, string(fd.Name()))
		}
		return true
	})
	return extra
}

// parseListener accepts a listener as GatewayConfig makes it.
func parseListener(l *listenerv3.Listener) (listener, error) {
	out := listener{name: l.GetName(), routes: map[string]string{}}
	if extra := fieldsBeyond(l, "name", "address", "listener_filters", "filter_chains"); len(extra) > 0 {
		return out, unsupported("listener %s: fields %v", l.GetName(), extra)
	}
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil || sa.GetProtocol() != corev3.SocketAddress_TCP || sa.GetPortValue() == 0 {
		return out, unsupported("listener %s: address must be a TCP socket address with a port", l.GetName())
	}
	out.port = sa.GetPortValue()
	if lf := l.GetListenerFilters(); len(lf) != 1 || lf[0].GetTypedConfig() == nil ||
		!lf[0].GetTypedConfig().MessageIs(&tlsinspectorv3.TlsInspector{}) || len(fieldsBeyond(lf[0], "name", "typed_config")) > 0 {
		return out, unsupported("listener %s: listener filters must be exactly one TLS inspector", l.GetName())
	}
	insp := &tlsinspectorv3.TlsInspector{}
	if err := l.GetListenerFilters()[0].GetTypedConfig().UnmarshalTo(insp); err != nil || len(fieldsBeyond(insp)) > 0 {
		return out, unsupported("listener %s: TLS inspector options", l.GetName())
	}
	if len(l.GetFilterChains()) == 0 {
		return out, unsupported("listener %s: no filter chains", l.GetName())
	}
	for _, fc := range l.GetFilterChains() {
		r, err := parseChain(fc)
		if err != nil {
			return out, fmt.Errorf("listener %s: %w", l.GetName(), err)
		}
		if _, dup := out.routes[r.sni]; dup {
			return out, unsupported("listener %s: two filter chains match %s", l.GetName(), r.sni)
		}
		out.routes[r.sni] = r.cluster
	}
	return out, nil
}

func parseChain(fc *listenerv3.FilterChain) (route, error) {
	if extra := fieldsBeyond(fc, "name", "filter_chain_match", "filters"); len(extra) > 0 {
		return route{}, unsupported("filter chain %s: fields %v", fc.GetName(), extra)
	}
	m := fc.GetFilterChainMatch()
	if extra := fieldsBeyond(m, "server_names", "transport_protocol"); len(extra) > 0 {
		return route{}, unsupported("filter chain %s: matches on %v", fc.GetName(), extra)
	}
	if len(m.GetServerNames()) != 1 || m.GetTransportProtocol() != "tls" {
		return route{}, unsupported("filter chain %s: must match one exact server name and transport protocol tls", fc.GetName())
	}
	sni := m.GetServerNames()[0]
	if len(sni) == 0 || len(sni) > 255 || sni[0] == '*' {
		return route{}, unsupported("filter chain %s: server name %q", fc.GetName(), sni)
	}
	fs := fc.GetFilters()
	if len(fs) != 1 || fs[0].GetTypedConfig() == nil || !fs[0].GetTypedConfig().MessageIs(&tcpproxyv3.TcpProxy{}) {
		return route{}, unsupported("filter chain %s: filters must be exactly one tcp_proxy", fc.GetName())
	}
	tp := &tcpproxyv3.TcpProxy{}
	if err := fs[0].GetTypedConfig().UnmarshalTo(tp); err != nil {
		return route{}, unsupported("filter chain %s: tcp_proxy: %v", fc.GetName(), err)
	}
	if extra := fieldsBeyond(tp, "stat_prefix", "cluster"); len(extra) > 0 || tp.GetCluster() == "" {
		return route{}, unsupported("filter chain %s: tcp_proxy must name one cluster (fields %v)", fc.GetName(), extra)
	}
	return route{sni: sni, cluster: tp.GetCluster()}, nil
}

// parseCluster accepts a TLS-less EDS cluster over ADS with round robin.
func parseCluster(c *clusterv3.Cluster) (cluster, error) {
	if extra := fieldsBeyond(c, "name", "type", "eds_cluster_config", "connect_timeout", "lb_policy"); len(extra) > 0 {
		return cluster{}, unsupported("cluster %s: fields %v", c.GetName(), extra)
	}
	if c.GetType() != clusterv3.Cluster_EDS || c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
		return cluster{}, unsupported("cluster %s: must be EDS with round robin", c.GetName())
	}
	if c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil || c.GetEdsClusterConfig().GetServiceName() == "" {
		return cluster{}, unsupported("cluster %s: endpoints must come by ADS under a service name", c.GetName())
	}
	return cluster{name: c.GetName(), eds: c.GetEdsClusterConfig().GetServiceName()}, nil
}

// parseEndpoints returns the healthy endpoints of a load assignment, in
// order. Endpoints in other states are not sent connections, as in Envoy.
func parseEndpoints(cla *endpointv3.ClusterLoadAssignment) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			a, err := netip.ParseAddr(sa.GetAddress())
			if err != nil || sa.GetPortValue() == 0 || sa.GetPortValue() > 65535 {
				return nil, unsupported("load assignment %s: endpoint %q:%d", cla.GetClusterName(), sa.GetAddress(), sa.GetPortValue())
			}
			switch e.GetHealthStatus() {
			case corev3.HealthStatus_HEALTHY, corev3.HealthStatus_UNKNOWN:
				out = append(out, netip.AddrPortFrom(a, uint16(sa.GetPortValue())))
			}
		}
	}
	return out, nil
}
