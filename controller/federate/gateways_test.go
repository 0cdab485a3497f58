package federate

import (
	"strings"
	"testing"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
)

// remoteOn is a remote view of one cluster, west, on network with
// gateways, exporting bookstore with two ready workloads.
func remoteOn(network string, gateways ...string) (*RemoteState, *federation.RemoteView) {
	es := catalog.ExportedService{Namespace: "bookstore", Name: "bookstore",
		Ports:     []catalog.Port{{Name: "grpc", Port: 14001}},
		Endpoints: []catalog.Endpoint{{Address: "10.2.0.1", Ready: true}, {Address: "10.2.0.2", Ready: true}}}
	cat := &catalog.Catalog{Format: 1, Cluster: "west", Network: network, Gateways: gateways, Version: 1, Services: []catalog.ExportedService{es}}
	rv := &federation.RemoteView{Clusters: map[string]federation.ClusterView{"west": {Catalog: cat, Services: cat.Services}}}
	rs := &RemoteState{Remote: map[string]mesh.ClusterCatalog{"west": {Cluster: "west", Network: network, Version: 1,
		Services: []mesh.Service{serviceFromCatalog("west", network, es)}}}}
	return rs, rv
}

func addresses(svc mesh.Service) []string {
	var out []string
	for _, e := range svc.Endpoints {
		out = append(out, e.Address)
	}
	return out
}

// Clients reach a cluster on their own network directly, one on another
// network through its gateways, and one on another network without a
// usable gateway not at all, with the reason returned.
func TestRemoteServicesOfAnotherNetworkGoThroughItsGateways(t *testing.T) {
	rs, rv := remoteOn("net-a", "192.0.2.10:15443")
	if why := routeThroughGateways(rs, "net-a", rv); len(why) != 0 {
		t.Errorf("same network: %v", why)
	}
	if got := addresses(rs.Remote["west"].Services[0]); strings.Join(got, ",") != "10.2.0.1,10.2.0.2" {
		t.Errorf("same network: endpoints %v, want the workloads'", got)
	}

	rs, rv = remoteOn("", "192.0.2.10:15443")
	routeThroughGateways(rs, mesh.DefaultNetwork, rv)
	if got := addresses(rs.Remote["west"].Services[0]); len(got) != 2 {
		t.Errorf("no network name is the default network: endpoints %v, want the workloads'", got)
	}

	rs, rv = remoteOn("net-b", "192.0.2.11:15443", "192.0.2.10:15443", "192.0.2.10:15443", "127.0.0.1:15443")
	why := routeThroughGateways(rs, "net-a", rv)
	if len(why) != 0 {
		t.Errorf("usable gateways, yet unreachable: %v", why)
	}
	svc := rs.Remote["west"].Services[0]
	if got := addresses(svc); strings.Join(got, ",") != "192.0.2.10,192.0.2.11" {
		t.Errorf("another network: endpoints %v, want each usable gateway once, sorted", got)
	}
	if svc.Endpoints[0].TargetPort(svc.Ports[0]) != 15443 || svc.Endpoints[0].Weight()+svc.Endpoints[1].Weight() != 2 {
		t.Errorf("gateway endpoints %+v: want port 15443, standing for the 2 ready workloads", svc.Endpoints)
	}

	rs, rv = remoteOn("net-b", "gateway.example:15443")
	why = routeThroughGateways(rs, "net-a", rv)
	if eps := rs.Remote["west"].Services[0].Endpoints; len(eps) != 0 {
		t.Errorf("no usable gateway: endpoints %v, want none", eps)
	}
	if !strings.Contains(why["west"], "no east-west gateway") || !strings.Contains(why["west"], "gateway.example") {
		t.Errorf("reason %q: want it to say there is no usable gateway and why", why["west"])
	}
}

// The status shows each remote member's network and the gateway
// addresses of its catalog that clients here can use.
func TestStatusShowsNetworksAndGateways(t *testing.T) {
	_, rv := remoteOn("net-b", "192.0.2.10:15443", "127.0.0.1:15443")
	rv.Members = []federation.Member{{Name: "west", State: federation.StateAlive}}
	st := StatusFrom("east", rv, nil, t0)
	if len(st.Members) != 1 {
		t.Fatalf("members %+v", st.Members)
	}
	m := st.Members[0]
	if m.Network != "net-b" || strings.Join(m.Gateways, ",") != "192.0.2.10:15443" {
		t.Errorf("west: network %q, gateways %v; want net-b and the one usable gateway", m.Network, m.Gateways)
	}
}
