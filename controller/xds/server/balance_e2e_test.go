package server_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshfed/meshfed/mesh"
)

// tally makes n calls and counts the answering backends.
func tally(t *testing.T, c healthpb.HealthClient, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		b, err := callBackend(c)
		if err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
		counts[b]++
	}
	return counts
}

func TestRootServiceBalancesAcrossEndpoints(t *testing.T) {
	m := startMesh(t)
	v1, v1Serving := startBackendAt(t, m, bookstoreID, "v1", "127.0.0.2")
	v2, v2Serving := startBackendAt(t, m, bookstoreID, "v2", "127.0.0.3")
	m.update(t, allowBookbuyerCheck(bookstore(v1, v2)))
	<-v1Serving
	<-v2Serving
	buyer := client(t, m, bookbuyerID)
	eventually(t, "first RPC", func() error { _, err := callBackend(buyer); return err })
	// Let both subchannels connect, then count.
	eventually(t, "both backends answer", func() error {
		c := tally(t, buyer, 20)
		if c["v1"] == 0 || c["v2"] == 0 {
			return fmt.Errorf("only %v", c)
		}
		return nil
	})
	const n = 1000
	counts := tally(t, buyer, n)
	t.Logf("root service, no split, %d RPCs: %v", n, counts)
	// Round robin alternates; even random picking (Binomial(1000, 0.5),
	// σ ≈ 15.8) stays within ±80 (≈ 5σ).
	if d := counts["v1"] - n/2; d > 80 || d < -80 {
		t.Fatalf("v1 got %d of %d RPCs, want %d±80", counts["v1"], n, n/2)
	}
}

// clusterSetMesh is bookstore exported by east (local, one pod) and west
// (remote, two pods). West's pods also back a local stand-in service so
// that this one xDS server gives them their server listeners, as west's
// own controller would.
func clusterSetMesh(e1, w1, w2 *backend, localFirst, eastReady bool) mesh.State {
	port := []mesh.Port{{Name: "grpc", Port: 14001, Protocol: mesh.ProtocolGRPC}}
	east := endpoint(e1)
	east.Ready = eastReady
	west := func(b *backend) mesh.Endpoint {
		e := endpoint(b)
		e.Cluster, e.Locality = "west", mesh.Locality{Zone: "w1"}
		return e
	}
	s := mesh.State{
		Settings:         mesh.Settings{MeshName: "meshfed", ClusterName: "east", TrustDomain: trustDomain, PermissiveTrafficPolicy: true, ClusterSetLocalFirst: localFirst},
		MeshedNamespaces: []string{"bookbuyer", "bookstore"},
		Services: []mesh.Service{
			{Namespace: "bookstore", Name: "bookstore", Cluster: "east", Ports: port, Endpoints: []mesh.Endpoint{east}},
			{Namespace: "bookstore", Name: "west-pods", Cluster: "east", Ports: port, Endpoints: []mesh.Endpoint{west(w1), west(w2)}},
		},
		Imports: []mesh.Import{{Namespace: "bookstore", Name: "bookstore", Ports: port, Clusters: []string{"east", "west"}}},
		Remote: map[string]mesh.ClusterCatalog{"west": {Cluster: "west", Version: 1, Services: []mesh.Service{
			{Namespace: "bookstore", Name: "bookstore", Cluster: "west", Ports: port, Endpoints: []mesh.Endpoint{west(w1), west(w2)}},
		}}},
	}
	return s
}

func TestClusterSetNameBalancesAcrossClusters(t *testing.T) {
	m := startMesh(t)
	e1, e1Serving := startBackendAt(t, m, bookstoreID, "east-1", "127.0.0.2")
	w1, w1Serving := startBackendAt(t, m, bookstoreID, "west-1", "127.0.0.3")
	w2, w2Serving := startBackendAt(t, m, bookstoreID, "west-2", "127.0.0.4")
	m.update(t, clusterSetMesh(e1, w1, w2, false, true))
	<-e1Serving
	<-w1Serving
	<-w2Serving
	buyer := clientFor(t, m, bookbuyerID, "bookstore.bookstore.svc.clusterset.local:14001")
	eventually(t, "every backend answers", func() error {
		c := tally(t, buyer, 30)
		if c["east-1"] == 0 || c["west-1"] == 0 || c["west-2"] == 0 {
			return fmt.Errorf("only %v", c)
		}
		return nil
	})

	t.Run("balanced: each cluster's share follows its ready endpoints", func(t *testing.T) {
		// grpc-go picks a locality at random by weight (east 1, west 2),
		// then round robin within it: east's count is Binomial(1500, 1/3),
		// σ ≈ 18.3 RPCs (1.2 %); ±5 points is ≈ 4σ.
		const n, tolerance = 1500, 0.05
		c := tally(t, buyer, n)
		east := float64(c["east-1"]) / n
		t.Logf("clusterset, balanced, %d RPCs: %v (east share %.3f, want 0.333±%.2f)", n, c, east, tolerance)
		if math.Abs(east-1.0/3) > tolerance {
			t.Fatalf("east share %.3f outside 0.333±%.2f", east, tolerance)
		}
		if d := c["west-1"] - c["west-2"]; d > 2 || d < -2 {
			t.Errorf("west pods %d vs %d: round robin should alternate", c["west-1"], c["west-2"])
		}
	})

	t.Run("local first: the local cluster takes everything", func(t *testing.T) {
		m.update(t, clusterSetMesh(e1, w1, w2, true, true))
		eventually(t, "only east answers", func() error {
			if c := tally(t, buyer, 50); c["east-1"] != 50 {
				return fmt.Errorf("got %v", c)
			}
			return nil
		})
		if c := tally(t, buyer, 500); c["east-1"] != 500 {
			t.Fatalf("local first, 500 RPCs: %v", c)
		}
	})

	t.Run("local first, nothing ready locally: traffic moves at once, not after grpc-go's 10 s", func(t *testing.T) {
		start := time.Now()
		m.update(t, clusterSetMesh(e1, w1, w2, true, false))
		deadline := start.Add(2 * time.Second)
		for {
			c := tally(t, buyer, 20)
			if c["east-1"] == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("still reaching east 2 s after it had nothing ready: %v", c)
			}
			time.Sleep(10 * time.Millisecond)
		}
		moved := time.Since(start)
		c := tally(t, buyer, 500)
		t.Logf("moved to west in %v; then 500 RPCs: %v", moved, c)
		if c["east-1"] != 0 || c["west-1"]+c["west-2"] != 500 {
			t.Fatalf("after the move: %v", c)
		}
	})
}
