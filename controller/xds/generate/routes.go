package generate

import (
	"slices"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Moving a route between clusters without failing a call in grpc-go.
//
// grpc-go's xDS channel keeps one load-balancing child per cluster its
// routes name, and applies a new route configuration in two steps: first
// the routing decision, then the children. A call routed in between to a
// cluster the previous routes did not name fails at once ("unknown cluster
// selected for RPC"). This happens whenever a route starts to use a
// cluster: a split is created or changed, a withdrawn cluster's share
// moves home to the service's own cluster, another cluster exports a
// backend again.
//
// So a route never sends traffic to a cluster it did not name before:
//   - after the default route (which matches every call) comes a route
//     that can never be chosen, naming every cluster the default route may
//     move to — the service's own cluster and every backend of its split,
//     at any weight (grpc-go ignores clusters at weight zero);
//   - a backend new to the route is Warming: named by that second route
//     only, until the client has had time to make its child
//     (controller/xds/server sets and clears Warming).
//
// Envoy has no such window (its clusters come from CDS, not from routes);
// the unused route costs it nothing.

// References returns every cluster the port's routes name: its own
// cluster and its split's backends, each once, in that order.
func (c *ClientPort) References() []string {
	out := []string{c.Cluster()}
	for _, b := range c.Backends {
		if !slices.Contains(out, b.Cluster) {
			out = append(out, b.Cluster)
		}
	}
	return out
}

// routeAction forwards to the weighted backends of the TrafficSplit whose
// root is the service, leaving out warming ones (those at weight zero stay,
// for Envoy's statistics); with no split, or no backend left with a
// weight, to the service's own cluster.
func routeAction(c *ClientPort) *routev3.Route_Route {
	var weighted []*routev3.WeightedCluster_ClusterWeight
	var total uint64
	for _, b := range c.Backends {
		if slices.Contains(c.Warming, b.Cluster) {
			continue
		}
		weighted = append(weighted, &routev3.WeightedCluster_ClusterWeight{Name: b.Cluster, Weight: wrapperspb.UInt32(b.Weight)})
		total += uint64(b.Weight)
	}
	if total == 0 {
		return &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: c.Cluster()}}}
	}
	return &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
		WeightedClusters: &routev3.WeightedCluster{Clusters: weighted},
	}}}
}

// keepWarmRoute is the route that follows the default route and so is
// never chosen: it names every cluster of References at weight 1, so that
// grpc-go keeps a child for each. A port whose only reference is its own
// cluster needs none.
func keepWarmRoute(c *ClientPort) *routev3.Route {
	refs := c.References()
	if len(refs) < 2 {
		return nil
	}
	weighted := make([]*routev3.WeightedCluster_ClusterWeight, 0, len(refs))
	for _, n := range refs {
		weighted = append(weighted, &routev3.WeightedCluster_ClusterWeight{Name: n, Weight: wrapperspb.UInt32(1)})
	}
	return &routev3.Route{
		Name:  "keep-warm",
		Match: prefixMatch("/"),
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
			WeightedClusters: &routev3.WeightedCluster{Clusters: weighted},
		}}},
	}
}
