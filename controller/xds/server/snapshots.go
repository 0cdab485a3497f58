package server

import (
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
)

// Kind is the data plane a proxy runs.
type Kind string

// Data-plane kinds. A stream's kind comes from its node's user agent
// ("envoy" is a sidecar, anything else proxyless gRPC), except the
// gateway's; the kind only picks the shape of the configuration, never
// what the proxy may see.
const (
	KindProxyless Kind = "proxyless"
	KindSidecar   Kind = "sidecar"
	// KindGateway is the cluster's east-west gateway, recognised by its
	// identity alone (Config.GatewayIdentity), whatever its user agent.
	KindGateway Kind = "gateway"
)

// proxyKey names one snapshot: all proxies of an identity and kind share it.
type proxyKey struct {
	id   mesh.Identity
	kind Kind
	// noSNI marks a proxyless node that sends no server name (sni.go): it
	// gets no endpoint reached through a gateway.
	noSNI bool
}

// parseProxyKey reads a key from its String.
func parseProxyKey(s string) (proxyKey, bool) {
	var k proxyKey
	s, k.noSNI = strings.CutSuffix(s, noSNISuffix)
	i := strings.LastIndex(s, "|")
	if i < 0 {
		return proxyKey{}, false
	}
	k.id, k.kind = mesh.Identity(s[:i]), Kind(s[i+1:])
	return k, true
}

func (k proxyKey) String() string {
	s := string(k.id) + "|" + string(k.kind)
	if k.noSNI {
		s += noSNISuffix
	}
	return s
}

// The resource types a snapshot holds, in xDS order.
var snapshotTypes = [...]types.ResponseType{types.Cluster, types.Endpoint, types.Listener, types.Route}

// typeSet holds resources by type (indexed by types.ResponseType).
type typeSet [types.UnknownType][]types.Resource

// kindGenerator generates the part of one data plane's configuration that
// depends on the proxy's identity. The part every proxy of a kind shares
// (listeners, routes, clusters) is assembled from cached per-service pieces
// (pieceCache); endpoints are shared by all kinds.
type kindGenerator struct {
	perIdentity func(ix *generate.Index, id mesh.Identity) typeSet
}

var kindGenerators = map[Kind]kindGenerator{
	KindProxyless: {
		perIdentity: func(ix *generate.Index, id mesh.Identity) typeSet {
			var s typeSet
			s[types.Listener] = generate.ProxylessServerListeners(ix, id)
			return s
		},
	},
	KindSidecar: {
		perIdentity: func(ix *generate.Index, id mesh.Identity) typeSet {
			in := generate.SidecarInbound(ix, id)
			var s typeSet
			s[types.Listener] = in.Listeners
			s[types.Route] = in.Routes
			s[types.Cluster] = in.Clusters
			return s
		},
	},
	// The gateway shares nothing with the workloads' proxies but the load
	// assignments: its listener and clusters are all its own.
	KindGateway: {
		perIdentity: func(ix *generate.Index, _ mesh.Identity) typeSet {
			g := generate.GatewayConfig(ix)
			var s typeSet
			s[types.Listener] = g.Listeners
			s[types.Cluster] = g.Clusters
			return s
		},
	},
}

// versioned is one type's resources with the version they were published at.
type versioned struct {
	items []types.Resource
	// refs are the references of items (shared parts only).
	refs    []*generate.Refs
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
	// secretRefs are the SDS names the shared resources use, one Refs per
	// distinct name; each proxy's own secrets must resolve them.
	secretRefs []generate.Refs
	// retired are clusters an update removed, still published with the
	// live ones until drained (drain.go).
	retired map[string]retiredCluster
}

// upstreamEDS caches the load assignments of one service so that an
// endpoint change regenerates only the services whose endpoints changed.
type upstreamEDS struct {
	svc  mesh.Service
	clas []types.Resource
	// seenAt is the last updateEndpoints call (builder.edsStamp) that
	// had the service.
	seenAt uint64
}

// edsKey names one upstream service: remote is its cluster, "" if local.
type edsKey struct {
	remote string
	svc    mesh.NamespacedName
}

// keyState is what was last published for one proxy key.
type keyState struct {
	refs int
	// versions are the published (narrowed) versions, fullVersions those
	// of the whole per-key configuration they were cut from.
	versions     [types.UnknownType]string
	fullVersions [types.UnknownType]string
	extra        [types.UnknownType]versioned
	merged       [types.UnknownType]cachev3.Resources
	mergedOf     [types.UnknownType]string
	// extraAt is the builder generation extra was generated at (0: never).
	extraAt uint64
	// secrets are the SDS secrets of a sidecar key (secrets.go); a sidecar
	// key is published only once it has them.
	secrets    versioned
	hasSecrets bool

	// What the key's proxies subscribe to, by type: every name any of its
	// streams asked for (never shrinks while the key lives), or wildcard.
	subs     [types.UnknownType]map[string]bool
	wildcard [types.UnknownType]bool
	// subsBytes is the total length of the names in subs, by type.
	subsBytes [types.UnknownType]int
	// subsSeq counts subscription growth; narrow is the published subset
	// of the full per-key resources, built from full version narrowOf at
	// subscription count narrowSubs.
	subsSeq    [types.UnknownType]uint64
	narrow     [types.UnknownType]cachev3.Resources
	narrowOf   [types.UnknownType]string
	narrowSubs [types.UnknownType]uint64
	narrowSeq  uint64
}

// subscribe records that a stream of the key watches names of type t (or
// everything); it reports whether that adds anything.
func (ks *keyState) subscribe(t types.ResponseType, names map[string]struct{}, wildcard bool) bool {
	if ks.wildcard[t] {
		return false
	}
	if wildcard {
		ks.wildcard[t] = true
		ks.subsSeq[t]++
		return true
	}
	grew := false
	for n := range names {
		if !ks.subs[t][n] {
			if ks.subs[t] == nil {
				ks.subs[t] = map[string]bool{}
			}
			ks.subs[t][n] = true
			ks.subsBytes[t] += len(n)
			grew = true
		}
	}
	if grew {
		ks.subsSeq[t]++
	}
	return grew
}

// admits reports whether subscribing to names of type t keeps the key
// within l (MaxResourceNames and MaxSubscribedBytes per type); names only
// grow while the key lives, so without a bound one identity's streams
// could make it hold any number of names.
func (ks *keyState) admits(t types.ResponseType, names map[string]struct{}, l RequestLimits) *refusal {
	count, size := len(ks.subs[t]), ks.subsBytes[t]
	for n := range names {
		if !ks.subs[t][n] {
			count++
			size += len(n)
		}
	}
	if count > l.MaxResourceNames || size > l.MaxSubscribedBytes {
		return refuse(reasonSubscriptions, codes.ResourceExhausted,
			"subscriptions of this identity and kind would reach %d names of %d bytes (limits %d names, %d bytes)",
			count, size, l.MaxResourceNames, l.MaxSubscribedBytes)
	}
	return nil
}

// narrowed returns what the key publishes of type t: the full resources if
// a stream watches everything, else only the subscribed ones. The version
// moves only when that subset's content changes, so a proxy is sent a type
// again only when something it watches changed (and go-control-plane,
// which walks the whole snapshot map for every response, walks a few
// entries, not the mesh).
func (ks *keyState) narrowed(t types.ResponseType, full cachev3.Resources) cachev3.Resources {
	if ks.wildcard[t] {
		return full
	}
	if ks.narrowOf[t] == full.Version && ks.narrowSubs[t] == ks.subsSeq[t] && ks.narrow[t].Version != "" {
		return ks.narrow[t]
	}
	items := make(map[string]types.ResourceWithTTL, len(ks.subs[t]))
	for n := range ks.subs[t] {
		if r, ok := full.Items[n]; ok {
			items[n] = r
		}
	}
	ks.narrowOf[t], ks.narrowSubs[t] = full.Version, ks.subsSeq[t]
	if prev := ks.narrow[t]; prev.Version != "" && sameItems(prev.Items, items) {
		return prev
	}
	ks.narrowSeq++
	ks.narrow[t] = cachev3.Resources{Version: full.Version + "~" + strconv.FormatUint(ks.narrowSeq, 10), Items: items}
	return ks.narrow[t]
}

// sameItems reports whether a and b hold the very same resources (resources
// are never modified once published, so identity is equality).
func sameItems(a, b map[string]types.ResourceWithTTL) bool {
	if len(a) != len(b) {
		return false
	}
	for n, r := range a {
		o, ok := b[n]
		if !ok || o.Resource != r.Resource || o.TTL != r.TTL {
			return false
		}
	}
	return true
}

// builder turns states into snapshots. It is owned by Server and used under
// Server.mu.
type builder struct {
	counter uint64
	// gen counts updates; shapeAt is the last one that changed more than
	// endpoints, idChangedAt the last one that moved an identity's
	// endpoints (its server addresses).
	gen         uint64
	shapeAt     uint64
	idChangedAt map[mesh.Identity]uint64
	// raw is the last state given to update, as given (before sanitizing).
	raw   mesh.State
	ix    *generate.Index
	kinds map[Kind]*sharedKind
	// pieces caches the per-service pieces the shared parts are made of.
	pieces *pieceCache
	// eds is every load assignment, shared by all kinds and proxies; its
	// items list is not kept (res.Items is the set).
	eds      versioned
	edsCache map[edsKey]*upstreamEDS
	// noSNI is eds without the endpoints reached through gateways, as of
	// eds version of (sni.go).
	noSNI struct {
		of string
		v  versioned
	}
	// clusterSets caches the load assignments of clusterset names
	// (clusterset.go).
	clusterSets map[mesh.NamespacedName]*clusterSetEDS
	edsStamp    uint64
	// edsNamesAt is the EDS version at which the set of load assignment
	// names last may have changed (endpoint-only updates keep the names,
	// so references need no new check).
	edsNamesAt string
	// now is the clock retirements are stamped with (drain.go);
	// newlyRetired is set when an update retires a cluster.
	now          func() time.Time
	newlyRetired bool
	// named is when each route first named each cluster; warmDelay and
	// warmingUntil are warm.go's.
	named        map[string]map[string]time.Time
	warmDelay    time.Duration
	warmingUntil time.Time
	// ready is whether each split backend cluster had a ready endpoint at
	// the last update (warm.go).
	ready map[string]bool
	// held are the split backends whose endpoints went away, and since
	// when: their last ready load assignments are still published
	// (drain.go).
	held map[edsKey]time.Time
}

func newBuilder(warmDelay time.Duration) *builder {
	return &builder{kinds: map[Kind]*sharedKind{KindGateway: {}}, pieces: newPieceCache(), edsCache: map[edsKey]*upstreamEDS{},
		clusterSets: map[mesh.NamespacedName]*clusterSetEDS{}, idChangedAt: map[mesh.Identity]uint64{}, now: time.Now,
		warmDelay: warmDelay}
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

// update makes s the current state and regenerates what changed.
//
// When s differs from the last state only in endpoints (endpointOnly: same
// settings, policy and services, each service the same shape), the cost is
// O(changed services): the index is patched, only the changed services'
// load assignments are generated, and only proxies whose identity's server
// addresses moved regenerate their own part. Otherwise everything is
// re-indexed, the shared listeners, routes and clusters are regenerated
// (and get new versions only where their content changed), and the load
// assignments of services whose endpoints or ports changed are regenerated.
//
// If a generated resource fails validation, nothing is changed and the
// error is returned: proxies keep the last good configuration.
func (b *builder) update(s mesh.State) (*generate.Index, error) {
	if b.ix != nil {
		if local, remote, ok := endpointOnly(&b.raw, &s, b.ix); ok {
			err := b.updateEndpointsOnly(s, local, remote)
			return b.ix, err
		}
	}
	ix := generate.NewIndex(s)
	shapeChanged := b.ix == nil || !sameShape(&b.ix.State, &ix.State)
	if shapeChanged {
		if err := b.updateShared(ix); err != nil {
			return ix, err
		}
	}
	if err := b.updateEndpoints(ix); err != nil {
		return ix, err
	}
	b.gen++
	b.shapeAt = b.gen
	b.ix, b.raw = ix, s
	return ix, nil
}

// updateShared regenerates the listeners, routes and clusters every kind
// shares from ix; a new version is given only to what changed.
func (b *builder) updateShared(ix *generate.Index) error {
	cps := ix.ClientPorts()
	b.markWarming(cps)
	sets, err := b.pieces.update(ix, cps)
	if err != nil {
		return fmt.Errorf("shared configuration: %w", err)
	}
	for kind, set := range sets {
		sk := b.kinds[kind]
		if sk == nil {
			sk = &sharedKind{}
			b.kinds[kind] = sk
		}
		for _, t := range []types.ResponseType{types.Listener, types.Route, types.Cluster} {
			old := sk.types[t].res.Items
			if b.setVersioned(&sk.types[t], set.items[t], set.hash[t]) {
				sk.types[t].refs = set.refs[t]
				if t == types.Cluster {
					b.retire(sk, old)
				}
			}
		}
	}
	return nil
}

// updateEndpointsOnly applies a change that endpointOnly accepted: local
// and remote name the services whose endpoints changed.
func (b *builder) updateEndpointsOnly(s mesh.State, local []int, remote map[string][]int) error {
	type change struct {
		key edsKey
		eds *upstreamEDS
	}
	var changes []change
	var invalid []error
	add := func(svc *mesh.Service, cluster string) {
		key := edsKey{cluster, svc.Key()}
		e := &upstreamEDS{svc: *svc, seenAt: b.edsCache[key].seenAtOrZero()}
		for _, p := range svc.Ports {
			e.clas = append(e.clas, generate.LoadAssignment(svc, p, cluster))
		}
		if err := generate.Validate(e.clas); err != nil {
			invalid = append(invalid, err)
			return
		}
		changes = append(changes, change{key, e})
	}
	for _, i := range local {
		add(&s.Services[i], "")
	}
	for _, c := range sortedKeys(remote) {
		for _, i := range remote[c] {
			add(&s.Remote[c].Services[i], c)
		}
	}
	ix := b.ix.WithEndpoints(s)
	moved := make([]mesh.NamespacedName, 0, len(changes))
	for _, c := range changes {
		moved = append(moved, c.key.svc)
	}
	cs, err := clusterSetChanges(ix, b.clusterSets, moved)
	if err != nil {
		invalid = append(invalid, err)
	}
	if len(invalid) > 0 {
		return errors.Join(invalid...)
	}
	b.gen++
	if len(changes) > 0 || !cs.empty() {
		// Snapshots already published hold the old map: copy, never patch.
		items := maps.Clone(b.eds.res.Items)
		for _, c := range changes {
			b.edsCache[c.key] = c.eds
			if _, held := b.held[c.key]; held {
				continue // still unready: drainHeld publishes it
			}
			for _, r := range c.eds.clas {
				items[cachev3.GetResourceName(r)] = types.ResourceWithTTL{Resource: r}
			}
		}
		applyClusterSet(items, b.clusterSets, cs)
		b.eds.version = b.nextVersion()
		b.eds.res = cachev3.Resources{Version: b.eds.version, Items: items}
		for _, i := range local {
			for _, id := range s.Services[i].EndpointIdentities() {
				b.idChangedAt[id] = b.gen
			}
		}
	}
	b.ix, b.raw = ix, s
	return nil
}

func (e *upstreamEDS) seenAtOrZero() uint64 {
	if e == nil {
		return 0
	}
	return e.seenAt
}

// updateEndpoints regenerates the load assignments of services that are
// new or whose endpoints or ports changed, drops those of services that are
// gone, and bumps the EDS version if anything changed. The published map is
// copied and patched (O(services) to find what changed, map copy; no
// re-insertion of every load assignment).
func (b *builder) updateEndpoints(ix *generate.Index) error {
	b.edsStamp++
	stamp := b.edsStamp
	var invalid []error
	type change struct {
		key  edsKey
		prev *upstreamEDS
		next *upstreamEDS
	}
	var changes []change
	seen := 0
	add := func(svc *mesh.Service, remote string) {
		key := edsKey{remote, svc.Key()}
		prev := b.edsCache[key]
		if prev != nil && prev.seenAt != stamp {
			prev.seenAt = stamp
			seen++
		}
		if prev != nil && sameEndpoints(&prev.svc, svc) {
			return
		}
		next := &upstreamEDS{svc: *svc, seenAt: stamp}
		for _, p := range svc.Ports {
			next.clas = append(next.clas, generate.LoadAssignment(svc, p, remote))
		}
		if err := generate.Validate(next.clas); err != nil {
			invalid = append(invalid, err)
			return
		}
		changes = append(changes, change{key, prev, next})
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
	cs, err := clusterSetChanges(ix, b.clusterSets, nil)
	if err != nil {
		invalid = append(invalid, err)
	}
	if len(invalid) > 0 {
		return errors.Join(invalid...)
	}
	var gone []edsKey
	if seen < len(b.edsCache) {
		for k, e := range b.edsCache {
			if e.seenAt != stamp {
				gone = append(gone, k)
			}
		}
	}
	if len(changes) == 0 && len(gone) == 0 && cs.empty() && b.eds.version != "" {
		return nil
	}
	// Snapshots already published hold the old map: copy, never patch.
	items := maps.Clone(b.eds.res.Items)
	if items == nil {
		items = map[string]types.ResourceWithTTL{}
	}
	drop := func(e *upstreamEDS) {
		for _, r := range e.clas {
			delete(items, cachev3.GetResourceName(r))
		}
	}
	for _, k := range gone {
		drop(b.edsCache[k])
		delete(b.edsCache, k)
		delete(b.held, k)
	}
	hold := make([]bool, len(changes))
	for i, c := range changes {
		hold[i] = b.holdEndpoints(c.key, c.prev, c.next)
		if c.prev != nil && !hold[i] {
			drop(c.prev)
		}
	}
	for i, c := range changes {
		b.edsCache[c.key] = c.next
		if hold[i] {
			continue
		}
		for _, r := range c.next.clas {
			items[cachev3.GetResourceName(r)] = types.ResourceWithTTL{Resource: r}
		}
	}
	applyClusterSet(items, b.clusterSets, cs)
	b.eds.version = b.nextVersion()
	b.eds.res = cachev3.Resources{Version: b.eds.version, Items: items}
	b.edsNamesAt = b.eds.version
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
		slices.Equal(a.Ports, b.Ports) && mesh.SameEndpoints(a.Endpoints, b.Endpoints)
}

// sameShape reports whether a and b differ at most in endpoints that do not
// change which identities serve a service: then listeners, routes and
// clusters are unchanged.
func sameShape(a, b *mesh.State) bool {
	if a.Settings != b.Settings || !samePolicy(a, b) ||
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

// samePolicy compares the policy objects (few, next to services and
// endpoints); lists that share their backing array are equal at once.
func samePolicy(a, b *mesh.State) bool {
	return sameList(a.TrafficTargets, b.TrafficTargets) && sameList(a.HTTPRouteGroups, b.HTTPRouteGroups) &&
		sameList(a.TCPRoutes, b.TCPRoutes) && sameList(a.TrafficSplits, b.TrafficSplits) &&
		sameList(a.Imports, b.Imports) &&
		slices.Equal(a.MeshedNamespaces, b.MeshedNamespaces)
}

func sameList[T any](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func sameServiceShapes(a, b []mesh.Service) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].SameShape(&b[i]) {
			return false
		}
	}
	return true
}

// endpointOnly reports whether next differs from prev (the last raw state,
// indexed as ix) only in endpoints that change no service's shape, and
// which local services (positions) and remote exports changed. It is false
// whenever the fast path could differ from a full rebuild: other settings
// or policy, services added, removed or reordered, a changed service that
// is now invalid, or a state with invalid services (their problems would
// need re-checking).
func endpointOnly(prev, next *mesh.State, ix *generate.Index) (local []int, remote map[string][]int, ok bool) {
	if prev.Settings != next.Settings || !samePolicy(prev, next) ||
		len(prev.Services) != len(next.Services) || len(ix.State.Services) != len(next.Services) ||
		len(prev.Remote) != len(next.Remote) {
		return nil, nil, false
	}
	for i := range next.Services {
		a, b := &prev.Services[i], &next.Services[i]
		if mesh.SameEndpoints(a.Endpoints, b.Endpoints) && a.Namespace == b.Namespace && a.Name == b.Name &&
			a.Cluster == b.Cluster && slices.Equal(a.Ports, b.Ports) && slices.Equal(a.Identities, b.Identities) {
			continue
		}
		if !a.SameShape(b) || b.Validate() != nil {
			return nil, nil, false
		}
		local = append(local, i)
	}
	for c, ca := range prev.Remote {
		cb, found := next.Remote[c]
		if !found || ca.Cluster != cb.Cluster || ca.Network != cb.Network || len(ca.Services) != len(cb.Services) {
			return nil, nil, false
		}
		for i := range cb.Services {
			a, b := &ca.Services[i], &cb.Services[i]
			if !a.SameShape(b) {
				return nil, nil, false
			}
			if c != next.Settings.ClusterName && !mesh.SameEndpoints(a.Endpoints, b.Endpoints) {
				if remote == nil {
					remote = map[string][]int{}
				}
				remote[c] = append(remote[c], i)
			}
		}
	}
	return local, remote, true
}

// snapshot returns the snapshot for key from the current state, reusing
// what is unchanged, and whether any type's version differs from what key
// last got. Every snapshot is validated and checked for references.
func (b *builder) snapshot(key proxyKey, ks *keyState) (*cachev3.Snapshot, bool, error) {
	sk := b.kinds[key.kind]
	// The identity's own part depends on the shape and on its workloads'
	// addresses only; regenerate it when either moved since it was made.
	regen := ks.extraAt == 0 || ks.extraAt < b.shapeAt || ks.extraAt < b.idChangedAt[key.id]
	var extra typeSet
	if regen {
		extra = kindGenerators[key.kind].perIdentity(b.ix, key.id)
	} else {
		for _, t := range snapshotTypes {
			extra[t] = ks.extra[t].items
		}
	}
	snap := &cachev3.Snapshot{}
	changed, shapeChanged := false, false
	var versions, fullVersions [types.UnknownType]string
	for _, t := range snapshotTypes {
		var base versioned
		if t == types.Endpoint {
			base = b.eds
			if key.noSNI {
				base = b.edsWithoutGateways()
			}
		} else {
			base = sk.types[t]
		}
		res := base.res
		if len(extra[t]) > 0 || len(ks.extra[t].items) > 0 {
			ev := &ks.extra[t]
			if regen {
				if err := generate.Validate(extra[t]); err != nil {
					return nil, false, fmt.Errorf("proxy %s: %w", key, err)
				}
				b.setVersioned(ev, extra[t], hashResources(extra[t]))
			}
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
		if ks.fullVersions[t] != res.Version && t != types.Endpoint {
			shapeChanged = true
		}
		fullVersions[t] = res.Version
		res = ks.narrowed(t, res)
		snap.Resources[t] = res
		if ks.versions[t] != res.Version {
			changed = true
		}
		versions[t] = res.Version
	}
	// A sidecar's secrets (its own identity's only) are published with it;
	// its listeners' and clusters' SDS names must resolve to them.
	secretsChanged := false
	if ks.hasSecrets {
		res := ks.narrowed(types.Secret, ks.secrets.res)
		snap.Resources[types.Secret] = res
		if ks.versions[types.Secret] != res.Version {
			changed = true
		}
		versions[types.Secret] = res.Version
		fullVersions[types.Secret] = ks.secrets.version
		secretsChanged = ks.fullVersions[types.Secret] != ks.secrets.version
	}
	if (shapeChanged || secretsChanged) && ks.hasSecrets {
		if _, err := b.sharedRefs(key.kind); err != nil {
			return nil, false, fmt.Errorf("proxy %s: %w", key, err)
		}
		if err := b.checkSecretRefs(key, sk, extra, ks); err != nil {
			return nil, false, err
		}
	}
	// Endpoint-only changes cannot break references (the set of load
	// assignment names follows the services, which are shape), so the full
	// check runs only when another type changed.
	if shapeChanged {
		shared, err := b.sharedRefs(key.kind)
		if err != nil {
			return nil, false, fmt.Errorf("proxy %s: %w", key, err)
		}
		own := generate.NewRefIndex(shared, extra[types.Route], extra[types.Cluster], extra[types.Endpoint])
		if err := own.Check(extra[types.Listener], extra[types.Route], extra[types.Cluster]); err != nil {
			return nil, false, fmt.Errorf("proxy %s: %w", key, err)
		}
	}
	ks.versions, ks.fullVersions = versions, fullVersions
	if regen {
		ks.extraAt = b.gen
	}
	return snap, changed, nil
}

// sharedRefs returns the reference index of a kind's shared resources,
// checking them once per set of shared versions. The check looks the
// references each piece recorded when it was built up in the published
// resource maps: O(references) lookups, no unmarshaling.
func (b *builder) sharedRefs(kind Kind) (*generate.RefIndex, error) {
	sk := b.kinds[kind]
	versions := sk.types[types.Listener].version + "/" + sk.types[types.Route].version + "/" + sk.types[types.Cluster].version + "/" + b.edsNamesAt
	if sk.refsAt == versions {
		return sk.refs, nil
	}
	ix := generate.NewRefIndexOf(nil, generate.ItemSet(sk.types[types.Route].res.Items),
		generate.ItemSet(sk.types[types.Cluster].res.Items), generate.ItemSet(b.eds.res.Items))
	var errs []error
	var secretRefs []generate.Refs
	secretSeen := map[string]bool{}
	for _, t := range []types.ResponseType{types.Listener, types.Route, types.Cluster} {
		for _, refs := range sk.types[t].refs {
			if err := ix.CheckRefs(refs); err != nil {
				errs = append(errs, err)
			}
			for _, n := range refs.Secrets {
				if !secretSeen[n] {
					secretSeen[n] = true
					secretRefs = append(secretRefs, generate.Refs{Owner: refs.Owner, Secrets: []string{n}})
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sk.refs, sk.refsAt, sk.secretRefs = ix, versions, secretRefs
	return ix, nil
}

// publish returns key's snapshot if it changed since key last got one (nil
// if not). A sidecar key waits for its secrets: without them its TLS
// contexts could not resolve.
func (b *builder) publish(key proxyKey, ks *keyState) (*cachev3.Snapshot, error) {
	if key.kind == KindSidecar && !ks.hasSecrets {
		return nil, nil
	}
	snap, changed, err := b.snapshot(key, ks)
	if err != nil || !changed {
		return nil, err
	}
	return snap, nil
}
