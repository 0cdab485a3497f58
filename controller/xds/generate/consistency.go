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
	routeSet := make(map[string]*routev3.RouteConfiguration, len(routes))
	for _, r := range routes {
		rc := r.(*routev3.RouteConfiguration)
		routeSet[rc.GetName()] = rc
	}
	clusterSet := make(map[string]bool, len(clusters))
	for _, c := range clusters {
		clusterSet[c.(*clusterv3.Cluster).GetName()] = true
	}
	endpointSet := make(map[string]bool, len(endpoints))
	for _, e := range endpoints {
		endpointSet[e.(*endpointv3.ClusterLoadAssignment).GetClusterName()] = true
	}
	var errs []error
	checkHCM := func(listener string, hcm *hcmv3.HttpConnectionManager) {
		if rds := hcm.GetRds(); rds != nil {
			if _, ok := routeSet[rds.GetRouteConfigName()]; !ok {
				errs = append(errs, fmt.Errorf("%w: listener %s: route configuration %s is missing", ErrInconsistent, listener, rds.GetRouteConfigName()))
			}
		}
		if rc := hcm.GetRouteConfig(); rc != nil {
			errs = append(errs, checkRouteClusters(rc, clusterSet)...)
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
	for _, rc := range routeSet {
		errs = append(errs, checkRouteClusters(rc, clusterSet)...)
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
		if !endpointSet[name] {
			errs = append(errs, fmt.Errorf("%w: cluster %s: load assignment %s is missing", ErrInconsistent, c.GetName(), name))
		}
	}
	return errors.Join(errs...)
}

func checkRouteClusters(rc *routev3.RouteConfiguration, clusters map[string]bool) []error {
	var errs []error
	missing := func(name string) {
		if !clusters[name] {
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
