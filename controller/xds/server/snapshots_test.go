package server

import (
	"fmt"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/mesh"
)

const td = "cluster.local"

// syntheticMesh has n services in 10 namespaces, 2 endpoints each, one
// TrafficTarget per namespace and a split for every tenth service.
func syntheticMesh(n int) mesh.State {
	s := mesh.State{Settings: mesh.Settings{ClusterName: "east", TrustDomain: td}}
	port := []mesh.Port{{Name: "grpc", Port: 8080, Protocol: mesh.ProtocolGRPC}}
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("ns-%d", i%10)
		id := mesh.NewIdentity(td, ns, fmt.Sprintf("sa-%d", i))
		svc := mesh.Service{Namespace: ns, Name: fmt.Sprintf("svc-%d", i), Cluster: "east", Ports: port}
		for e := 0; e < 2; e++ {
			svc.Endpoints = append(svc.Endpoints, mesh.Endpoint{
				Address: fmt.Sprintf("10.%d.%d.%d", 1+i/65536%200, i/256%256, i%256), TargetPorts: map[string]uint32{"grpc": uint32(9000 + e)},
				Cluster: "east", Locality: mesh.Locality{Zone: fmt.Sprintf("z%d", e)}, Ready: true, Identity: id,
			})
		}
		s.Services = append(s.Services, svc)
	}
	// Services must be sorted by namespace, name for lookups to be stable;
	// generation does not depend on it.
	for i := 0; i < 10; i++ {
		ns := fmt.Sprintf("ns-%d", i)
		s.TrafficTargets = append(s.TrafficTargets, mesh.TrafficTarget{
			Namespace: ns, Name: "allow", Destination: mesh.NewIdentity(td, ns, fmt.Sprintf("sa-%d", i)),
			Sources: []mesh.Identity{mesh.NewIdentity(td, "client", "client")},
			Rules:   []mesh.TrafficTargetRule{{Kind: mesh.KindTCPRoute, Name: "all"}},
		})
		s.TCPRoutes = append(s.TCPRoutes, mesh.TCPRoute{Namespace: ns, Name: "all"})
	}
	for i := 0; i+1 < n; i += 10 {
		s.TrafficSplits = append(s.TrafficSplits, mesh.TrafficSplit{
			Namespace: fmt.Sprintf("ns-%d", i%10), Name: fmt.Sprintf("split-%d", i), Service: fmt.Sprintf("svc-%d", i),
			Backends: []mesh.SplitBackend{{Service: fmt.Sprintf("svc-%d", i+10), Weight: 90}, {Service: fmt.Sprintf("svc-%d", i+20), Weight: 10}},
		})
	}
	// keep only splits whose backends exist
	var ok []mesh.TrafficSplit
	for _, ts := range s.TrafficSplits {
		var a, b int
		fmt.Sscanf(ts.Backends[1].Service, "svc-%d", &a)
		_ = b
		if a < n {
			ok = append(ok, ts)
		}
	}
	s.TrafficSplits = ok
	return s
}

// moveEndpoint returns s with service i's first endpoint readdressed.
func moveEndpoint(s mesh.State, i int, gen int) mesh.State {
	services := append([]mesh.Service(nil), s.Services...)
	svc := services[i]
	eps := append([]mesh.Endpoint(nil), svc.Endpoints...)
	eps[0].TargetPorts = map[string]uint32{"grpc": uint32(10000 + gen%50000)}
	svc.Endpoints = eps
	services[i] = svc
	s.Services = services
	return s
}

func TestEndpointOnlyChangeKeepsListenerRouteAndClusterVersions(t *testing.T) {
	for _, kind := range []Kind{KindProxyless, KindSidecar} {
		t.Run(string(kind), func(t *testing.T) {
			b := newBuilder()
			state := syntheticMesh(50)
			if _, err := b.update(state); err != nil {
				t.Fatal(err)
			}
			key := proxyKey{id: state.Services[0].Endpoints[0].Identity, kind: kind}
			ks := &keyState{}
			if _, changed, err := b.snapshot(key, ks); err != nil || !changed {
				t.Fatalf("first snapshot: changed %v err %v", changed, err)
			}
			before := ks.versions

			if _, err := b.update(moveEndpoint(state, 7, 1)); err != nil {
				t.Fatal(err)
			}
			if _, changed, err := b.snapshot(key, ks); err != nil || !changed {
				t.Fatalf("after endpoint change: changed %v err %v", changed, err)
			}
			for _, typ := range []types.ResponseType{types.Listener, types.Route, types.Cluster} {
				if ks.versions[typ] != before[typ] {
					t.Errorf("type %d version moved %s → %s on an endpoint-only change", typ, before[typ], ks.versions[typ])
				}
			}
			if ks.versions[types.Endpoint] == before[types.Endpoint] {
				t.Errorf("endpoint version did not move")
			}

			// Unchanged state: nothing to publish.
			if _, err := b.update(moveEndpoint(state, 7, 1)); err != nil {
				t.Fatal(err)
			}
			if _, changed, _ := b.snapshot(key, ks); changed {
				t.Errorf("identical state produced a new snapshot")
			}

			// A policy change moves listeners (RBAC) but not clusters.
			policy := moveEndpoint(state, 7, 1)
			policy.Settings.PermissiveTrafficPolicy = true
			mid := ks.versions
			if _, err := b.update(policy); err != nil {
				t.Fatal(err)
			}
			if _, _, err := b.snapshot(key, ks); err != nil {
				t.Fatal(err)
			}
			if ks.versions[types.Listener] == mid[types.Listener] || ks.versions[types.Cluster] != mid[types.Cluster] {
				t.Errorf("permissive switch: listener %s→%s (want moved), cluster %s→%s (want same)",
					mid[types.Listener], ks.versions[types.Listener], mid[types.Cluster], ks.versions[types.Cluster])
			}
		})
	}
}

func bytesOf(rs []types.Resource) int {
	n := 0
	for _, r := range rs {
		n += proto.Size(r)
	}
	return n
}

// BenchmarkGenerateFull measures generating and checking everything for a
// mesh of N services (both data planes) plus one proxyless snapshot.
func BenchmarkGenerateFull(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		state := syntheticMesh(n)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			var full int
			for i := 0; i < b.N; i++ {
				bl := newBuilder()
				if _, err := bl.update(state); err != nil {
					b.Fatal(err)
				}
				key := proxyKey{id: state.Services[0].Endpoints[0].Identity, kind: KindProxyless}
				if _, _, err := bl.snapshot(key, &keyState{}); err != nil {
					b.Fatal(err)
				}
				sk := bl.kinds[KindProxyless]
				full = bytesOf(sk.types[types.Listener].items) + bytesOf(sk.types[types.Route].items) + bytesOf(sk.types[types.Cluster].items) + bytesOf(bl.eds.items)
			}
			b.ReportMetric(float64(full), "proxyless-full-bytes")
		})
	}
}

// BenchmarkEndpointChange measures an endpoint-only update (one service's
// endpoint moves) and republishing 100 proxy keys.
func BenchmarkEndpointChange(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		state := syntheticMesh(n)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			bl := newBuilder()
			if _, err := bl.update(state); err != nil {
				b.Fatal(err)
			}
			keys := map[proxyKey]*keyState{}
			for i := 0; i < 100; i++ {
				k := proxyKey{id: state.Services[i].Endpoints[0].Identity, kind: KindProxyless}
				keys[k] = &keyState{}
				if _, _, err := bl.snapshot(k, keys[k]); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := bl.update(moveEndpoint(state, 3, i+1)); err != nil {
					b.Fatal(err)
				}
				for k, ks := range keys {
					if _, _, err := bl.snapshot(k, ks); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			cla := bl.edsCache["|"+state.Services[3].Namespace+"/"+state.Services[3].Name].clas
			b.ReportMetric(float64(bytesOf(cla)), "changed-eds-bytes")
		})
	}
}
