package generate

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/mesh"
)

// gatewayState has bookstore (exported by this cluster) and bookbuyer
// (not exported).
func gatewayState() mesh.State {
	ep := func(ip string) mesh.Endpoint { return mesh.Endpoint{Address: ip, Cluster: "east", Ready: true} }
	return mesh.State{
		Settings: mesh.Settings{ClusterName: "east", TrustDomain: "cluster.local"},
		Services: []mesh.Service{
			{Namespace: "bookstore", Name: "bookstore", Cluster: "east", Ports: []mesh.Port{{Name: "grpc", Port: 14001, Protocol: mesh.ProtocolGRPC}, {Name: "metrics", Port: 9090, Protocol: mesh.ProtocolHTTP}},
				Endpoints: []mesh.Endpoint{ep("10.244.1.10")}},
			{Namespace: "bookbuyer", Name: "bookbuyer", Cluster: "east", Ports: []mesh.Port{{Name: "http", Port: 80, Protocol: mesh.ProtocolHTTP}},
				Endpoints: []mesh.Endpoint{ep("10.244.1.20")}},
		},
		Imports: []mesh.Import{
			{Namespace: "bookstore", Name: "bookstore", Clusters: []string{"east", "west"}},
			{Namespace: "bookwarehouse", Name: "bookwarehouse", Clusters: []string{"west"}},
		},
	}
}

// The gateway routes exactly the ports of the services this cluster
// exports, by SNI, and nothing else.
func TestGatewayRoutesOnlyExportedPorts(t *testing.T) {
	g := GatewayConfig(NewIndex(gatewayState()))
	if err := CheckGateway(g); err != nil {
		t.Fatal(err)
	}
	if len(g.Listeners) != 1 {
		t.Fatalf("%d listeners, want 1", len(g.Listeners))
	}
	var got []string
	for _, fc := range g.Listeners[0].(*listenerv3.Listener).FilterChains {
		got = append(got, fc.FilterChainMatch.ServerNames...)
	}
	want := []string{"outbound_.14001_._.bookstore.bookstore.svc.cluster.local", "outbound_.9090_._.bookstore.bookstore.svc.cluster.local"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("server names %v, want %v", got, want)
	}

	s := gatewayState()
	s.Imports = s.Imports[1:]
	if g := GatewayConfig(NewIndex(s)); len(g.Listeners)+len(g.Clusters) != 0 {
		t.Errorf("nothing exported: %d listeners, %d clusters; want none", len(g.Listeners), len(g.Clusters))
	}
}

// CheckGateway refuses each configuration Envoy would reject or that
// would route more than the exported services.
func TestCheckGatewayRefusesBrokenConfigs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(g *Gateway)
		want   string
	}{
		{"two chains match one name", func(g *Gateway) {
			l := g.Listeners[0].(*listenerv3.Listener)
			l.FilterChains = append(l.FilterChains, proto.Clone(l.FilterChains[0]).(*listenerv3.FilterChain))
		}, "both match"},
		{"server name over 255 bytes", func(g *Gateway) {
			g.Listeners[0].(*listenerv3.Listener).FilterChains[0].FilterChainMatch.ServerNames = []string{strings.Repeat("a", 256)}
		}, "256 bytes"},
		{"a catch-all chain", func(g *Gateway) {
			g.Listeners[0].(*listenerv3.Listener).FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{}
		}, "matches more than a TLS server name"},
		{"a plaintext chain", func(g *Gateway) {
			g.Listeners[0].(*listenerv3.Listener).FilterChains[0].FilterChainMatch.TransportProtocol = "raw_buffer"
		}, "matches more than a TLS server name"},
		{"forwarding to a missing cluster", func(g *Gateway) { g.Clusters, g.Endpoints = g.Clusters[1:], g.Endpoints[1:] }, "missing cluster"},
		{"a cluster without endpoints", func(g *Gateway) { g.Endpoints = g.Endpoints[1:] }, "no load assignment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := GatewayConfig(NewIndex(gatewayState()))
			tc.mutate(&g)
			err := CheckGateway(g)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
