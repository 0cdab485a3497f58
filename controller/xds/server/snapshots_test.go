package server

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/controller/xds/generate"
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

// watchingAll is a key whose proxies watch every resource (as Envoy does
// for LDS and CDS).
func watchingAll() *keyState {
	ks := &keyState{}
	for _, t := range snapshotTypes {
		ks.subscribe(t, nil, true)
	}
	return ks
}

func TestProxyIsSentEndpointsOnlyWhenWhatItWatchesChanged(t *testing.T) {
	b := newBuilder(0)
	state := syntheticMesh(50)
	if _, err := b.update(state); err != nil {
		t.Fatal(err)
	}
	key := proxyKey{id: mesh.NewIdentity(td, "client", "client"), kind: KindProxyless}
	ks := &keyState{}
	watched := generate.ClusterName(state.Services[7].Key(), 8080, "")
	ks.subscribe(types.Endpoint, map[string]struct{}{watched: {}}, false)
	snap, changed, err := b.snapshot(key, ks)
	if err != nil || !changed {
		t.Fatalf("first snapshot: changed %v err %v", changed, err)
	}
	if got := snap.GetResources(resourcev3.EndpointType); len(got) != 1 || got[watched] == nil {
		t.Fatalf("snapshot holds %d load assignments, want only %s", len(got), watched)
	}
	state = moveEndpoint(state, 8, 1)
	if _, err := b.update(state); err != nil {
		t.Fatal(err)
	}
	if _, changed, _ := b.snapshot(key, ks); changed {
		t.Errorf("a change to a service the proxy does not watch produced a new snapshot")
	}
	state = moveEndpoint(state, 7, 2)
	if _, err := b.update(state); err != nil {
		t.Fatal(err)
	}
	if _, changed, _ := b.snapshot(key, ks); !changed {
		t.Errorf("a change to the watched service produced no new snapshot")
	}
}

func TestEndpointOnlyChangeKeepsListenerRouteAndClusterVersions(t *testing.T) {
	for _, kind := range []Kind{KindProxyless, KindSidecar} {
		t.Run(string(kind), func(t *testing.T) {
			b := newBuilder(0)
			state := syntheticMesh(50)
			if _, err := b.update(state); err != nil {
				t.Fatal(err)
			}
			key := proxyKey{id: state.Services[0].Endpoints[0].Identity, kind: kind}
			ks := watchingAll()
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

func edsBytes(b *builder) int {
	n := 0
	for _, r := range b.eds.res.Items {
		n += proto.Size(r.Resource)
	}
	return n
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
				bl := newBuilder(0)
				if _, err := bl.update(state); err != nil {
					b.Fatal(err)
				}
				key := proxyKey{id: state.Services[0].Endpoints[0].Identity, kind: KindProxyless}
				if _, _, err := bl.snapshot(key, watchingAll()); err != nil {
					b.Fatal(err)
				}
				sk := bl.kinds[KindProxyless]
				full = bytesOf(sk.types[types.Listener].items) + bytesOf(sk.types[types.Route].items) + bytesOf(sk.types[types.Cluster].items) + edsBytes(bl)
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
			bl := newBuilder(0)
			if _, err := bl.update(state); err != nil {
				b.Fatal(err)
			}
			keys := map[proxyKey]*keyState{}
			for i := 0; i < 100; i++ {
				k := proxyKey{id: state.Services[i].Endpoints[0].Identity, kind: KindProxyless}
				keys[k] = &keyState{}
				// Like grpc-go: watch the listener, route, cluster and
				// load assignment of the service it dials (the changed one).
				name := generate.ClusterName(state.Services[3].Key(), 8080, "")
				keys[k].subscribe(types.Endpoint, map[string]struct{}{name: {}}, false)
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
			cla := bl.edsCache[edsKey{svc: state.Services[3].Key()}].clas
			b.ReportMetric(float64(bytesOf(cla)), "changed-eds-bytes")
		})
	}
}

// resourcesOf returns a snapshot's resources by type and name, marshaled.
func resourcesOf(t *testing.T, snap interface {
	GetResources(string) map[string]types.Resource
}) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	for _, typ := range []string{
		"type.googleapis.com/envoy.config.listener.v3.Listener",
		"type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
		"type.googleapis.com/envoy.config.cluster.v3.Cluster",
		"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
	} {
		out[typ] = map[string]string{}
		for name, r := range snap.GetResources(typ) {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			out[typ][name] = string(b)
		}
	}
	return out
}

// primedBuilder returns a builder updated to base, with a first snapshot
// taken for each of keys, every one watching all resources.
func primedBuilder(t *testing.T, base mesh.State, keys []proxyKey) (*builder, map[proxyKey]*keyState) {
	t.Helper()
	inc := newBuilder(0)
	if _, err := inc.update(base); err != nil {
		t.Fatal(err)
	}
	states := map[proxyKey]*keyState{}
	for _, k := range keys {
		states[k] = watchingAll()
		if _, _, err := inc.snapshot(k, states[k]); err != nil {
			t.Fatal(err)
		}
	}
	return inc, states
}

// checkMatchesFullRebuild reports each resource in the keys' snapshots from
// inc that differs from, or is missing in, a new builder's for state.
// Clusters kept for make before break are drained first
// (TestRemovedClusterIsServedUntilDrained covers them).
func checkMatchesFullRebuild(t *testing.T, step string, inc *builder, state mesh.State, keys []proxyKey, states map[proxyKey]*keyState) {
	t.Helper()
	inc.drainRetired(0, 0)
	full := newBuilder(0)
	if _, err := full.update(state); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		got, _, err := inc.snapshot(k, states[k])
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		want, _, err := full.snapshot(k, watchingAll())
		if err != nil {
			t.Fatal(err)
		}
		g, w := resourcesOf(t, got), resourcesOf(t, want)
		for typ := range w {
			for name, wr := range w[typ] {
				if g[typ][name] != wr {
					t.Errorf("%s: proxy %s: %s %s differs from a full rebuild", step, k, typ, name)
				}
			}
			for name := range g[typ] {
				if _, ok := w[typ][name]; !ok {
					t.Errorf("%s: proxy %s: %s %s is stale (absent from a full rebuild)", step, k, typ, name)
				}
			}
		}
	}
}

func TestEndpointOnlyUpdatesMatchAFullRebuild(t *testing.T) {
	base := syntheticMesh(40)
	serverID := base.Services[5].Endpoints[0].Identity
	steps := []struct {
		name   string
		change func(mesh.State) mesh.State
	}{
		{"one endpoint's port moves", func(s mesh.State) mesh.State { return moveEndpoint(s, 5, 1) }},
		{"nothing changes", func(s mesh.State) mesh.State { return s }},
		{"an endpoint's address moves", func(s mesh.State) mesh.State {
			s.Services = append([]mesh.Service(nil), s.Services...)
			eps := append([]mesh.Endpoint(nil), s.Services[5].Endpoints...)
			eps[1].Address = "10.99.0.1"
			s.Services[5].Endpoints = eps
			return s
		}},
		{"an endpoint goes unready", func(s mesh.State) mesh.State {
			s.Services = append([]mesh.Service(nil), s.Services...)
			eps := append([]mesh.Endpoint(nil), s.Services[6].Endpoints...)
			eps[0].Ready = false
			s.Services[6].Endpoints = eps
			return s
		}},
		{"an endpoint with a new identity (shape change)", func(s mesh.State) mesh.State {
			s.Services = append([]mesh.Service(nil), s.Services...)
			eps := append([]mesh.Endpoint(nil), s.Services[7].Endpoints...)
			eps = append(eps, mesh.Endpoint{Address: "10.98.0.1", Cluster: "east", Ready: true, Identity: serverID})
			s.Services[7].Endpoints = eps
			return s
		}},
		{"a remote export's endpoints move", func(s mesh.State) mesh.State {
			svc := s.Services[3]
			svc.Cluster = "west"
			if s.Remote == nil {
				s.Remote = map[string]mesh.ClusterCatalog{"west": {Cluster: "west", Services: []mesh.Service{svc}}}
				return s
			}
			svc.Endpoints = []mesh.Endpoint{{Address: "10.97.0.1", Cluster: "west", Ready: true, Identity: svc.Endpoints[0].Identity}}
			s.Remote = map[string]mesh.ClusterCatalog{"west": {Cluster: "west", Services: []mesh.Service{svc}}}
			return s
		}},
		{"a remote export's endpoints move again", func(s mesh.State) mesh.State {
			cat := s.Remote["west"]
			svc := cat.Services[0]
			svc.Endpoints = []mesh.Endpoint{{Address: "10.97.0.2", Cluster: "west", Ready: true, Identity: svc.Endpoints[0].Identity}}
			s.Remote = map[string]mesh.ClusterCatalog{"west": {Cluster: "west", Services: []mesh.Service{svc}}}
			return s
		}},
	}
	keys := []proxyKey{
		{id: serverID, kind: KindProxyless}, {id: serverID, kind: KindSidecar},
		{id: base.Services[6].Endpoints[0].Identity, kind: KindProxyless},
		{id: mesh.NewIdentity(td, "client", "client"), kind: KindProxyless},
	}
	inc, states := primedBuilder(t, base, keys)
	state := base
	for _, step := range steps {
		state = step.change(state)
		shapeAt := inc.shapeAt
		if _, err := inc.update(state); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		slow := strings.Contains(step.name, "shape change") || step.name == "a remote export's endpoints move"
		if fast := inc.shapeAt == shapeAt; fast == slow {
			t.Errorf("%s: took the endpoint-only path: %v", step.name, fast)
		}
		checkMatchesFullRebuild(t, step.name, inc, state, keys, states)
	}
}

// withNewService returns s with one more service, "fresh-<i>" in ns-0,
// served by a new identity (as a Service created for running pods).
func withNewService(s mesh.State, i int) mesh.State {
	id := mesh.NewIdentity(td, "ns-0", fmt.Sprintf("fresh-%d", i))
	s.Services = append(append([]mesh.Service(nil), s.Services...), mesh.Service{
		Namespace: "ns-0", Name: fmt.Sprintf("fresh-%d", i), Cluster: "east",
		Ports:     []mesh.Port{{Name: "grpc", Port: 8080, Protocol: mesh.ProtocolGRPC}},
		Endpoints: []mesh.Endpoint{{Address: "10.250.0.1", TargetPorts: map[string]uint32{"grpc": 9000}, Cluster: "east", Ready: true, Identity: id}},
	})
	return s
}

// BenchmarkNewService measures the update for a new Service (the previous
// iteration's new Service goes away, this one's arrives) in a mesh of N
// services, republishing 100 proxyless keys that each watch one service
// (as grpc-go clients do) and one sidecar key that watches everything.
func BenchmarkNewService(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		state := syntheticMesh(n)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			bl := newBuilder(0)
			if _, err := bl.update(state); err != nil {
				b.Fatal(err)
			}
			keys := map[proxyKey]*keyState{}
			for i := 0; i < 100; i++ {
				k := proxyKey{id: mesh.NewIdentity(td, "clients", fmt.Sprintf("c-%d", i)), kind: KindProxyless}
				ks := &keyState{}
				svc := state.Services[i]
				name := generate.ClientListenerName(&svc, 8080)
				cluster := generate.ClusterName(svc.Key(), 8080, "")
				ks.subscribe(types.Listener, map[string]struct{}{name: {}}, false)
				ks.subscribe(types.Route, map[string]struct{}{name: {}}, false)
				ks.subscribe(types.Cluster, map[string]struct{}{cluster: {}}, false)
				ks.subscribe(types.Endpoint, map[string]struct{}{cluster: {}}, false)
				keys[k] = ks
			}
			keys[proxyKey{id: state.Services[1].Endpoints[0].Identity, kind: KindSidecar}] = watchingAll()
			for k, ks := range keys {
				if _, _, err := bl.snapshot(k, ks); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := bl.update(withNewService(state, i)); err != nil {
					b.Fatal(err)
				}
				for k, ks := range keys {
					if _, _, err := bl.snapshot(k, ks); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// marshalAll marshals resources deterministically, in order.
func marshalAll(t *testing.T, rs []types.Resource) []string {
	t.Helper()
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func TestCachedRebuildEqualsFromScratchAfterChanges(t *testing.T) {
	base := syntheticMesh(60)
	serverID := base.Services[5].Endpoints[0].Identity
	steps := []struct {
		name string
		// maxBuilt bounds the pieces the step may generate (-1: no bound).
		maxBuilt int
		change   func(mesh.State) mesh.State
	}{
		{"a service is added", 5, func(s mesh.State) mesh.State { return withNewService(s, 1) }},
		{"a service gets a second port", 10, func(s mesh.State) mesh.State {
			s.Services = append([]mesh.Service(nil), s.Services...)
			s.Services[5].Ports = []mesh.Port{{Name: "grpc", Port: 8080, Protocol: mesh.ProtocolGRPC}, {Name: "http", Port: 9090, Protocol: mesh.ProtocolHTTP}}
			return s
		}},
		{"a service's port changes protocol", 10, func(s mesh.State) mesh.State {
			s.Services = append([]mesh.Service(nil), s.Services...)
			s.Services[5].Ports = []mesh.Port{{Name: "grpc", Port: 8080, Protocol: mesh.ProtocolGRPC}, {Name: "http", Port: 9090, Protocol: mesh.ProtocolHTTP2}}
			return s
		}},
		{"a split's weights change", 5, func(s mesh.State) mesh.State {
			s.TrafficSplits = append([]mesh.TrafficSplit(nil), s.TrafficSplits...)
			s.TrafficSplits[0].Backends = []mesh.SplitBackend{{Service: "svc-10", Weight: 0}, {Service: "svc-20", Weight: 100}}
			return s
		}},
		{"a split backend loses its last ready endpoint", -1, func(s mesh.State) mesh.State {
			return withReadiness(s, "svc-30", false)
		}},
		{"the split backend is ready again", -1, func(s mesh.State) mesh.State {
			return withReadiness(s, "svc-30", true)
		}},
		{"a split's backends all go to zero", 5, func(s mesh.State) mesh.State {
			s.TrafficSplits = append([]mesh.TrafficSplit(nil), s.TrafficSplits...)
			s.TrafficSplits[1].Backends = []mesh.SplitBackend{{Service: "svc-21", Weight: 0}, {Service: "svc-31", Weight: 0}}
			return s
		}},
		{"a traffic target gains a source", 0, func(s mesh.State) mesh.State {
			s.TrafficTargets = append([]mesh.TrafficTarget(nil), s.TrafficTargets...)
			s.TrafficTargets[5].Sources = []mesh.Identity{mesh.NewIdentity(td, "client", "client"), mesh.NewIdentity(td, "client", "other")}
			return s
		}},
		{"permissive mode is switched on", 0, func(s mesh.State) mesh.State {
			s.Settings.PermissiveTrafficPolicy = true
			return s
		}},
		{"a split backend's service is removed", -1, func(s mesh.State) mesh.State {
			s.Services = slices.DeleteFunc(append([]mesh.Service(nil), s.Services...), func(svc mesh.Service) bool { return svc.Name == "svc-20" })
			return s
		}},
		{"a service without endpoints is added", 5, func(s mesh.State) mesh.State {
			s.Services = append(append([]mesh.Service(nil), s.Services...), mesh.Service{Namespace: "ns-3", Name: "empty", Cluster: "east",
				Ports: []mesh.Port{{Name: "http", Port: 8080, Protocol: mesh.ProtocolHTTP}}})
			return s
		}},
		{"the trust domain changes", -1, func(s mesh.State) mesh.State {
			s.Settings.TrustDomain = "other.local"
			return s
		}},
		{"the added service is removed", 0, func(s mesh.State) mesh.State {
			s.Services = slices.DeleteFunc(append([]mesh.Service(nil), s.Services...), func(svc mesh.Service) bool { return svc.Name == "fresh-1" })
			return s
		}},
		{"permissive mode is switched off", 0, func(s mesh.State) mesh.State {
			s.Settings.PermissiveTrafficPolicy = false
			return s
		}},
		{"a remote cluster exports a local service and it is imported (clusterset name)", -1, func(s mesh.State) mesh.State {
			port := []mesh.Port{{Name: "grpc", Port: 8080, TargetPort: 9100, Protocol: mesh.ProtocolGRPC}}
			s.Remote = map[string]mesh.ClusterCatalog{"west": {Cluster: "west", Version: 1, Services: []mesh.Service{{
				Namespace: "ns-5", Name: "svc-5", Cluster: "west", Ports: port,
				Endpoints: []mesh.Endpoint{{Address: "10.200.0.1", Cluster: "west", Ready: true, Identity: serverID}},
			}}}}
			s.Imports = []mesh.Import{{Namespace: "ns-5", Name: "svc-5", Ports: port, Clusters: []string{"east", "west"}}}
			return s
		}},
		{"the remote export's endpoints change", 0, func(s mesh.State) mesh.State {
			cat := s.Remote["west"]
			cat.Services = append([]mesh.Service(nil), cat.Services...)
			cat.Services[0].Endpoints = []mesh.Endpoint{
				{Address: "10.200.0.1", Cluster: "west", Ready: true, Identity: serverID},
				{Address: "10.200.0.2", Cluster: "west", Ready: true, Identity: serverID},
			}
			s.Remote = map[string]mesh.ClusterCatalog{"west": cat}
			return s
		}},
		{"clusterset local first is switched on", 0, func(s mesh.State) mesh.State {
			s.Settings.ClusterSetLocalFirst = true
			return s
		}},
		{"the local exporter has nothing ready", 0, func(s mesh.State) mesh.State {
			s.Services = append([]mesh.Service(nil), s.Services...)
			for i := range s.Services {
				if s.Services[i].Name == "svc-5" {
					eps := append([]mesh.Endpoint(nil), s.Services[i].Endpoints...)
					for j := range eps {
						eps[j].Ready = false
					}
					s.Services[i].Endpoints = eps
				}
			}
			return s
		}},
		{"the import is removed", 0, func(s mesh.State) mesh.State {
			s.Imports = nil
			return s
		}},
	}
	keys := []proxyKey{
		{id: serverID, kind: KindProxyless}, {id: serverID, kind: KindSidecar},
		{id: mesh.NewIdentity(td, "ns-0", "fresh-1"), kind: KindProxyless},
		{id: mesh.NewIdentity(td, "client", "client"), kind: KindSidecar},
	}
	inc, states := primedBuilder(t, base, keys)
	state := base
	for _, step := range steps {
		state = step.change(state)
		before := inc.pieces.built
		if _, err := inc.update(state); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if built := inc.pieces.built - before; step.maxBuilt >= 0 && built > step.maxBuilt {
			t.Errorf("%s: generated %d pieces, want at most %d (the changed services' own)", step.name, built, step.maxBuilt)
		}

		// The shared parts equal what the generators make from scratch.
		ix := generate.NewIndex(state)
		scratch := map[Kind]typeSet{
			KindProxyless: {types.Listener: generate.ProxylessClientListeners(ix), types.Route: generate.ProxylessRoutes(ix), types.Cluster: generate.ProxylessClusters(ix)},
			KindSidecar:   {types.Listener: generate.SidecarOutboundListeners(ix), types.Route: generate.SidecarOutboundRoutes(ix), types.Cluster: generate.SidecarClusters(ix)},
		}
		for kind, set := range scratch {
			for _, typ := range []types.ResponseType{types.Listener, types.Route, types.Cluster} {
				if got, want := marshalAll(t, inc.kinds[kind].types[typ].items), marshalAll(t, set[typ]); !slices.Equal(got, want) {
					t.Errorf("%s: %s type %d: cached pieces differ from a from-scratch generation (%d vs %d resources)", step.name, kind, typ, len(got), len(want))
				}
			}
		}

		// Every proxy's snapshot equals a new builder's.
		checkMatchesFullRebuild(t, step.name, inc, state, keys, states)
	}
}

// withReadiness marks every endpoint of the named service ready or not.
func withReadiness(s mesh.State, name string, ready bool) mesh.State {
	s.Services = append([]mesh.Service(nil), s.Services...)
	for i := range s.Services {
		if s.Services[i].Name != name {
			continue
		}
		eps := append([]mesh.Endpoint(nil), s.Services[i].Endpoints...)
		for j := range eps {
			eps[j].Ready = ready
		}
		s.Services[i].Endpoints = eps
	}
	return s
}
