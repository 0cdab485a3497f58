package generate

import (
	"maps"
	"slices"
	"testing"

	"github.com/meshfed/meshfed/mesh"
)

// weights returns the default route's clusters and weights, and the
// clusters the keep-warm route names (nil if there is none).
func weights(t *testing.T, c ClientPort) (map[string]uint32, []string) {
	t.Helper()
	rc := ProxylessRoute(&c)
	if err := rc.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	routes := rc.VirtualHosts[0].Routes
	got := map[string]uint32{}
	switch a := routes[0].GetRoute(); {
	case a.GetCluster() != "":
		got[a.GetCluster()] = 1
	default:
		for _, w := range a.GetWeightedClusters().GetClusters() {
			got[w.Name] = w.Weight.GetValue()
		}
	}
	if len(routes) == 1 {
		return got, nil
	}
	if len(routes) != 2 || routes[1].Name != "keep-warm" || routes[1].Match.GetPrefix() != "/" || routes[0].Match.GetPrefix() != "/" {
		t.Fatalf("routes: want default then keep-warm, both matching every call: %v", routes)
	}
	var warm []string
	for _, w := range routes[1].GetRoute().GetWeightedClusters().GetClusters() {
		if w.Weight.GetValue() == 0 {
			t.Errorf("keep-warm names %s at weight 0: grpc-go would ignore it", w.Name)
		}
		warm = append(warm, w.Name)
	}
	return got, warm
}

func TestRoutesNeverSendCallsToAClusterTheyDidNotName(t *testing.T) {
	svc := mesh.NamespacedName{Namespace: "bookstore", Name: "bookstore"}
	root, v1, v2 := "bookstore/bookstore:14001", "bookstore/bookstore-v1:14001", "bookstore/bookstore-v2:14001@west"
	split := []WeightedBackend{{Cluster: v1, Weight: 50}, {Cluster: v2, Weight: 50}}
	for _, tc := range []struct {
		name string
		port ClientPort
		want map[string]uint32
	}{
		{"no split: the own cluster, no keep-warm route", ClientPort{Service: svc, Port: 14001}, map[string]uint32{root: 1}},
		{"split", ClientPort{Service: svc, Port: 14001, Backends: split}, map[string]uint32{v1: 50, v2: 50}},
		{"a backend at weight zero stays named", ClientPort{Service: svc, Port: 14001, Backends: []WeightedBackend{{Cluster: v1, Weight: 0}, {Cluster: v2, Weight: 100}}},
			map[string]uint32{v1: 0, v2: 100}},
		{"every weight zero: the own cluster", ClientPort{Service: svc, Port: 14001, Backends: []WeightedBackend{{Cluster: v1}, {Cluster: v2}}}, map[string]uint32{root: 1}},
		{"a warming backend gets nothing", ClientPort{Service: svc, Port: 14001, Backends: split, Warming: []string{v2}}, map[string]uint32{v1: 50}},
		{"every backend warming: the own cluster", ClientPort{Service: svc, Port: 14001, Backends: split, Warming: []string{v1, v2}}, map[string]uint32{root: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, warm := weights(t, tc.port)
			if !maps.Equal(got, tc.want) {
				t.Errorf("default route: got %v, want %v", got, tc.want)
			}
			if len(tc.port.Backends) == 0 {
				if warm != nil {
					t.Errorf("keep-warm route %v with no split", warm)
				}
				return
			}
			want := append([]string{root}, v1, v2)
			if !slices.Equal(warm, want) {
				t.Errorf("keep-warm names %v, want %v", warm, want)
			}
		})
	}
	a, b := ClientPort{Service: svc, Port: 14001, Backends: split}, ClientPort{Service: svc, Port: 14001, Backends: split, Warming: []string{v2}}
	if a.Equal(&b) {
		t.Error("ports that differ in Warming are Equal: a cache would keep the warming route")
	}

}
