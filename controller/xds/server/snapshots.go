package server

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"reflect"
	"slices"
	"strconv"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
)

// Kind is the data plane a proxy runs.
type Kind string

// Data-plane kinds. A stream's kind comes from its node's user agent
// ("envoy" is a sidecar, anything else proxyless gRPC); the kind only picks
// the shape of the configuration, never what the proxy may see.
const (
	KindProxyless Kind = "proxyless"
	KindSidecar   Kind = "sidecar"
)

// proxyKey names one snapshot: all proxies of an identity and kind share it.
type proxyKey struct {
	id   mesh.Identity
	kind Kind
}

func (k proxyKey) String() string { return string(k.id) + "|" + string(k.kind) }

// The resource types a snapshot holds, in xDS order.
var snapshotTypes = [...]types.ResponseType{types.Cluster, types.Endpoint, types.Listener, types.Route}

// typeSet holds resources by type (indexed by types.ResponseType).
type typeSet [types.UnknownType][]types.Resource

// kindGenerator generates one data plane's configuration: the part every
// proxy of the kind shares (listeners, routes, clusters; endpoints are
// shared by all kinds) and the part that depends on the proxy's identity.
type kindGenerator struct {
	shared      func(ix *generate.Index) typeSet
	perIdentity func(ix *generate.Index, id mesh.Identity) typeSet
}

var kindGenerators = map[Kind]kindGenerator{
	KindProxyless: {
		shared: func(ix *generate.Index) typeSet {
			var s typeSet
			s[types.Listener] = generate.ProxylessClientListeners(ix)
			s[types.Route] = generate.ProxylessRoutes(ix)
			s[types.Cluster] = generate.ProxylessClusters(ix)
			return s
		},
		perIdentity: func(ix *generate.Index, id mesh.Identity) typeSet {
			var s typeSet
			s[types.Listener] = generate.ProxylessServerListeners(ix, id)
			return s
		},
	},
	KindSidecar: {
		shared: func(ix *generate.Index) typeSet {
			var s typeSet
			s[types.Listener] = generate.SidecarOutboundListeners(ix)
			s[types.Route] = generate.SidecarOutboundRoutes(ix)
			s[types.Cluster] = generate.SidecarClusters(ix)
			return s
		},
		perIdentity: func(ix *generate.Index, id mesh.Identity) typeSet {
			in := generate.SidecarInbound(ix, id)
			var s typeSet
			s[types.Listener] = in.Listeners
			s[types.Route] = in.Routes
			s[types.Cluster] = in.Clusters
			return s
		},
	},
}

// versioned is one type's resources with the version they were published at.
type versioned struct {
	items   []types.Resource
	res     cachev3.Resources
	hash    uint64
	version string
}

// sharedKind is the shared part of one kind's configuration.
type sharedKind struct {
	types [types.UnknownType]versioned
	// refs indexes the shared names, checked at versions refsAt.
	refs   *generate.RefIndex
	refsAt string
}

// upstreamEDS caches the load assignments of one service so that an
// endpoint change regenerates only the services whose endpoints changed.
type upstreamEDS struct {
	svc  mesh.Service
	clas []types.Resource
}

// keyState is what was last published for one proxy key.
type keyState struct {
	refs     int
	versions [types.UnknownType]string
	extra    [types.UnknownType]versioned
	merged   [types.UnknownType]cachev3.Resources
	mergedOf [types.UnknownType]string
}

// builder turns states into snapshots. It is owned by Server and used under
// Server.mu.
type builder struct {
	counter  uint64
	ix       *generate.Index
	kinds    map[Kind]*sharedKind
	eds      versioned
	edsCache map[string]upstreamEDS
}

func newBuilder() *builder {
	return &builder{kinds: map[Kind]*sharedKind{}, edsCache: map[string]upstreamEDS{}}
}

func (b *builder) nextVersion() string {
	b.counter++
	return strconv.FormatUint(b.counter, 10)
}

// hashResources hashes resources in order; deterministic marshaling makes
// equal content hash equal.
func hashResources(rs []types.Resource) uint64 {
	h := fnv.New64a()
	opts := proto.MarshalOptions{Deterministic: true}
	var buf []byte
	for _, r := range rs {
		var err error
		buf, err = opts.MarshalAppend(buf[:0], r)
		if err != nil {
			panic(fmt.Sprintf("xds server: marshal %T: %v", r, err))
		}
		h.Write(buf)
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// setVersioned replaces v's items, giving them a new version only if their
// content changed; it reports whether it did.
func (b *builder) setVersioned(v *versioned, items []types.Resource, hash uint64) bool {
	if v.version != "" && v.hash == hash {
		return false
	}
	v.items, v.hash, v.version = items, hash, b.nextVersion()
	v.res = cachev3.NewResources(v.version, items)
	return true
}

// update indexes s and regenerates what changed: the shared listeners,
// routes and clusters only when something other than endpoints changed,
// and the load assignments of the services whose endpoints changed.
//
// If a generated resource fails validation, nothing is changed and the
// error is returned: proxies keep the last good configuration.
func (b *builder) update(s mesh.State) (*generate.Index, error) {
	ix := generate.NewIndex(s)
	shapeChanged := b.ix == nil || !sameShape(&b.ix.State, &ix.State)
	if shapeChanged {
		sets := map[Kind]typeSet{}
		for kind, g := range kindGenerators {
			set := g.shared(ix)
			if err := generate.Validate(set[types.Listener], set[types.Route], set[types.Cluster]); err != nil {
				return ix, fmt.Errorf("%s configuration: %w", kind, err)
			}
			sets[kind] = set
		}
		for kind, set := range sets {
			sk := b.kinds[kind]
			if sk == nil {
				sk = &sharedKind{}
				b.kinds[kind] = sk
			}
			for _, t := range []types.ResponseType{types.Listener, types.Route, types.Cluster} {
				b.setVersioned(&sk.types[t], set[t], hashResources(set[t]))
			}
		}
	}
	b.ix = ix
	return ix, b.updateEndpoints(ix)
}

// updateEndpoints regenerates the load assignments of changed services and
// bumps the EDS version if any changed.
func (b *builder) updateEndpoints(ix *generate.Index) error {
	var invalid []error
	next := make(map[string]upstreamEDS, len(b.edsCache))
	var all []types.Resource
	changed := false
	add := func(svc *mesh.Service, remote string) {
		key := remote + "|" + svc.Namespace + "/" + svc.Name
		prev, ok := b.edsCache[key]
		if !ok || !sameEndpoints(&prev.svc, svc) {
			changed = true
			prev = upstreamEDS{svc: *svc}
			for _, p := range svc.Ports {
				prev.clas = append(prev.clas, generate.LoadAssignment(svc, p, remote))
			}
			if err := generate.Validate(prev.clas); err != nil {
				invalid = append(invalid, err)
				return
			}
		}
		next[key] = prev
		all = append(all, prev.clas...)
	}
	for i := range ix.State.Services {
		add(&ix.State.Services[i], "")
	}
	for _, c := range sortedKeys(ix.State.Remote) {
		if c == ix.State.Settings.ClusterName {
			continue
		}
		cat := ix.State.Remote[c]
		for i := range cat.Services {
			add(&cat.Services[i], c)
		}
	}
	if len(invalid) > 0 {
		return errors.Join(invalid...)
	}
	if len(next) != len(b.edsCache) {
		changed = true
	}
	b.edsCache = next
	if changed || b.eds.version == "" {
		b.eds.items, b.eds.version = all, b.nextVersion()
		b.eds.res = cachev3.NewResources(b.eds.version, all)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// sameEndpoints reports whether a and b would produce the same load
// assignments.
func sameEndpoints(a, b *mesh.Service) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name &&
		slices.Equal(a.Ports, b.Ports) && reflect.DeepEqual(a.Endpoints, b.Endpoints)
}

// sameShape reports whether a and b differ at most in endpoints that do not
// change which identities serve a service: then listeners, routes and
// clusters are unchanged.
func sameShape(a, b *mesh.State) bool {
	if a.Settings != b.Settings ||
		!reflect.DeepEqual(a.TrafficTargets, b.TrafficTargets) ||
		!reflect.DeepEqual(a.HTTPRouteGroups, b.HTTPRouteGroups) ||
		!reflect.DeepEqual(a.TCPRoutes, b.TCPRoutes) ||
		!reflect.DeepEqual(a.TrafficSplits, b.TrafficSplits) ||
		!sameServiceShapes(a.Services, b.Services) || len(a.Remote) != len(b.Remote) {
		return false
	}
	for c, ca := range a.Remote {
		cb, ok := b.Remote[c]
		if !ok || !sameServiceShapes(ca.Services, cb.Services) {
			return false
		}
	}
	return true
}

func sameServiceShapes(a, b []mesh.Service) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Namespace != y.Namespace || x.Name != y.Name || x.Cluster != y.Cluster ||
			!slices.Equal(x.Ports, y.Ports) || !slices.Equal(x.ServerIdentities(), y.ServerIdentities()) {
			return false
		}
	}
	return true
}

// snapshot returns the snapshot for key from the current state, reusing
// what is unchanged, and whether any type's version differs from what key
// last got. Every snapshot is validated and checked for references.
func (b *builder) snapshot(key proxyKey, ks *keyState) (*cachev3.Snapshot, bool, error) {
	sk := b.kinds[key.kind]
	extra := kindGenerators[key.kind].perIdentity(b.ix, key.id)
	snap := &cachev3.Snapshot{}
	changed, shapeChanged := false, false
	var versions [types.UnknownType]string
	var all, bases typeSet
	for _, t := range snapshotTypes {
		var base versioned
		if t == types.Endpoint {
			base = b.eds
		} else {
			base = sk.types[t]
		}
		res := base.res
		if len(extra[t]) > 0 || len(ks.extra[t].items) > 0 {
			ev := &ks.extra[t]
			if err := generate.Validate(extra[t]); err != nil {
				return nil, false, fmt.Errorf("proxy %s: %w", key, err)
			}
			b.setVersioned(ev, extra[t], hashResources(extra[t]))
			version := base.version + "." + ev.version
			if ks.mergedOf[t] != version {
				items := make(map[string]types.ResourceWithTTL, len(base.res.Items)+len(extra[t]))
				for n, r := range base.res.Items {
					items[n] = r
				}
				for _, r := range extra[t] {
					items[cachev3.GetResourceName(r)] = types.ResourceWithTTL{Resource: r}
				}
				ks.merged[t] = cachev3.Resources{Version: version, Items: items}
				ks.mergedOf[t] = version
			}
			res = ks.merged[t]
		}
		snap.Resources[t] = res
		all[t] = extra[t]
		bases[t] = base.items
		if ks.versions[t] != res.Version {
			changed = true
			if t != types.Endpoint {
				shapeChanged = true
			}
		}
		versions[t] = res.Version
	}
	// Endpoint-only changes cannot break references (the set of load
	// assignment names follows the services, which are shape), so the full
	// check runs only when another type changed.
	if shapeChanged {
		shared, err := b.sharedRefs(key.kind, bases)
		if err != nil {
			return nil, false, fmt.Errorf("proxy %s: %w", key, err)
		}
		own := generate.NewRefIndex(shared, all[types.Route], all[types.Cluster], all[types.Endpoint])
		if err := own.Check(all[types.Listener], all[types.Route], all[types.Cluster]); err != nil {
			return nil, false, fmt.Errorf("proxy %s: %w", key, err)
		}
	}
	ks.versions = versions
	return snap, changed, nil
}

// sharedRefs returns the reference index of a kind's shared resources,
// checking them once per set of shared versions.
func (b *builder) sharedRefs(kind Kind, bases typeSet) (*generate.RefIndex, error) {
	sk := b.kinds[kind]
	versions := sk.types[types.Listener].version + "/" + sk.types[types.Route].version + "/" + sk.types[types.Cluster].version + "/" + b.eds.version
	if sk.refsAt == versions {
		return sk.refs, nil
	}
	ix := generate.NewRefIndex(nil, bases[types.Route], bases[types.Cluster], bases[types.Endpoint])
	if err := ix.Check(bases[types.Listener], bases[types.Route], bases[types.Cluster]); err != nil {
		return nil, err
	}
	sk.refs, sk.refsAt = ix, versions
	return ix, nil
}

// publish sets key's snapshot if it changed.
func (b *builder) publish(ctx context.Context, cache cachev3.SnapshotCache, key proxyKey, ks *keyState) (bool, error) {
	snap, changed, err := b.snapshot(key, ks)
	if err != nil || !changed {
		return false, err
	}
	if err := cache.SetSnapshot(ctx, key.String(), snap); err != nil {
		return false, fmt.Errorf("proxy %s: set snapshot: %w", key, err)
	}
	return true, nil
}
