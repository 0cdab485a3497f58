package generate

import (
	"fmt"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
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

// BenchmarkGatewayConfig10k generates the gateway's configuration for a
// cluster that exports 10,000 services of one port and three pods each,
// and reports its size on the wire.
func BenchmarkGatewayConfig10k(b *testing.B) {
	const n = 10000
	s := mesh.State{Settings: mesh.Settings{ClusterName: "east", TrustDomain: "cluster.local"}}
	port := []mesh.Port{{Name: "grpc", Port: 14001, Protocol: mesh.ProtocolGRPC}}
	for i := 0; i < n; i++ {
		ns, name := fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("svc-%d", i)
		svc := mesh.Service{Namespace: ns, Name: name, Cluster: "east", Ports: port}
		for p := 0; p < 3; p++ {
			svc.Endpoints = append(svc.Endpoints, mesh.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", i/250%250, i%250, p+1), Cluster: "east", Ready: true})
		}
		s.Services = append(s.Services, svc)
		s.Imports = append(s.Imports, mesh.Import{Namespace: ns, Name: name, Ports: port, Clusters: []string{"east", "west"}})
	}
	ix := NewIndex(s)
	b.ResetTimer()
	var g Gateway
	for i := 0; i < b.N; i++ {
		g = GatewayConfig(ix)
	}
	b.StopTimer()
	if err := CheckGateway(g); err != nil {
		b.Fatal(err)
	}
	size := func(rs []types.Resource) int {
		total := 0
		for _, r := range rs {
			total += proto.Size(r)
		}
		return total
	}
	b.ReportMetric(float64(size(g.Listeners)), "listener-bytes")
	b.ReportMetric(float64(size(g.Clusters)), "cluster-bytes")
	b.ReportMetric(float64(size(g.Endpoints)), "endpoint-bytes")
}

// The gateway Envoy's bootstrap and its two file-based SDS secrets are
// valid Envoy configuration and as golden-tested: ADS to the controller
// over mTLS, the controller's SPIFFE ID the only one accepted, the SVID
// reloaded when meshfed agent renews it.
func TestGatewayBootstrap(t *testing.T) {
	o := GatewayBootstrapOptions{ControllerHost: "meshfed-controller.meshfed-system.svc", XDSPort: 15128,
		ControllerID: mesh.NewIdentity("meshfed.local", "meshfed-system", "meshfed-controller"),
		CertDir:      "/var/run/meshfed/certs", SDSDir: "/etc/meshfed/sds"}
	b := GatewayBootstrap(o)
	svid, bundle := GatewaySDSSecrets(o, "certificate.pem", "private_key.pem", "ca_certificate.pem")
	for _, m := range []interface{ ValidateAll() error }{b, svid, bundle} {
		if err := m.ValidateAll(); err != nil {
			t.Fatal(err)
		}
	}
	compareGolden(t, "testdata/gateway-bootstrap.golden.yaml", map[string]any{
		"bootstrap": toYAMLValue(t, []types.Resource{b}),
		"sds":       toYAMLValue(t, []types.Resource{svid, bundle}),
	})
}

// An injected Envoy sidecar's bootstrap (the gateway's, under the
// sidecar's node name) is valid Envoy configuration and golden-tested.
func TestSidecarBootstrap(t *testing.T) {
	o := GatewayBootstrapOptions{ControllerHost: "meshfed-controller.meshfed-system.svc", XDSPort: 15128,
		ControllerID: mesh.NewIdentity("meshfed.local", "meshfed-system", "meshfed-controller"),
		CertDir:      "/var/run/meshfed/certs", SDSDir: "/var/run/meshfed/sds"}
	b := SidecarBootstrap(o)
	if err := b.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if b.GetNode().GetId() != "meshfed-sidecar" {
		t.Errorf("node %v", b.GetNode())
	}
	compareGolden(t, "testdata/sidecar-bootstrap.golden.yaml", map[string]any{"bootstrap": toYAMLValue(t, []types.Resource{b})})
}
