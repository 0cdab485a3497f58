package server

import (
	"errors"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
)

// The load assignments of clusterset names (generate.ClusterSetLoadAssignment)
// depend on the import's ports, the local-first setting and the ports and
// endpoints of every exporting cluster's service. They are cached with
// those inputs like a service's (upstreamEDS): an update regenerates only
// the names whose inputs changed, and an endpoint-only update looks only
// at the imports of the services whose endpoints moved.

// clusterSetEDS is the cached load assignments of one clusterset name.
type clusterSetEDS struct {
	ports      []mesh.Port
	localFirst bool
	members    []clusterSetInput
	clas       []types.Resource
}

// clusterSetInput is what one member contributes to the load assignments.
type clusterSetInput struct {
	cluster   string
	local     bool
	ports     []mesh.Port
	endpoints []mesh.Endpoint
}

func clusterSetInputs(members []generate.ClusterSetMember) []clusterSetInput {
	out := make([]clusterSetInput, len(members))
	for i, m := range members {
		out[i] = clusterSetInput{cluster: m.Cluster, local: m.Local, ports: m.Service.Ports, endpoints: m.Service.Endpoints}
	}
	return out
}

// same reports whether e was generated from these inputs (endpoint lists
// that share their backing array compare in O(1)).
func (e *clusterSetEDS) same(ports []mesh.Port, localFirst bool, members []generate.ClusterSetMember) bool {
	if e.localFirst != localFirst || !slices.Equal(e.ports, ports) || len(e.members) != len(members) {
		return false
	}
	for i, m := range members {
		o := &e.members[i]
		if o.cluster != m.Cluster || o.local != m.Local || !slices.Equal(o.ports, m.Service.Ports) ||
			!mesh.SameEndpoints(o.endpoints, m.Service.Endpoints) {
			return false
		}
	}
	return true
}

// clusterSetDelta is the clusterset load assignments that changed: next
// holds the regenerated names, gone the names no longer imported.
type clusterSetDelta struct {
	next map[mesh.NamespacedName]*clusterSetEDS
	gone []mesh.NamespacedName
}

func (d *clusterSetDelta) empty() bool { return len(d.next) == 0 && len(d.gone) == 0 }

// clusterSetChanges compares the clusterset names of ix with cache. only,
// when not nil, limits the comparison to those service names (an
// endpoint-only update; then nothing can be gone). New load assignments
// are validated; every failure is returned.
func clusterSetChanges(ix *generate.Index, cache map[mesh.NamespacedName]*clusterSetEDS, only []mesh.NamespacedName) (clusterSetDelta, error) {
	d := clusterSetDelta{next: map[mesh.NamespacedName]*clusterSetEDS{}}
	localFirst := ix.State.Settings.ClusterSetLocalFirst
	var invalid []error
	check := func(imp *mesh.Import) {
		key := mesh.NamespacedName{Namespace: imp.Namespace, Name: imp.Name}
		if _, done := d.next[key]; done {
			return
		}
		members := ix.ClusterSetMembers(imp)
		if prev := cache[key]; prev != nil && prev.same(imp.Ports, localFirst, members) {
			return
		}
		e := &clusterSetEDS{ports: imp.Ports, localFirst: localFirst, members: clusterSetInputs(members)}
		for _, p := range imp.Ports {
			e.clas = append(e.clas, generate.ClusterSetLoadAssignment(key, p.Port, members, localFirst))
		}
		if err := generate.Validate(e.clas); err != nil {
			invalid = append(invalid, err)
			return
		}
		d.next[key] = e
	}
	if only != nil {
		for _, key := range only {
			if imp, ok := ix.ClusterSetImport(key); ok {
				check(imp)
			}
		}
	} else {
		imports := ix.ClusterSetImports()
		seen := make(map[mesh.NamespacedName]bool, len(imports))
		for _, imp := range imports {
			seen[mesh.NamespacedName{Namespace: imp.Namespace, Name: imp.Name}] = true
			check(imp)
		}
		for key := range cache {
			if !seen[key] {
				d.gone = append(d.gone, key)
			}
		}
	}
	if len(invalid) > 0 {
		return clusterSetDelta{}, errors.Join(invalid...)
	}
	return d, nil
}

// applyClusterSet patches items (a copy of the published map) and cache
// with d.
func applyClusterSet(items map[string]types.ResourceWithTTL, cache map[mesh.NamespacedName]*clusterSetEDS, d clusterSetDelta) {
	drop := func(e *clusterSetEDS) {
		for _, r := range e.clas {
			delete(items, cachev3.GetResourceName(r))
		}
	}
	for _, k := range d.gone {
		drop(cache[k])
		delete(cache, k)
	}
	for k, e := range d.next {
		if prev := cache[k]; prev != nil {
			drop(prev)
		}
		cache[k] = e
		for _, r := range e.clas {
			items[cachev3.GetResourceName(r)] = types.ResourceWithTTL{Resource: r}
		}
	}
}
