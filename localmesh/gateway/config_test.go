package gateway

import (
	"errors"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
)

// meshfed's own gateway configuration, as GatewayConfig makes it.
func generated(t *testing.T) (*listenerv3.Listener, *clusterv3.Cluster) {
	t.Helper()
	s := mesh.State{
		Settings: mesh.Settings{ClusterName: "east", TrustDomain: td},
		Services: []mesh.Service{{Namespace: "bookstore", Name: "bookstore", Cluster: "east",
			Ports: []mesh.Port{{Name: "grpc", Port: 14001, Protocol: mesh.ProtocolGRPC}}}},
		Imports: []mesh.Import{{Namespace: "bookstore", Name: "bookstore", Clusters: []string{"east"}}},
	}
	g := generate.GatewayConfig(generate.NewIndex(s))
	return g.Listeners[0].(*listenerv3.Listener), g.Clusters[0].(*clusterv3.Cluster)
}

// The stand-in accepts exactly what meshfed generates and refuses (NACKs)
// any other field of Envoy's API, so that a change to the generated
// configuration cannot pass unnoticed.
func TestStandInRefusesWhatItDoesNotImplement(t *testing.T) {
	l, c := generated(t)
	if _, err := parseListener(l); err != nil {
		t.Fatalf("meshfed's listener: %v", err)
	}
	if _, err := parseCluster(c); err != nil {
		t.Fatalf("meshfed's cluster: %v", err)
	}
	tlsSocket := &corev3.TransportSocket{Name: "envoy.transport_sockets.tls"}
	if a, err := anypb.New(&tlsv3.UpstreamTlsContext{}); err == nil {
		tlsSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: a}
	}
	for _, tc := range []struct {
		name     string
		listener func(*listenerv3.Listener)
		cluster  func(*clusterv3.Cluster)
	}{
		{name: "a default filter chain (catch-all)", listener: func(l *listenerv3.Listener) { l.DefaultFilterChain = l.FilterChains[0] }},
		{name: "a match on ALPN", listener: func(l *listenerv3.Listener) {
			l.FilterChains[0].FilterChainMatch.ApplicationProtocols = []string{"h2"}
		}},
		{name: "a wildcard server name", listener: func(l *listenerv3.Listener) {
			l.FilterChains[0].FilterChainMatch.ServerNames = []string{"*.svc.cluster.local"}
		}},
		{name: "no TLS inspector", listener: func(l *listenerv3.Listener) { l.ListenerFilters = nil }},
		{name: "TLS terminated at the gateway", listener: func(l *listenerv3.Listener) { l.FilterChains[0].TransportSocket = tlsSocket }},
		{name: "two chains, one name", listener: func(l *listenerv3.Listener) {
			l.FilterChains = append(l.FilterChains, proto.Clone(l.FilterChains[0]).(*listenerv3.FilterChain))
		}},
		{name: "an upstream TLS cluster", cluster: func(c *clusterv3.Cluster) { c.TransportSocket = tlsSocket }},
		{name: "least request balancing", cluster: func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST }},
		{name: "a static cluster", cluster: func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, c := generated(t)
			var err error
			if tc.listener != nil {
				tc.listener(l)
				_, err = parseListener(l)
			} else {
				tc.cluster(c)
				_, err = parseCluster(c)
			}
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("accepted (err %v); the stand-in must NACK it", err)
			}
			t.Log(err)
		})
	}
}
