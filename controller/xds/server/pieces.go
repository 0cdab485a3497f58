package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
)

// The shared configuration of both kinds is made of per-service-port
// pieces — a proxyless client listener and route configuration and a
// sidecar virtual host per HTTP-family port (generate.ClientPort), a
// cluster of each kind per port (generate.UpstreamPort) — plus a few
// resources that aggregate them (the sidecar outbound listener and its
// route configurations). pieceCache keeps every piece with the inputs it
// was generated from; a piece is regenerated only when its inputs change,
// so a new Service costs O(its ports) generation, validation and hashing;
// assembling the shared lists from pieces is O(services) pointer and map
// work.
//
// Every piece is validated (ValidateAll), hashed (deterministic marshal)
// and its references taken when it is built, and never changes afterwards:
// a reused piece carries the validation and hash of when it was built, so
// every published snapshot is still made of validated resources only
// (STYLE.md #2).

// piece is one generated resource (or sidecar virtual host).
type piece struct {
	msg  proto.Message
	hash uint64
	refs generate.Refs
}

// newPiece validates msg, hashes it and takes its references; owner names
// the route configuration a virtual host goes into.
func newPiece(msg proto.Message, owner string) (piece, error) {
	if v, ok := msg.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return piece{}, fmt.Errorf("%T %s: %w", msg, pieceName(msg, owner), err)
		}
	}
	refs, err := generate.ReferencesOf(msg, owner)
	if err != nil {
		return piece{}, err
	}
	return piece{msg: msg, hash: hashMessage(msg), refs: refs}, nil
}

func pieceName(msg proto.Message, owner string) string {
	if n, ok := msg.(interface{ GetName() string }); ok {
		if owner != "" {
			return owner + " " + n.GetName()
		}
		return n.GetName()
	}
	return owner
}

// hashMessage hashes one message; deterministic marshaling makes equal
// content hash equal.
func hashMessage(m proto.Message) uint64 {
	buf, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("xds server: marshal %T: %v", m, err))
	}
	h := fnv.New64a()
	h.Write(buf)
	return h.Sum64()
}

// hashCombiner hashes a list of piece hashes, in order.
type hashCombiner struct{ h uint64 }

func newHashCombiner() *hashCombiner { return &hashCombiner{h: 14695981039346656037} }

func (c *hashCombiner) add(x uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], x)
	for _, v := range b {
		c.h ^= uint64(v)
		c.h *= 1099511628211
	}
}

type clientKey struct {
	svc        mesh.NamespacedName
	port       uint32
	clusterSet bool
}

// clientPieces are the client-side pieces of one generate.ClientPort.
type clientPieces struct {
	in                              generate.ClientPort
	listener, route, sidecarVirtual piece
}

type upstreamKey struct {
	svc        mesh.NamespacedName
	remote     string
	port       uint32
	clusterSet bool
}

// upstreamPieces are the clusters of one generate.UpstreamPort.
type upstreamPieces struct {
	in                 generate.UpstreamPort
	proxyless, sidecar piece
}

// sharedSet is one kind's shared listeners, routes and clusters, with the
// hash of each list and the references of every item.
type sharedSet struct {
	items typeSet
	hash  [types.UnknownType]uint64
	refs  [types.UnknownType][]*generate.Refs
}

func (s *sharedSet) add(t types.ResponseType, r types.Resource, h *hashCombiner, refs ...*generate.Refs) {
	s.items[t] = append(s.items[t], r)
	h.add(0) // separates items, so that an item's pieces never run into the next
	s.refs[t] = append(s.refs[t], refs...)
}

// pieceCache holds the pieces of the last state. It is owned by builder.
type pieceCache struct {
	client   map[clientKey]*clientPieces
	upstream map[upstreamKey]*upstreamPieces
	// built counts the pieces generated so far (tests check that an update
	// builds only what changed).
	built int
}

func newPieceCache() *pieceCache {
	return &pieceCache{client: map[clientKey]*clientPieces{}, upstream: map[upstreamKey]*upstreamPieces{}}
}

// update returns the shared configuration of every kind for ix, whose
// client ports are cps, reusing the pieces whose inputs are unchanged and
// building the others. If a new piece fails validation the cache is left
// as it was and every failure is returned.
func (c *pieceCache) update(ix *generate.Index, cps []generate.ClientPort) (map[Kind]*sharedSet, error) {
	ups := ix.UpstreamPorts()
	var errs []error
	built := 0

	clients := make([]*clientPieces, 0, len(cps))
	nextClient := make(map[clientKey]*clientPieces, len(cps))
	for i := range cps {
		in := &cps[i]
		k := clientKey{in.Service, in.Port, in.ClusterSet}
		e := c.client[k]
		if e == nil || !e.in.Equal(in) {
			var err error
			if e, err = buildClientPieces(in); err != nil {
				errs = append(errs, err)
				continue
			}
			built += 3
		}
		nextClient[k] = e
		clients = append(clients, e)
	}
	upstreams := make([]*upstreamPieces, 0, len(ups))
	nextUpstream := make(map[upstreamKey]*upstreamPieces, len(ups))
	for i := range ups {
		in := &ups[i]
		k := upstreamKey{in.Service, in.Remote, in.Port.Port, in.ClusterSet}
		e := c.upstream[k]
		if e == nil || !e.in.Equal(in) {
			var err error
			if e, err = buildUpstreamPieces(in); err != nil {
				errs = append(errs, err)
				continue
			}
			built += 2
		}
		nextUpstream[k] = e
		upstreams = append(upstreams, e)
	}

	proxyless, sidecar := &sharedSet{}, &sharedSet{}
	var hp, hs [types.UnknownType]*hashCombiner
	for _, t := range snapshotTypes {
		hp[t], hs[t] = newHashCombiner(), newHashCombiner()
	}
	for _, e := range clients {
		hp[types.Listener].add(e.listener.hash)
		proxyless.add(types.Listener, e.listener.msg, hp[types.Listener], &e.listener.refs)
		hp[types.Route].add(e.route.hash)
		proxyless.add(types.Route, e.route.msg, hp[types.Route], &e.route.refs)
	}
	for _, e := range upstreams {
		hp[types.Cluster].add(e.proxyless.hash)
		proxyless.add(types.Cluster, e.proxyless.msg, hp[types.Cluster], &e.proxyless.refs)
		hs[types.Cluster].add(e.sidecar.hash)
		sidecar.add(types.Cluster, e.sidecar.msg, hs[types.Cluster], &e.sidecar.refs)
	}
	if err := sidecarOutbound(cps, clients, sidecar, hs); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, t := range snapshotTypes {
		proxyless.hash[t], sidecar.hash[t] = hp[t].h, hs[t].h
	}
	c.client, c.upstream = nextClient, nextUpstream
	c.built += built
	return map[Kind]*sharedSet{KindProxyless: proxyless, KindSidecar: sidecar}, nil
}

func buildClientPieces(in *generate.ClientPort) (*clientPieces, error) {
	e := &clientPieces{in: *in}
	var errs [3]error
	e.listener, errs[0] = newPiece(generate.ProxylessClientListener(in), "")
	e.route, errs[1] = newPiece(generate.ProxylessRoute(in), "")
	e.sidecarVirtual, errs[2] = newPiece(generate.SidecarVirtualHost(in), generate.SidecarOutboundRouteName(in.Port))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	return e, nil
}

func buildUpstreamPieces(in *generate.UpstreamPort) (*upstreamPieces, error) {
	e := &upstreamPieces{in: *in}
	var errs [2]error
	e.proxyless, errs[0] = newPiece(generate.ProxylessCluster(in), "")
	e.sidecar, errs[1] = newPiece(generate.SidecarCluster(in), "")
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	return e, nil
}

// sidecarOutbound adds the sidecar outbound listener and its route
// configurations (one per port, holding the cached virtual hosts of that
// port in ClientPorts order) to set. These aggregates are new messages
// every time (published ones are never changed) but cost O(ports) to
// validate and hash: the route configuration is validated without its
// virtual hosts, each of which was validated when built — which is what
// RouteConfiguration.ValidateAll does, field by field.
func sidecarOutbound(cps []generate.ClientPort, clients []*clientPieces, set *sharedSet, h [types.UnknownType]*hashCombiner) error {
	l := generate.SidecarOutbound(cps)
	if l == nil {
		return nil
	}
	lp, err := newPiece(l, "")
	if err != nil {
		return err
	}
	h[types.Listener].add(lp.hash)
	set.add(types.Listener, l, h[types.Listener], &lp.refs)

	byPort := map[uint32][]*clientPieces{}
	var ports []uint32
	for _, e := range clients {
		if _, ok := byPort[e.in.Port]; !ok {
			ports = append(ports, e.in.Port)
		}
		byPort[e.in.Port] = append(byPort[e.in.Port], e)
	}
	var errs []error
	slices.Sort(ports)
	for _, port := range ports {
		rc := generate.SidecarOutboundRoute(port)
		shell, err := newPiece(rc, "")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		h[types.Route].add(shell.hash)
		vhosts := byPort[port]
		rc.VirtualHosts = make([]*routev3.VirtualHost, 0, len(vhosts))
		refs := make([]*generate.Refs, 0, len(vhosts))
		for _, e := range vhosts {
			rc.VirtualHosts = append(rc.VirtualHosts, e.sidecarVirtual.msg.(*routev3.VirtualHost))
			h[types.Route].add(e.sidecarVirtual.hash)
			refs = append(refs, &e.sidecarVirtual.refs)
		}
		set.add(types.Route, rc, h[types.Route], refs...)
	}
	return errors.Join(errs...)
}
