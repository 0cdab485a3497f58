package server_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshfed/meshfed/mesh"
)

// tallyAny makes n calls and counts the answering backends, and failures
// as "error".
func tallyAny(c healthpb.HealthClient, n int) map[string]int {
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		b, err := callBackend(c)
		if err != nil {
			b = "error"
		}
		counts[b]++
	}
	return counts
}

// remoteSplitMesh is bookstore split between the local bookstore-v1 (e1)
// and west's export of bookstore-v2 (w1), or, when west is withdrawn, all
// to bookstore-v1. West's pod keeps running either way (it also backs a
// local stand-in service, so this one xDS server gives it its server
// listener, as west's own controller would).
func remoteSplitMesh(e1, w1 *backend, withWest bool) mesh.State {
	port := []mesh.Port{{Name: "grpc", Port: 14001, Protocol: mesh.ProtocolGRPC}}
	west := endpoint(w1)
	west.Cluster, west.Locality = "west", mesh.Locality{Zone: "w1"}
	s := mesh.State{
		Settings:         mesh.Settings{MeshName: "meshfed", ClusterName: "east", TrustDomain: trustDomain, PermissiveTrafficPolicy: true},
		MeshedNamespaces: []string{"bookbuyer", "bookstore"},
		Services: []mesh.Service{
			{Namespace: "bookstore", Name: "bookstore", Cluster: "east", Ports: port, Endpoints: []mesh.Endpoint{endpoint(e1)}},
			{Namespace: "bookstore", Name: "bookstore-v1", Cluster: "east", Ports: port, Endpoints: []mesh.Endpoint{endpoint(e1)}},
			{Namespace: "bookstore", Name: "west-pods", Cluster: "east", Ports: port, Endpoints: []mesh.Endpoint{west}},
		},
		TrafficSplits: []mesh.TrafficSplit{{Namespace: "bookstore", Name: "bookstore-split", Service: "bookstore",
			Backends: []mesh.SplitBackend{{Service: "bookstore-v1", Weight: 100}}}},
	}
	if withWest {
		s.TrafficSplits[0].Backends = []mesh.SplitBackend{{Service: "bookstore-v1", Weight: 50}, {Service: "bookstore-v2", Cluster: "west", Weight: 50}}
		s.Remote = map[string]mesh.ClusterCatalog{"west": {Cluster: "west", Version: 1, Services: []mesh.Service{
			{Namespace: "bookstore", Name: "bookstore-v2", Cluster: "west", Ports: port, Endpoints: []mesh.Endpoint{west}},
		}}}
	}
	return s
}

// A withdrawn cluster's split share moves home, and back when the cluster
// returns, without a failed RPC: the routes that stop using west's cluster
// reach the client before the cluster is removed (make before break),
// whatever order the client's ADS stream delivers the types in, and a
// cluster a route starts to use was named by the route before
// (generate/routes.go).
func TestWithdrawingARemoteBackendFailsNoRPC(t *testing.T) {
	withdrawRounds(t, func(s mesh.State) mesh.State { return s })
}

// As TestWithdrawingARemoteBackendFailsNoRPC, when west exported the
// split's only other backend: once west is withdrawn the split names a
// backend no cluster has, is refused, and the service's own cluster takes
// all calls.
func TestWithdrawingTheSplitsOnlyRemoteBackendFailsNoRPC(t *testing.T) {
	withdrawRounds(t, func(s mesh.State) mesh.State {
		if s.Remote == nil {
			s.TrafficSplits = nil
		}
		return s
	})
}

// As TestWithdrawingARemoteBackendFailsNoRPC, the way the federation
// withdraws a cluster that a TrafficSplit names (controller/federate,
// keepWithdrawn): west's export stays in the state with no endpoints, so
// its backend goes to weight 0 and its load assignment loses its
// endpoints in the same update, and comes back with both. Routes and load
// assignments reach the client in no fixed order: the route must stop
// sending to west before west's endpoints go, and west's endpoints must
// be there before the route sends to it again.
func TestEmptyingARemoteBackendFailsNoRPC(t *testing.T) {
	withdrawRounds(t, func(s mesh.State) mesh.State {
		if s.Remote != nil {
			return s
		}
		with := remoteSplitMesh(&backend{}, &backend{}, true)
		s.TrafficSplits = with.TrafficSplits
		west := with.Remote["west"]
		west.Services = slices.Clone(west.Services)
		west.Services[0].Endpoints = nil
		s.Remote = map[string]mesh.ClusterCatalog{"west": west}
		return s
	})
}

// withdrawRounds withdraws west and adds it back while four callers run,
// many times (the window in which a client could fail a call is short),
// and fails on any failed RPC. edit turns remoteSplitMesh's states into
// the test's.
func withdrawRounds(t *testing.T, edit func(mesh.State) mesh.State) {
	m := startMesh(t)
	e1, e1Serving := startBackendAt(t, m, bookstoreID, "east-1", "127.0.0.2")
	w1, w1Serving := startBackendAt(t, m, bookstoreID, "west-1", "127.0.0.3")
	with, without := edit(remoteSplitMesh(e1, w1, true)), edit(remoteSplitMesh(e1, w1, false))
	m.update(t, with)
	<-e1Serving
	<-w1Serving
	buyer := client(t, m, bookbuyerID)
	eventually(t, "west answers", func() error {
		if c := tallyAny(buyer, 40); c["west-1"] == 0 {
			return fmt.Errorf("answers: %v", c)
		}
		return nil
	})

	const rounds = 10
	var failed, total int64
	for r := 0; r < rounds; r++ {
		calls := startCallers(t, buyer, fmt.Sprintf("round %d: RPC while west is withdrawn", r), nil)
		time.Sleep(50 * time.Millisecond)
		m.update(t, without)
		time.Sleep(300 * time.Millisecond)
		n, f := calls.stop()
		total, failed = total+n, failed+f
		if c := tallyAny(buyer, 40); c["west-1"] != 0 {
			t.Fatalf("round %d: west still answers after it was withdrawn: %v", r, c)
		}

		calls = startCallers(t, buyer, fmt.Sprintf("round %d: RPC while west comes back", r), nil)
		time.Sleep(50 * time.Millisecond)
		m.update(t, with)
		eventually(t, "west answers again", func() error {
			if c := tallyAny(buyer, 40); c["west-1"] == 0 {
				return fmt.Errorf("answers: %v", c)
			}
			return nil
		})
		n, f = calls.stop()
		total, failed = total+n, failed+f
	}
	t.Logf("%d withdrawals and returns, %d RPCs, %d failed", rounds, total, failed)
}
