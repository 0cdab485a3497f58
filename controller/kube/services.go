package kube

import (
	"cmp"
	"k8s.io/client-go/tools/cache"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/meshfed/meshfed/mesh"
)

// indexByService is the EndpointSlice informer's index of slices by the
// Service they belong to: "<namespace>/<kubernetes.io/service-name>".
const indexByService = "meshfed.io/service"

// sliceServiceKey is the indexByService index function.
func sliceServiceKey(obj any) ([]string, error) {
	sl, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := sl.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{sl.Namespace + "/" + name}, nil
}

// SlicesOf returns the EndpointSlices of Service ns/name from the
// EndpointSlice informer's indexer (NewInformers indexes it by Service): a
// lookup, where a label selector would scan every slice of the namespace.
func SlicesOf(slices cache.Indexer, ns, name string) []*discoveryv1.EndpointSlice {
	objs, _ := slices.ByIndex(indexByService, ns+"/"+name)
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if sl, ok := o.(*discoveryv1.EndpointSlice); ok {
			out = append(out, sl)
		}
	}
	return out
}

// serviceInputs finds what converting one Service needs: its
// EndpointSlices (in any order) and the Pods its endpoints name. The
// Watcher reads them from its informers; tests use maps.
type serviceInputs struct {
	slices func(ns, name string) []*discoveryv1.EndpointSlice
	pods   func(ns, name string) (PodInfo, bool)
}

// serviceCache keeps every meshed Service's converted mesh.Service together
// with the versions of the objects it was converted from, so that a build
// converts only the Services whose Service object, EndpointSlices, Pods or
// conversion settings changed. The others' values are handed on as they
// were, sharing their Ports and Endpoints slices with the previous State:
// besides saving the conversion, that makes the xDS server's comparison of
// an unchanged service's endpoints O(1) (controller/xds/server Update).
//
// A build still visits every Service (to notice additions and removals),
// but for a Service the informer handlers did not name that is a few map
// lookups and a string comparison, not a listing of its slices or a
// conversion.
//
// It is owned by the Watcher's worker goroutine; nothing in it is locked.
type serviceCache struct {
	entries map[mesh.NamespacedName]*serviceEntry
	// byPod maps a Pod ("ns/name") to the Services whose conversion looked
	// it up, so that a Pod change re-converts exactly those.
	byPod map[string]map[mesh.NamespacedName]struct{}
	// order is the entries sorted by key; kept while no Service comes or
	// goes.
	order []*serviceEntry
	// gen counts builds; an entry not visited by the latest is dropped.
	gen uint64
}

// serviceEntry is one converted Service and the inputs it came from.
type serviceEntry struct {
	key      mesh.NamespacedName
	version  string         // the Service's resourceVersion
	slices   []sliceVersion // its EndpointSlices, sorted by name
	settings conversionSettings
	pods     []string // Pods looked up, "ns/name"
	stale    bool     // one of pods changed

	svc mesh.Service
	err error

	seen uint64
}

type sliceVersion struct{ name, version string }

// conversionSettings are the parts of mesh.Settings that ServiceFrom reads.
type conversionSettings struct{ cluster, network, trustDomain string }

func conversionSettingsOf(s mesh.Settings) conversionSettings {
	return conversionSettings{s.ClusterName, s.Network, s.TrustDomain}
}

func newServiceCache() *serviceCache {
	return &serviceCache{
		entries: map[mesh.NamespacedName]*serviceEntry{},
		byPod:   map[string]map[mesh.NamespacedName]struct{}{},
	}
}

// changes is what changed since the last build, as far as the informer
// handlers can tell.
type changes struct {
	// all is set when any Service may have changed (the first build, a
	// resync, an object whose Service cannot be told).
	all bool
	// services are the Services ("ns/name") whose Service object or
	// EndpointSlices changed.
	services map[string]struct{}
	// pods are the Pods ("ns/name") added, deleted or given another
	// ServiceAccount.
	pods []string
}

func (c *changes) markService(key string) {
	if c.services == nil {
		c.services = map[string]struct{}{}
	}
	c.services[key] = struct{}{}
}

// service reports whether Service ns/name may have changed.
func (c *changes) service(ns, name string) bool {
	if c.all {
		return true
	}
	_, ok := c.services[ns+"/"+name]
	return ok
}

// build returns the mesh.Services of svcs (already filtered to the mesh's
// members), sorted by namespace and name, and the problems of those that
// cannot be converted. A Service is looked at closely (its slices listed
// and their versions compared) only when ch says it may have changed; it
// is converted again only when its inputs did change.
func (c *serviceCache) build(settings mesh.Settings, svcs []*corev1.Service, in serviceInputs, ch changes) ([]mesh.Service, []mesh.Problem) {
	c.gen++
	for _, pod := range ch.pods {
		for key := range c.byPod[pod] {
			if e := c.entries[key]; e != nil {
				e.stale = true
			}
		}
	}
	cs := conversionSettingsOf(settings)
	reorder := false
	for _, svc := range svcs {
		key := mesh.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		e := c.entries[key]
		if e == nil {
			e = &serviceEntry{key: key}
			c.entries[key] = e
			reorder = true
		} else if !e.stale && e.version == svc.ResourceVersion && e.settings == cs && !ch.service(svc.Namespace, svc.Name) {
			e.seen = c.gen
			continue
		}
		e.seen = c.gen
		sls := in.slices(svc.Namespace, svc.Name)
		if !e.current(svc, sls, cs) {
			c.convert(e, settings, svc, sls, in.pods)
		}
	}
	if len(svcs) != len(c.entries) { // some are gone
		for key, e := range c.entries {
			if e.seen != c.gen {
				c.forget(e)
				delete(c.entries, key)
			}
		}
		reorder = true
	}
	if reorder {
		c.order = slices.SortedFunc(maps.Values(c.entries), func(a, b *serviceEntry) int {
			return cmp.Or(cmp.Compare(a.key.Namespace, b.key.Namespace), cmp.Compare(a.key.Name, b.key.Name))
		})
	}
	out := make([]mesh.Service, 0, len(c.order))
	var problems []mesh.Problem
	for _, e := range c.order {
		if e.err != nil {
			problems = append(problems, mesh.Problem{Kind: mesh.ObjectService, Namespace: e.key.Namespace, Name: e.key.Name, Err: e.err})
			continue
		}
		out = append(out, e.svc)
	}
	return out, problems
}

// current reports whether e was converted from exactly svc and slices.
func (e *serviceEntry) current(svc *corev1.Service, sls []*discoveryv1.EndpointSlice, cs conversionSettings) bool {
	if e.stale || e.version != svc.ResourceVersion || e.settings != cs || len(e.slices) != len(sls) {
		return false
	}
	for _, sl := range sls {
		i, found := slices.BinarySearchFunc(e.slices, sl.Name, func(v sliceVersion, name string) int { return cmp.Compare(v.name, name) })
		if !found || e.slices[i].version != sl.ResourceVersion {
			return false
		}
	}
	return true
}

// convert converts svc afresh into e (the Service's entry, which keeps its
// place in c.order) and records the Pods it read.
func (c *serviceCache) convert(e *serviceEntry, settings mesh.Settings, svc *corev1.Service, sls []*discoveryv1.EndpointSlice, pods func(ns, name string) (PodInfo, bool)) {
	c.forget(e)
	// Sorted by name so that the result does not depend on the order the
	// index returns them in (ServiceFrom keeps the last of duplicate
	// addresses).
	sls = slices.Clone(sls)
	slices.SortFunc(sls, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	*e = serviceEntry{key: e.key, seen: e.seen, version: svc.ResourceVersion, settings: conversionSettingsOf(settings)}
	for _, sl := range sls {
		e.slices = append(e.slices, sliceVersion{sl.Name, sl.ResourceVersion})
	}
	e.svc, e.err = ServiceFrom(settings, svc, sls, func(ns, name string) (PodInfo, bool) {
		e.pods = append(e.pods, ns+"/"+name)
		return pods(ns, name)
	})
	for _, pod := range e.pods {
		m := c.byPod[pod]
		if m == nil {
			m = map[mesh.NamespacedName]struct{}{}
			c.byPod[pod] = m
		}
		m[e.key] = struct{}{}
	}
}

// forget removes e's Pod references.
func (c *serviceCache) forget(e *serviceEntry) {
	for _, pod := range e.pods {
		if m := c.byPod[pod]; m != nil {
			delete(m, e.key)
			if len(m) == 0 {
				delete(c.byPod, pod)
			}
		}
	}
}
