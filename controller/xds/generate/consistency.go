package generate

import (
	"errors"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// ErrInconsistent is wrapped by CheckReferences errors.
var ErrInconsistent = errors.New("inconsistent resources")

// Validate runs ValidateAll on every resource and returns every failure,
// naming the resource.
func Validate(resources ...[]types.Resource) error {
	var errs []error
	for _, list := range resources {
		for _, r := range list {
			v, ok := r.(interface{ ValidateAll() error })
			if !ok {
				continue
			}
			if err := v.ValidateAll(); err != nil {
				errs = append(errs, fmt.Errorf("%T %s: %w", r, resourceName(r), err))
			}
		}
	}
	return errors.Join(errs...)
}

func resourceName(r types.Resource) string {
	if n, ok := r.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	if c, ok := r.(*endpointv3.ClusterLoadAssignment); ok {
		return c.GetClusterName()
	}
	return "?"
}

// CheckReferences checks that a proxy's resources are complete: every route
// configuration a listener names by RDS — through an ApiListener (proxyless
// clients) or a filter chain's HTTP connection manager (Envoy, proxyless
// servers) — exists, every cluster a route (or an inline route
// configuration) names exists, and every EDS cluster's assignment exists.
// go-control-plane's Snapshot.Consistent does not know ApiListeners, hence
// this check.
func CheckReferences(listeners, routes, clusters, endpoints []types.Resource) error {
	return NewRefIndex(nil, routes, clusters, endpoints).Check(listeners, routes, clusters)
}

// RefIndex holds the names resources can refer to: route configurations,
// clusters and load assignments, on top of an optional parent index (so the
// part every proxy shares is indexed once and each proxy adds its own).
type RefIndex struct {
	parent                      *RefIndex
	routes, clusters, endpoints map[string]bool
}

// NewRefIndex indexes the names of routes, clusters and endpoints on top of
// parent (which may be nil).
func NewRefIndex(parent *RefIndex, routes, clusters, endpoints []types.Resource) *RefIndex {
	ix := &RefIndex{parent: parent, routes: map[string]bool{}, clusters: map[string]bool{}, endpoints: map[string]bool{}}
	for _, r := range routes {
		ix.routes[r.(*routev3.RouteConfiguration).GetName()] = true
	}
	for _, c := range clusters {
		ix.clusters[c.(*clusterv3.Cluster).GetName()] = true
	}
	for _, e := range endpoints {
		ix.endpoints[e.(*endpointv3.ClusterLoadAssignment).GetClusterName()] = true
	}
	return ix
}

func (ix *RefIndex) has(which func(*RefIndex) map[string]bool, name string) bool {
	for i := ix; i != nil; i = i.parent {
		if which(i)[name] {
			return true
		}
	}
	return false
}

// Check checks that every reference made by listeners, routes and clusters
// resolves in ix.
func (ix *RefIndex) Check(listeners, routes, clusters []types.Resource) error {
	hasRoute := func(n string) bool { return ix.has(func(i *RefIndex) map[string]bool { return i.routes }, n) }
	hasCluster := func(n string) bool { return ix.has(func(i *RefIndex) map[string]bool { return i.clusters }, n) }
	hasEndpoints := func(n string) bool { return ix.has(func(i *RefIndex) map[string]bool { return i.endpoints }, n) }
	var errs []error
	checkHCM := func(listener string, hcm *hcmv3.HttpConnectionManager) {
		if rds := hcm.GetRds(); rds != nil && !hasRoute(rds.GetRouteConfigName()) {
			errs = append(errs, fmt.Errorf("%w: listener %s: route configuration %s is missing", ErrInconsistent, listener, rds.GetRouteConfigName()))
		}
		if rc := hcm.GetRouteConfig(); rc != nil {
			errs = append(errs, checkRouteClusters(rc, hasCluster)...)
		}
	}
	for _, r := range listeners {
		l := r.(*listenerv3.Listener)
		if api := l.GetApiListener().GetApiListener(); api != nil {
			hcm := &hcmv3.HttpConnectionManager{}
			if err := api.UnmarshalTo(hcm); err != nil {
				errs = append(errs, fmt.Errorf("%w: listener %s: api listener: %w", ErrInconsistent, l.GetName(), err))
				continue
			}
			checkHCM(l.GetName(), hcm)
		}
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				if f.GetName() != hcmFilterName {
					continue
				}
				hcm := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					errs = append(errs, fmt.Errorf("%w: listener %s: %w", ErrInconsistent, l.GetName(), err))
					continue
				}
				checkHCM(l.GetName(), hcm)
			}
		}
	}
	for _, r := range routes {
		errs = append(errs, checkRouteClusters(r.(*routev3.RouteConfiguration), hasCluster)...)
	}
	for _, r := range clusters {
		c := r.(*clusterv3.Cluster)
		if c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		name := c.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = c.GetName()
		}
		if !hasEndpoints(name) {
			errs = append(errs, fmt.Errorf("%w: cluster %s: load assignment %s is missing", ErrInconsistent, c.GetName(), name))
		}
	}
	return errors.Join(errs...)
}

func checkRouteClusters(rc *routev3.RouteConfiguration, hasCluster func(string) bool) []error {
	var errs []error
	missing := func(name string) {
		if !hasCluster(name) {
			errs = append(errs, fmt.Errorf("%w: route configuration %s: cluster %s is missing", ErrInconsistent, rc.GetName(), name))
		}
	}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a := r.GetRoute()
			if a == nil {
				continue
			}
			if c := a.GetCluster(); c != "" {
				missing(c)
			}
			for _, w := range a.GetWeightedClusters().GetClusters() {
				missing(w.GetName())
			}
		}
	}
	return errs
}
