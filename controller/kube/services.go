package kube

import (
	"cmp"
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
// A build still visits every Service (to notice additions, removals and
// changed resource versions), but that is a few map lookups and string
// comparisons per Service, not a conversion.
//
// It is owned by the Watcher's worker goroutine; nothing in it is locked.
type serviceCache struct {
	entries map[mesh.NamespacedName]*serviceEntry
	// byPod maps a Pod ("ns/name") to the Services whose conversion looked
	// it up, so that a Pod change re-converts exactly those.
	byPod map[string]map[mesh.NamespacedName]struct{}
	// gen counts builds; an entry not visited by the latest is dropped.
	gen uint64
}

// serviceEntry is one converted Service and the inputs it came from.
type serviceEntry struct {
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

// build returns the mesh.Services of svcs (already filtered to the mesh's
// members and sorted by namespace and name) and the problems of those that
// cannot be converted. dirtyPods are the Pods ("ns/name") that changed
// since the last build; Services that looked them up are re-converted.
func (c *serviceCache) build(settings mesh.Settings, svcs []*corev1.Service, in serviceInputs, dirtyPods []string) ([]mesh.Service, []mesh.Problem) {
	c.gen++
	for _, pod := range dirtyPods {
		for key := range c.byPod[pod] {
			if e := c.entries[key]; e != nil {
				e.stale = true
			}
		}
	}
	cs := conversionSettingsOf(settings)
	out := make([]mesh.Service, 0, len(svcs))
	var problems []mesh.Problem
	for _, svc := range svcs {
		key := mesh.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		sls := in.slices(svc.Namespace, svc.Name)
		e := c.entries[key]
		if e == nil || !e.current(svc, sls, cs) {
			e = c.convert(key, settings, svc, sls, in.pods)
		}
		e.seen = c.gen
		if e.err != nil {
			problems = append(problems, mesh.Problem{Kind: mesh.ObjectService, Namespace: svc.Namespace, Name: svc.Name, Err: e.err})
			continue
		}
		out = append(out, e.svc)
	}
	for key, e := range c.entries {
		if e.seen != c.gen {
			c.forget(key, e)
		}
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

// convert converts svc afresh and records it (and the Pods it read) in c.
func (c *serviceCache) convert(key mesh.NamespacedName, settings mesh.Settings, svc *corev1.Service, sls []*discoveryv1.EndpointSlice, pods func(ns, name string) (PodInfo, bool)) *serviceEntry {
	if old := c.entries[key]; old != nil {
		c.forget(key, old)
	}
	// Sorted by name so that the result does not depend on the order the
	// index returns them in (ServiceFrom keeps the last of duplicate
	// addresses).
	sls = slices.Clone(sls)
	slices.SortFunc(sls, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	e := &serviceEntry{version: svc.ResourceVersion, settings: conversionSettingsOf(settings)}
	for _, sl := range sls {
		e.slices = append(e.slices, sliceVersion{sl.Name, sl.ResourceVersion})
	}
	e.svc, e.err = ServiceFrom(settings, svc, sls, func(ns, name string) (PodInfo, bool) {
		e.pods = append(e.pods, ns+"/"+name)
		return pods(ns, name)
	})
	c.entries[key] = e
	for _, pod := range e.pods {
		m := c.byPod[pod]
		if m == nil {
			m = map[mesh.NamespacedName]struct{}{}
			c.byPod[pod] = m
		}
		m[key] = struct{}{}
	}
	return e
}

// forget removes e, stored under key, and its Pod references.
func (c *serviceCache) forget(key mesh.NamespacedName, e *serviceEntry) {
	for _, pod := range e.pods {
		if m := c.byPod[pod]; m != nil {
			delete(m, key)
			if len(m) == 0 {
				delete(c.byPod, pod)
			}
		}
	}
	delete(c.entries, key)
}
