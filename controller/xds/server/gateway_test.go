package server_test

import (
	"net/netip"

	"fmt"
	"google.golang.org/protobuf/types/known/structpb"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
)

var gatewayID = mesh.NewIdentity(trustDomain, "meshfed-system", "meshfed-gateway")

// exportBookstore makes m's cluster export bookstore (an import listing
// it), so that its gateway routes to it.
func exportBookstore(t *testing.T, m *sdsMesh) {
	t.Helper()
	s := m.state
	s.Imports = []mesh.Import{{Namespace: "bookstore", Name: "bookstore", Ports: s.Services[0].Ports, Clusters: []string{"east"}}}
	if problems, err := m.srv.Update(s); err != nil || len(problems) > 0 {
		t.Fatalf("Update: problems %v, err %v", problems, err)
	}
}

// servedGateway is what an ADS client got: listeners, clusters and the
// load assignments it asked for by name.
type servedGateway struct {
	listeners []*listenerv3.Listener
	clusters  []string
	endpoints map[string][]string
}

func gatewayConfig(t *testing.T, m *sdsMesh, id mesh.Identity, userAgent string) servedGateway {
	t.Helper()
	return servedTo(t, dialADS(t, m, id, userAgent))
}

// servedTo asks for every listener and cluster and then for the load
// assignments the clusters name, and returns what a got.
func servedTo(t *testing.T, a *adsStream) servedGateway {
	t.Helper()
	a.request(resourcev3.ClusterType, nil, nil)
	a.request(resourcev3.ListenerType, nil, nil)
	var out servedGateway
	var eds []string
	for seen := 0; seen != 3; {
		resp := a.recv()
		for _, r := range resp.GetResources() {
			switch resp.GetTypeUrl() {
			case resourcev3.ClusterType:
				c := &clusterv3.Cluster{}
				if err := r.UnmarshalTo(c); err != nil {
					t.Fatal(err)
				}
				out.clusters = append(out.clusters, c.GetName())
				eds = append(eds, c.GetEdsClusterConfig().GetServiceName())
			case resourcev3.ListenerType:
				l := &listenerv3.Listener{}
				if err := r.UnmarshalTo(l); err != nil {
					t.Fatal(err)
				}
				out.listeners = append(out.listeners, l)
			}
		}
		if resp.GetTypeUrl() == resourcev3.ClusterType {
			seen |= 1
		} else if resp.GetTypeUrl() == resourcev3.ListenerType {
			seen |= 2
		}
		a.request(resp.GetTypeUrl(), nil, resp)
	}
	slices.Sort(eds)
	if eds = slices.Compact(eds); len(eds) == 0 || eds[0] == "" {
		return out
	}
	a.request(resourcev3.EndpointType, eds, nil)
	out.endpoints = map[string][]string{}
	for {
		resp := a.recv()
		if resp.GetTypeUrl() != resourcev3.EndpointType {
			continue
		}
		for _, r := range resp.GetResources() {
			cla := &endpointv3.ClusterLoadAssignment{}
			if err := r.UnmarshalTo(cla); err != nil {
				t.Fatal(err)
			}
			for _, l := range cla.GetEndpoints() {
				for _, e := range l.GetLbEndpoints() {
					sa := e.GetEndpoint().GetAddress().GetSocketAddress()
					out.endpoints[cla.GetClusterName()] = append(out.endpoints[cla.GetClusterName()], fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
				}
			}
		}
		return out
	}
}

// The gateway, recognised by its certificate, gets one listener routing
// each exported port by its SNI to a cluster of the port's local
// endpoints; a workload's sidecar gets none of it.
func TestGatewayGetsTheSNIRoutesOfExportedServices(t *testing.T) {
	m := startSDSMesh(t)
	exportBookstore(t, m)

	gw := gatewayConfig(t, m, gatewayID, "envoy")
	if len(gw.listeners) != 1 || gw.listeners[0].GetName() != generate.GatewayListenerName {
		t.Fatalf("gateway listeners: %v", gw.listeners)
	}
	var names []string
	for _, fc := range gw.listeners[0].GetFilterChains() {
		names = append(names, fc.GetFilterChainMatch().GetServerNames()...)
	}
	sni := generate.SNI(mesh.NamespacedName{Namespace: "bookstore", Name: "bookstore"}, 14001)
	if !slices.Equal(names, []string{sni}) {
		t.Errorf("gateway routes %v, want [%s]", names, sni)
	}
	if want := []string{"gateway|bookstore/bookstore:14001"}; !slices.Equal(gw.clusters, want) {
		t.Errorf("gateway clusters %v, want %v", gw.clusters, want)
	}
	if got := gw.endpoints["bookstore/bookstore:14001"]; !slices.Equal(got, []string{"10.0.0.1:9000"}) {
		t.Errorf("gateway endpoints %v, want the pod's address and target port", got)
	}

	// The same identity connecting as anything else is still the gateway;
	// a workload's sidecar gets no gateway listener or cluster.
	if again := gatewayConfig(t, m, gatewayID, "grpc-go"); len(again.listeners) != 1 || again.listeners[0].GetName() != generate.GatewayListenerName {
		t.Errorf("gateway identity with another user agent got listeners %v", again.listeners)
	}
	side := sidecarConfig(t, m, bookbuyerID, &corev3.Node{UserAgentName: "envoy"})
	if slices.Contains(side.listeners, generate.GatewayListenerName) || slices.ContainsFunc(side.clusters, func(c string) bool { return len(c) > 8 && c[:8] == "gateway|" }) {
		t.Errorf("bookbuyer's sidecar got gateway configuration: listeners %v, clusters %v", side.listeners, side.clusters)
	}
}

// The server counts the gateway's open streams, one per replica, and
// signals each change: the federation publishes the cluster's gateway
// addresses only while one is connected. Workloads' streams do not count.
func TestGatewayStreamsAreCounted(t *testing.T) {
	m := startSDSMesh(t)
	exportBookstore(t, m)
	waitFor := func(want int) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for m.srv.GatewaysConnected() != want {
			select {
			case <-m.srv.GatewayChanges():
			case <-time.After(50 * time.Millisecond):
			case <-deadline:
				t.Fatalf("gateways connected: %d, want %d", m.srv.GatewaysConnected(), want)
			}
		}
	}
	if n := m.srv.GatewaysConnected(); n != 0 {
		t.Fatalf("no gateway has connected, the server counts %d", n)
	}
	sidecarConfig(t, m, bookbuyerID, &corev3.Node{UserAgentName: "envoy"})
	gatewayConfig(t, m, gatewayID, "envoy")
	waitFor(1)
	t.Run("SecondReplica", func(t *testing.T) {
		gatewayConfig(t, m, gatewayID, "envoy")
		waitFor(2)
	}) // its stream ends with the subtest
	waitFor(1)
	if n := m.srv.GatewaysConnected(); n != 1 {
		t.Errorf("a workload's stream was counted as a gateway: %d", n)
	}
}

// A proxyless node that does not declare, in its bootstrap's node
// metadata, that it sends server names gets no endpoint reached through a
// gateway (its connection would be closed there); one that declares it
// gets them. Both get the local endpoints.
func TestProxylessNodesWithoutSNIGetNoGatewayEndpoints(t *testing.T) {
	m := startSDSMesh(t)
	s := m.state
	west := s.Services[0]
	west.Cluster = "west"
	west.Endpoints = []mesh.Endpoint{{Address: "10.9.0.1", TargetPorts: map[string]uint32{"grpc": 9000}, Cluster: "west", Network: "net-west", Ready: true, Identity: bookstoreID}}
	west = mesh.ThroughGateways(west, []netip.AddrPort{netip.MustParseAddrPort("203.0.113.9:15443")})
	s.Remote = map[string]mesh.ClusterCatalog{"west": {Cluster: "west", Network: "net-west", Services: []mesh.Service{west}}}
	s.Imports = []mesh.Import{{Namespace: "bookstore", Name: "bookstore", Ports: s.Services[0].Ports, Clusters: []string{"east", "west"}}}
	if problems, err := m.srv.Update(s); err != nil || len(problems) > 0 {
		t.Fatalf("Update: problems %v, err %v", problems, err)
	}
	addresses := func(sg servedGateway) []string {
		var out []string
		for _, eps := range sg.endpoints {
			out = append(out, eps...)
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	with := dialADS(t, m, bookbuyerID, "grpc-go")
	with.node.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{generate.NodeMetadataSNI: structpb.NewBoolValue(true)}}
	if got := addresses(servedTo(t, with)); !slices.Contains(got, "203.0.113.9:15443") || !slices.Contains(got, "10.0.0.1:9000") {
		t.Errorf("a node that sends server names got endpoints %v, want west's gateway and the local pod", got)
	}
	without := dialADS(t, m, bookbuyerID, "grpc-go")
	if got := addresses(servedTo(t, without)); slices.Contains(got, "203.0.113.9:15443") || !slices.Contains(got, "10.0.0.1:9000") {
		t.Errorf("a node that sends no server name got endpoints %v, want the local pod only", got)
	}
	// The declaration is read per stream: the same identity declaring it
	// again gets the gateway.
	again := dialADS(t, m, bookbuyerID, "grpc-go")
	again.node.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{generate.NodeMetadataSNI: structpb.NewBoolValue(true)}}
	if got := addresses(servedTo(t, again)); !slices.Contains(got, "203.0.113.9:15443") {
		t.Errorf("a second node that sends server names got endpoints %v", got)
	}
}
