package generate

import (
	"testing"

	"github.com/meshfed/meshfed/mesh"
)

func clusterSetState(localReady bool, localFirst bool) mesh.State {
	port := []mesh.Port{{Name: "grpc", Port: 14001, Protocol: mesh.ProtocolGRPC}}
	return mesh.State{
		Settings: mesh.Settings{ClusterName: "east", TrustDomain: "cluster.local", ClusterSetLocalFirst: localFirst},
		Services: []mesh.Service{{Namespace: "bookstore", Name: "bookstore", Cluster: "east", Ports: port,
			Endpoints: []mesh.Endpoint{{Address: "10.0.0.1", Cluster: "east", Ready: localReady}}}},
		Imports: []mesh.Import{{Namespace: "bookstore", Name: "bookstore", Ports: port, Clusters: []string{"east", "west"}}},
		Remote: map[string]mesh.ClusterCatalog{"west": {Cluster: "west", Services: []mesh.Service{{
			Namespace: "bookstore", Name: "bookstore", Cluster: "west",
			Ports:     []mesh.Port{{Name: "grpc", Port: 14001, TargetPort: 15001, Protocol: mesh.ProtocolGRPC}},
			Endpoints: []mesh.Endpoint{{Address: "10.1.0.1", Cluster: "west", Ready: true}, {Address: "10.1.0.2", Cluster: "west", Ready: true}},
		}}}},
	}
}

// priorities returns, per locality sub-zone, its priority and weight.
func clusterSetLocalities(t *testing.T, s mesh.State) map[string][2]uint32 {
	t.Helper()
	ix := NewIndex(s)
	imp, ok := ix.ClusterSetImport(mesh.NamespacedName{Namespace: "bookstore", Name: "bookstore"})
	if !ok {
		t.Fatal("no import")
	}
	clas := ClusterSetLoadAssignments(ix, imp)
	if len(clas) != 1 {
		t.Fatalf("%d load assignments", len(clas))
	}
	if err := clas[0].ValidateAll(); err != nil {
		t.Fatal(err)
	}
	out := map[string][2]uint32{}
	for _, l := range clas[0].Endpoints {
		out[l.GetLocality().GetSubZone()] = [2]uint32{l.GetPriority(), l.GetLoadBalancingWeight().GetValue()}
		if l.GetLocality().GetSubZone() == "west" {
			for _, e := range l.LbEndpoints {
				if p := e.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue(); p != 15001 {
					t.Errorf("west endpoint port %d, want the exported target port 15001", p)
				}
			}
		}
	}
	return out
}

func TestClusterSetLocalitiesFollowReadyEndpointsAndLocalFirst(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		localReady, localFirst bool
		want                   map[string][2]uint32 // sub-zone → {priority, weight}
	}{
		{"balanced: one locality per cluster weighted by ready endpoints", true, false, map[string][2]uint32{"east": {0, 1}, "west": {0, 2}}},
		{"local first: local cluster priority 0, others priority 1", true, true, map[string][2]uint32{"east": {0, 1}, "west": {1, 2}}},
		{"local first with nothing ready locally: remote moves up to priority 0", false, true, map[string][2]uint32{"west": {0, 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := clusterSetLocalities(t, clusterSetState(tc.localReady, tc.localFirst))
			if len(got) != len(tc.want) {
				t.Fatalf("localities %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("locality %s: {priority, weight} = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}
