package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
)

// Config says where the gateway's controller is and how it listens.
type Config struct {
	// XDSAddress is the controller's xDS address (host:port); TLS holds
	// the gateway's SVID, the trust bundle and the controller's name.
	XDSAddress string
	TLS        *tls.Config
	// Listen opens the listener the controller configures on port
	// (default: every address, that port).
	Listen func(port uint32) (net.Listener, error)
	// Dialer dials the endpoints (default: a 5 s timeout from any local
	// address); the local clusters bind it to the gateway pod's address.
	Dialer *net.Dialer
	Logger *slog.Logger
}

// Gateway is a running stand-in gateway. Create it with New, run it with
// Run.
type Gateway struct {
	cfg Config
	log *slog.Logger
	// table is what connections are routed by; Run's goroutine replaces
	// it whole, connections read it.
	table atomic.Pointer[table]
	rr    atomic.Uint64

	// mu guards what Run's goroutine shares with callers: the open
	// listeners, NACKs and accepted versions.
	mu        sync.Mutex
	listeners map[uint32]net.Listener
	nacks     []string
	acked     map[string]string // type URL → version
}

// table is the accepted configuration at one moment.
type table struct {
	routes    map[uint32]map[string]string // port → server name → cluster
	clusters  map[string]string            // cluster → load assignment name
	endpoints map[string][]netip.AddrPort  // load assignment → healthy endpoints
}

// New returns a Gateway for cfg.
func New(cfg Config) *Gateway {
	if cfg.Listen == nil {
		cfg.Listen = func(port uint32) (net.Listener, error) { return net.Listen("tcp", ":"+strconv.Itoa(int(port))) }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{}
	}
	if cfg.Dialer.Timeout == 0 {
		cfg.Dialer.Timeout = 5 * time.Second
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, listeners: map[uint32]net.Listener{}, acked: map[string]string{}}
	g.table.Store(&table{routes: map[uint32]map[string]string{}, clusters: map[string]string{}, endpoints: map[string][]netip.AddrPort{}})
	return g
}

// Addr returns the address the listener on port listens on ("" if none).
func (g *Gateway) Addr(port uint32) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if l := g.listeners[port]; l != nil {
		return l.Addr().String()
	}
	return ""
}

// NACKs returns the error of every configuration the gateway refused.
func (g *Gateway) NACKs() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.nacks)
}

// Acked returns the version of typeURL the gateway last accepted.
func (g *Gateway) Acked(typeURL string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.acked[typeURL]
}

// Run follows the controller until ctx ends, reconnecting after a lost
// stream, and serves connections on the listeners it is given.
func (g *Gateway) Run(ctx context.Context) error {
	conn, err := grpc.NewClient(g.cfg.XDSAddress, grpc.WithTransportCredentials(credentials.NewTLS(g.cfg.TLS)))
	if err != nil {
		return err
	}
	defer conn.Close()
	defer g.closeListeners()
	for ctx.Err() == nil {
		if err := g.follow(ctx, discoveryv3.NewAggregatedDiscoveryServiceClient(conn)); err != nil && ctx.Err() == nil {
			g.log.Warn("gateway: xDS stream ended; reconnecting", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

func (g *Gateway) closeListeners() {
	g.mu.Lock()
	ls := g.listeners
	g.listeners = map[uint32]net.Listener{}
	g.mu.Unlock()
	for _, l := range ls {
		_ = l.Close()
	}
}

// stream is one ADS stream's state, owned by follow.
type stream struct {
	s        discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node     *corev3.Node
	versions map[string]string // type URL → last accepted version
	nonces   map[string]string
	edsNames []string
	next     table
}

func (st *stream) request(typeURL string, names []string, errDetail error) error {
	req := &discoveryv3.DiscoveryRequest{Node: st.node, TypeUrl: typeURL, ResourceNames: names,
		VersionInfo: st.versions[typeURL], ResponseNonce: st.nonces[typeURL]}
	if errDetail != nil {
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: errDetail.Error()}
	}
	return st.s.Send(req)
}

// follow runs one ADS stream: listeners and clusters by wildcard, load
// assignments by the names the clusters read.
func (g *Gateway) follow(ctx context.Context, c discoveryv3.AggregatedDiscoveryServiceClient) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	cur := g.table.Load()
	st := &stream{s: s, node: &corev3.Node{Id: "meshfed-gateway", UserAgentName: "envoy"},
		versions: map[string]string{}, nonces: map[string]string{},
		next: table{routes: cur.routes, clusters: cur.clusters, endpoints: cur.endpoints}}
	if err := st.request(resourcev3.ListenerType, nil, nil); err != nil {
		return err
	}
	if err := st.request(resourcev3.ClusterType, nil, nil); err != nil {
		return err
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		st.nonces[resp.GetTypeUrl()] = resp.GetNonce()
		names := []string(nil)
		switch resp.GetTypeUrl() {
		case resourcev3.ListenerType:
			err = g.acceptListeners(st, resp)
		case resourcev3.ClusterType:
			err = g.acceptClusters(st, resp)
		case resourcev3.EndpointType:
			err = g.acceptEndpoints(st, resp)
			names = st.edsNames
		default:
			err = unsupported("resource type %s", resp.GetTypeUrl())
		}
		if err != nil {
			g.log.Warn("gateway: NACK", "type", resp.GetTypeUrl(), "version", resp.GetVersionInfo(), "err", err)
			g.mu.Lock()
			g.nacks = append(g.nacks, err.Error())
			g.mu.Unlock()
		} else {
			st.versions[resp.GetTypeUrl()] = resp.GetVersionInfo()
			g.mu.Lock()
			g.acked[resp.GetTypeUrl()] = resp.GetVersionInfo()
			g.mu.Unlock()
		}
		if err := st.request(resp.GetTypeUrl(), names, err); err != nil {
			return err
		}
		if resp.GetTypeUrl() == resourcev3.ClusterType && err == nil {
			if want := edsNames(st.next.clusters); !slices.Equal(want, st.edsNames) {
				st.edsNames = want
				if err := st.request(resourcev3.EndpointType, want, nil); err != nil {
					return err
				}
			}
		}
	}
}

func edsNames(clusters map[string]string) []string {
	var out []string
	for _, n := range clusters {
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// publish makes st.next the table connections are routed by.
func (g *Gateway) publish(st *stream) {
	t := st.next
	g.table.Store(&t)
}

func (g *Gateway) acceptListeners(st *stream, resp *discoveryv3.DiscoveryResponse) error {
	routes := map[uint32]map[string]string{}
	for _, r := range resp.GetResources() {
		l := &listenerv3.Listener{}
		if err := r.UnmarshalTo(l); err != nil {
			return unsupported("listener: %v", err)
		}
		pl, err := parseListener(l)
		if err != nil {
			return err
		}
		if _, dup := routes[pl.port]; dup {
			return unsupported("two listeners on port %d", pl.port)
		}
		routes[pl.port] = pl.routes
	}
	// Publish the new routes and open their ports once warm; close the
	// old ports after.
	st.next.routes = routes
	g.publish(st)
	if err := g.openWarm(st); err != nil {
		return err
	}
	var gone []net.Listener
	g.mu.Lock()
	for port, l := range g.listeners {
		if _, ok := routes[port]; !ok {
			gone = append(gone, l)
			delete(g.listeners, port)
		}
	}
	g.mu.Unlock()
	for _, l := range gone {
		_ = l.Close()
	}
	return nil
}

func (g *Gateway) acceptClusters(st *stream, resp *discoveryv3.DiscoveryResponse) error {
	clusters := map[string]string{}
	for _, r := range resp.GetResources() {
		c := &clusterv3.Cluster{}
		if err := r.UnmarshalTo(c); err != nil {
			return unsupported("cluster: %v", err)
		}
		pc, err := parseCluster(c)
		if err != nil {
			return err
		}
		clusters[pc.name] = pc.eds
	}
	st.next.clusters = clusters
	g.publish(st)
	return g.openWarm(st)
}

func (g *Gateway) acceptEndpoints(st *stream, resp *discoveryv3.DiscoveryResponse) error {
	endpoints := make(map[string][]netip.AddrPort, len(st.next.endpoints))
	for n, e := range st.next.endpoints {
		endpoints[n] = e
	}
	for _, r := range resp.GetResources() {
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := r.UnmarshalTo(cla); err != nil {
			return unsupported("load assignment: %v", err)
		}
		eps, err := parseEndpoints(cla)
		if err != nil {
			return err
		}
		endpoints[cla.GetClusterName()] = eps
	}
	st.next.endpoints = endpoints
	g.publish(st)
	return g.openWarm(st)
}

// openWarm opens the ports of st's listeners whose clusters are all warm
// (known, their load assignments received), as Envoy puts a listener into
// service and reports itself ready only once the clusters it names have
// warmed. Until then nothing listens on the port, so the load balancer in
// front of the gateway's replicas sends no connection to this one. A port
// once open stays open while a listener is configured on it.
func (g *Gateway) openWarm(st *stream) error {
	for port, routes := range st.next.routes {
		if g.Addr(port) != "" || !st.next.warm(routes) {
			continue
		}
		lis, err := g.cfg.Listen(port)
		if err != nil {
			return fmt.Errorf("listen on port %d: %w", port, err)
		}
		g.mu.Lock()
		g.listeners[port] = lis
		g.mu.Unlock()
		go g.accept(lis, port)
	}
	return nil
}

// warm reports whether every cluster routes names is known and has its
// load assignment.
func (t table) warm(routes map[string]string) bool {
	for _, cluster := range routes {
		eds, ok := t.clusters[cluster]
		if !ok {
			return false
		}
		if _, ok := t.endpoints[eds]; !ok {
			return false
		}
	}
	return true
}

func (g *Gateway) accept(lis net.Listener, port uint32) {
	for {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		go g.serve(c, port)
	}
}

// errPeeked ends the TLS handshake the gateway only reads the ClientHello
// of.
var errPeeked = errors.New("client hello read")

// recorder keeps what is read from a connection and drops what is
// written: the gateway reads the ClientHello through crypto/tls without
// answering it.
type recorder struct {
	net.Conn
	buf bytes.Buffer
}

func (r *recorder) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	r.buf.Write(b[:n])
	return n, err
}

func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }

// serve routes one connection by the server name of its ClientHello, or
// closes it.
func (g *Gateway) serve(c net.Conn, port uint32) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rec := &recorder{Conn: c}
	var sni string
	_ = tls.Server(rec, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		sni = h.ServerName
		return nil, errPeeked
	}}).Handshake()
	t := g.table.Load()
	cluster, ok := t.routes[port][sni]
	if sni == "" || !ok {
		g.log.Warn("gateway: connection closed: no route for its server name", "port", port, "sni", sni, "from", c.RemoteAddr().String())
		return
	}
	eps := t.endpoints[t.clusters[cluster]]
	if len(eps) == 0 {
		g.log.Warn("gateway: connection closed: no healthy endpoint", "cluster", cluster)
		return
	}
	ep := eps[g.rr.Add(1)%uint64(len(eps))]
	up, err := g.cfg.Dialer.Dial("tcp", ep.String())
	if err != nil {
		g.log.Warn("gateway: connection closed: upstream unreachable", "cluster", cluster, "endpoint", ep.String(), "err", err)
		return
	}
	defer up.Close()
	_ = c.SetReadDeadline(time.Time{})
	if _, err := up.Write(rec.buf.Bytes()); err != nil {
		return
	}
	splice(c, up)
}

// splice copies both ways between a and b until both directions end,
// passing each half-close on.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(b, a)
	go pipe(a, b)
	<-done
	<-done
}
