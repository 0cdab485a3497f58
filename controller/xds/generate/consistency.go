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
	"google.golang.org/protobuf/proto"
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

// Refs are the names one resource refers to. Owner says who refers
// ("listener x", "route configuration y", "cluster z"), for errors.
type Refs struct {
	Owner     string
	Routes    []string
	Clusters  []string
	Endpoints []string
	// Secrets are SDS names (sidecar TLS contexts); they resolve in the
	// proxy's own secrets, see CheckSecretRefs.
	Secrets []string
}

// ReferencesOf returns the names a listener, route configuration, virtual
// host (owner: the route configuration that will hold it) or cluster refers
// to. Taking them once, when a resource is built, lets a consumer that
// reuses resources check references with lookups only.
func ReferencesOf(r proto.Message, owner string) (Refs, error) {
	switch r := r.(type) {
	case *listenerv3.Listener:
		return listenerRefs(r)
	case *routev3.RouteConfiguration:
		refs := Refs{Owner: "route configuration " + r.GetName()}
		for _, vh := range r.GetVirtualHosts() {
			refs.Clusters = appendRouteClusters(refs.Clusters, vh)
		}
		return refs, nil
	case *routev3.VirtualHost:
		return Refs{Owner: "route configuration " + owner, Clusters: appendRouteClusters(nil, r)}, nil
	case *clusterv3.Cluster:
		refs := Refs{Owner: "cluster " + r.GetName()}
		if r.GetType() == clusterv3.Cluster_EDS {
			name := r.GetEdsClusterConfig().GetServiceName()
			if name == "" {
				name = r.GetName()
			}
			refs.Endpoints = []string{name}
		}
		secrets, err := transportSocketSecretRefs(r.GetTransportSocket(), false)
		if err != nil {
			return refs, fmt.Errorf("%w: cluster %s: %w", ErrInconsistent, r.GetName(), err)
		}
		refs.Secrets = secrets
		return refs, nil
	}
	return Refs{}, nil
}

func listenerRefs(l *listenerv3.Listener) (Refs, error) {
	refs := Refs{Owner: "listener " + l.GetName()}
	addHCM := func(hcm *hcmv3.HttpConnectionManager) {
		if rds := hcm.GetRds(); rds != nil {
			refs.Routes = append(refs.Routes, rds.GetRouteConfigName())
		}
		if rc := hcm.GetRouteConfig(); rc != nil {
			for _, vh := range rc.GetVirtualHosts() {
				refs.Clusters = appendRouteClusters(refs.Clusters, vh)
			}
		}
	}
	var errs []error
	if api := l.GetApiListener().GetApiListener(); api != nil {
		hcm := &hcmv3.HttpConnectionManager{}
		if err := api.UnmarshalTo(hcm); err != nil {
			errs = append(errs, fmt.Errorf("%w: listener %s: api listener: %w", ErrInconsistent, l.GetName(), err))
		} else {
			addHCM(hcm)
		}
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
			addHCM(hcm)
		}
	}
	secrets, err := listenerSecretRefs(l)
	if err != nil {
		errs = append(errs, err)
	}
	refs.Secrets = secrets
	return refs, errors.Join(errs...)
}

func appendRouteClusters(out []string, vh *routev3.VirtualHost) []string {
	for _, r := range vh.GetRoutes() {
		a := r.GetRoute()
		if a == nil {
			continue
		}
		if c := a.GetCluster(); c != "" {
			out = append(out, c)
		}
		for _, w := range a.GetWeightedClusters().GetClusters() {
			out = append(out, w.GetName())
		}
	}
	return out
}

// NameSet is a set of resource names.
type NameSet interface{ Has(name string) bool }

type boolSet map[string]bool

func (s boolSet) Has(n string) bool { return s[n] }

// ItemSet is a snapshot's resource map as a NameSet.
type ItemSet map[string]types.ResourceWithTTL

// Has reports whether s holds a resource named n.
func (s ItemSet) Has(n string) bool { _, ok := s[n]; return ok }

// RefIndex holds the names resources can refer to: route configurations,
// clusters and load assignments, on top of an optional parent index (so the
// part every proxy shares is indexed once and each proxy adds its own).
type RefIndex struct {
	parent                      *RefIndex
	routes, clusters, endpoints NameSet
}

// NewRefIndex indexes the names of routes, clusters and endpoints on top of
// parent (which may be nil).
func NewRefIndex(parent *RefIndex, routes, clusters, endpoints []types.Resource) *RefIndex {
	r, c, e := boolSet{}, boolSet{}, boolSet{}
	for _, x := range routes {
		r[x.(*routev3.RouteConfiguration).GetName()] = true
	}
	for _, x := range clusters {
		c[x.(*clusterv3.Cluster).GetName()] = true
	}
	for _, x := range endpoints {
		e[x.(*endpointv3.ClusterLoadAssignment).GetClusterName()] = true
	}
	return NewRefIndexOf(parent, r, c, e)
}

// NewRefIndexOf is a RefIndex over existing name sets (which it does not
// copy; they must not change while it is used).
func NewRefIndexOf(parent *RefIndex, routes, clusters, endpoints NameSet) *RefIndex {
	return &RefIndex{parent: parent, routes: routes, clusters: clusters, endpoints: endpoints}
}

func (ix *RefIndex) has(which func(*RefIndex) NameSet, name string) bool {
	for i := ix; i != nil; i = i.parent {
		if which(i).Has(name) {
			return true
		}
	}
	return false
}

// CheckRefs checks that every name in refs resolves in ix.
func (ix *RefIndex) CheckRefs(refs *Refs) error {
	var errs []error
	for _, n := range refs.Routes {
		if !ix.has(func(i *RefIndex) NameSet { return i.routes }, n) {
			errs = append(errs, fmt.Errorf("%w: %s: route configuration %s is missing", ErrInconsistent, refs.Owner, n))
		}
	}
	for _, n := range refs.Clusters {
		if !ix.has(func(i *RefIndex) NameSet { return i.clusters }, n) {
			errs = append(errs, fmt.Errorf("%w: %s: cluster %s is missing", ErrInconsistent, refs.Owner, n))
		}
	}
	for _, n := range refs.Endpoints {
		if !ix.has(func(i *RefIndex) NameSet { return i.endpoints }, n) {
			errs = append(errs, fmt.Errorf("%w: %s: load assignment %s is missing", ErrInconsistent, refs.Owner, n))
		}
	}
	return errors.Join(errs...)
}

// Check checks that every reference made by listeners, routes and clusters
// resolves in ix.
func (ix *RefIndex) Check(listeners, routes, clusters []types.Resource) error {
	var errs []error
	for _, list := range [][]types.Resource{listeners, routes, clusters} {
		for _, r := range list {
			refs, err := ReferencesOf(r, "")
			if err != nil {
				errs = append(errs, err)
			}
			if err := ix.CheckRefs(&refs); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
