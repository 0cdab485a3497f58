package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/mesh"
)

// Config configures the xDS server.
type Config struct {
	// Address is where to listen, host:port. Ignored if Listener is set.
	Address string
	// Listener, if set, is used instead of listening on Address (tests).
	Listener net.Listener
	// TLS is the server's TLS configuration. It must require and verify
	// client certificates (tls.RequireAndVerifyClientCert) against the mesh
	// trust bundle; trust/ provides it.
	TLS *tls.Config
	// Authenticator turns a stream's verified peer into its identity.
	Authenticator Authenticator
	// Registerer receives the server's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives NACKs, refused streams and generation errors.
	Logger *slog.Logger
	// KeepaliveTime is how often the server pings idle proxies.
	KeepaliveTime time.Duration
	// OnAck, if set, is called for every ACK a proxy sends, with the proxy
	// key ("<spiffe id>|<kind>"), the type URL and the version it applied:
	// "<type version>[.<identity part version>][~<n>]", where the type
	// version is the one Update published (EndpointsVersion for EDS) and
	// "~<n>" marks the subset of resources the proxy subscribes to. A proxy
	// is sent a new version only when something it subscribes to changed.
	// It runs
	// on the stream's goroutine, must not block and must not call Update.
	// It serves "time from a change to the last ACK" measurements.
	OnAck func(proxy, typeURL, version string)
	// Secrets serves SDS: each sidecar proxy's own identity's certificate
	// and the trust bundle (SecretSource). If nil, sidecar proxies are not
	// served at all (their TLS contexts would have nothing to resolve
	// to); proxyless clients never get secrets.
	Secrets SecretSource
	// SecretCheckInterval is how often the secrets of every connected
	// sidecar identity are re-read from Secrets, which renews them at half
	// life and after a CA or bundle rotation (RefreshSecrets does it at
	// once).
	SecretCheckInterval time.Duration
	// Limits bound every field of a proxy's requests (limits.go).
	Limits RequestLimits
	// DrainDelay is how long a cluster that an update removed is still
	// sent to proxies, unused, so that the routes that stop using it reach
	// them first (drain.go); 0 removes it at once.
	DrainDelay time.Duration
	// GatewayIdentity is the SPIFFE ID of the cluster's east-west
	// gateway (ServiceAccount meshfed-gateway in the control plane's
	// namespace): a proxy authenticated as it gets the gateway's
	// configuration (generate.GatewayConfig) and nothing else. Empty: no
	// gateway.
	GatewayIdentity mesh.Identity
	// WarmDelay is how long a cluster new to a route is named by it
	// before calls are sent there, so that grpc-go is ready for it
	// (warm.go); 0 sends calls at once.
	WarmDelay time.Duration
}

// DefaultConfig returns a Config listening on :15128 with 30 s keepalives
// and removed clusters drained for 5 s;
// TLS and Authenticator must still be set.
func DefaultConfig() Config {
	return Config{Address: ":15128", Logger: slog.Default(), KeepaliveTime: 30 * time.Second, SecretCheckInterval: 30 * time.Second,
		Limits: DefaultRequestLimits(), DrainDelay: 5 * time.Second, WarmDelay: time.Second}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.Address == "" && c.Listener == nil {
		errs = append(errs, errors.New("xds server: Address or Listener is required"))
	}
	if c.TLS == nil {
		errs = append(errs, errors.New("xds server: TLS is required"))
	} else if c.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		errs = append(errs, errors.New("xds server: TLS must require and verify client certificates"))
	}
	if c.Authenticator == nil {
		errs = append(errs, errors.New("xds server: Authenticator is required"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("xds server: Logger is required"))
	}
	if c.KeepaliveTime <= 0 {
		errs = append(errs, errors.New("xds server: KeepaliveTime must be positive"))
	}
	if c.Secrets != nil && c.SecretCheckInterval <= 0 {
		errs = append(errs, errors.New("xds server: SecretCheckInterval must be positive"))
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.DrainDelay < 0 || c.WarmDelay < 0 {
		errs = append(errs, errors.New("xds server: DrainDelay and WarmDelay must not be negative"))
	}
	return errors.Join(errs...)
}

// Server serves xDS to proxies. Create it with New, feed it with Update,
// serve with Run.
type Server struct {
	cfg     Config
	cache   subscribingCache
	metrics *metrics

	// mu guards builder and keys. It is never held while calling out: not
	// while calling an Authenticator, waiting on a stream, or writing to
	// the snapshot cache (publish.go).
	mu      sync.Mutex
	builder *builder
	keys    map[proxyKey]*keyState
	// pending are the cache writes decided under mu, in order; flushMu
	// serializes applying them (publish.go).
	pendingMu sync.Mutex
	pending   []cacheWrite
	flushMu   sync.Mutex
	// drainAlarm runs drain (drain.go), warmAlarm warm (warm.go).
	drainAlarm, warmAlarm alarm

	// streams tracks sent responses for NACK/ACK accounting.
	streamsMu sync.Mutex
	streams   map[int64]*streamState

	// secretsMu guards the identities whose secrets the secrets goroutine
	// (secrets.go) is to fetch; secretsWake wakes it.
	secretsMu      sync.Mutex
	secretsPending map[mesh.Identity]bool
	secretsAll     bool
	secretsWake    chan struct{}

	// gatewayStreams counts the gateway's open streams (under mu);
	// gatewayWake signals a change to GatewayChanges' reader.
	gatewayStreams int
	gatewayWake    chan struct{}
}

type streamState struct {
	key, nodeID string
	opened      time.Time
	types       map[string]*typeExchange // by type URL
}

type sentResponse struct {
	nonce, version string
	at             time.Time
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:         cfg,
		metrics:     newMetrics(cfg.Registerer),
		builder:     newBuilder(cfg.WarmDelay),
		keys:        map[proxyKey]*keyState{},
		streams:     map[int64]*streamState{},
		gatewayWake: make(chan struct{}, 1),

		secretsPending: map[mesh.Identity]bool{},
		secretsWake:    make(chan struct{}, 1),
	}
	s.cache = subscribingCache{SnapshotCache: cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil), server: s}
	return s, nil
}

// subscribingCache tells the Server what each proxy watches before
// go-control-plane opens the watch, so that the proxy's snapshot holds
// what it asks for (DESIGN.md, Known traps: "put exactly the names each
// node asks for in its snapshot").
type subscribingCache struct {
	cachev3.SnapshotCache
	server *Server
}

// CreateWatch runs on the stream's goroutine; it takes Server.mu (never
// held while calling out), so it may wait for an Update in progress. It opens
// a watch only for a node the stream stamped with its authenticated
// identity (identityStream) and only within the subscription limits; an
// error ends the stream.
func (c subscribingCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	if err := c.server.subscribe(req.GetNode().GetId(), req.GetTypeUrl(), sub); err != nil {
		return nil, err
	}
	return c.SnapshotCache.CreateWatch(req, sub, out)
}

// errNotServed answers every way of asking for configuration that meshfed
// does not serve: delta xDS and unary fetches would be keyed by the node
// the request claims (go-control-plane's delta server and Fetch take the
// node ID from the request), not by the proxy's certificate.
var errNotServed = status.Error(codes.Unimplemented,
	"meshfed serves only state-of-the-world ADS (envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources); "+
		"configure the proxy's ads_config with api_type: GRPC, not DELTA_GRPC or REST")

// CreateDeltaWatch refuses: delta xDS is not served (errNotServed). The
// delta service is not registered; this guards against that changing.
func (subscribingCache) CreateDeltaWatch(*cachev3.DeltaRequest, cachev3.Subscription, chan cachev3.DeltaResponse) (func(), error) {
	return nil, errNotServed
}

// Fetch refuses: unary fetches are not served (errNotServed).
func (subscribingCache) Fetch(context.Context, *cachev3.Request) (cachev3.Response, error) {
	return nil, errNotServed
}

// subscribe records a watch of the proxy key named nodeID and, if it asks
// for resources its snapshot does not hold yet, republishes the snapshot.
// It refuses a node ID that is not a connected key (only identityStream
// makes node IDs, from the certificate) and subscriptions over the limits.
func (s *Server) subscribe(nodeID, typeURL string, sub cachev3.Subscription) error {
	t := responseType(typeURL)
	key, ok := parseProxyKey(nodeID)
	if t == types.UnknownType || !ok {
		return status.Errorf(codes.InvalidArgument, "xds: no watch for type %q of node %q", truncate(typeURL, 128), truncate(nodeID, 128))
	}
	defer s.flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.keys[key]
	if ks == nil {
		return status.Errorf(codes.PermissionDenied, "xds: node %q is not an authenticated proxy", truncate(nodeID, 128))
	}
	names := sub.SubscribedResources()
	if !sub.IsWildcard() {
		if r := ks.admits(t, names, s.cfg.Limits); r != nil {
			s.refused(key.String(), r)
			return status.Error(r.code, r.msg)
		}
	}
	if t == types.Secret {
		s.refusedSecrets(key, names, ks)
	}
	if ks.subscribe(t, names, sub.IsWildcard()) && s.builder.ix != nil {
		s.publish(key, ks)
	}
	return nil
}

// refused counts and logs a refused request of proxy.
func (s *Server) refused(proxy string, r *refusal) {
	s.metrics.refusedRequests.WithLabelValues(r.reason).Inc()
	s.cfg.Logger.Warn("xds: refusing request; the stream ends", "proxy", proxy, "reason", r.reason, "err", r.msg)
}

func responseType(url string) types.ResponseType {
	switch url {
	case resourcev3.ClusterType:
		return types.Cluster
	case resourcev3.EndpointType:
		return types.Endpoint
	case resourcev3.ListenerType:
		return types.Listener
	case resourcev3.RouteType:
		return types.Route
	case resourcev3.SecretType:
		return types.Secret
	}
	return types.UnknownType
}

// Update makes s the state proxies are served from. It returns the objects
// skipped as invalid (report them; the rest is served) and an error only if
// the generated configuration failed its own checks, in which case proxies
// keep their last configuration. Only proxies whose configuration changed
// are sent anything. Update may be called from any goroutine; calls are
// serialized; it blocks for the generation time.
//
// There is no separate incremental entry point: Update compares st with the
// last state service by service and, when only endpoints changed (same
// settings, policy and services, each with the same ports and identities),
// does work proportional to the changed services. Producers
// (controller/kube, federation) get the fast path for free and make the
// comparison O(1) per unchanged service by reusing that service's
// Endpoints slice in the next State instead of rebuilding it. Anything
// else (a new Service, a policy change) re-indexes the state and
// reassembles the shared configuration from per-service pieces cached by
// their inputs: only pieces whose inputs changed are generated, validated
// and hashed (a new Service: its own listener, route, virtual host and
// clusters), the rest is O(services) map work (docs/benchmarks.md).
func (s *Server) Update(st mesh.State) ([]mesh.Problem, error) {
	start := time.Now()
	defer s.flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	ix, err := s.builder.update(st)
	s.metrics.rejected.Set(float64(len(ix.Problems)))
	if err != nil {
		s.cfg.Logger.Error("xds: generated configuration is invalid; proxies keep their last configuration", "err", err)
		return ix.Problems, err
	}
	s.setAlarms()
	err = s.publishAll()
	s.metrics.generation.Observe(time.Since(start).Seconds())
	return ix.Problems, err
}

// setAlarms, after the builder regenerated the shared configuration,
// schedules the drain of the clusters it retired and the end of warming.
// Called under s.mu.
func (s *Server) setAlarms() {
	if s.builder.newlyRetired {
		s.builder.newlyRetired = false
		// What is due at once (no delay configured) goes now; the rest
		// when the alarm fires.
		if _, next := s.builder.drainRetired(s.cfg.DrainDelay, s.cfg.WarmDelay); !next.IsZero() {
			s.drainAlarm.set(next, s.drain)
		}
	}
	if next := s.builder.warmingUntil; !next.IsZero() {
		s.warmAlarm.set(next, s.warm)
	}
}

// publishAll publishes every connected proxy's configuration where it
// changed. Called under s.mu.
func (s *Server) publishAll() error {
	var errs []error
	for key, ks := range s.keys {
		if err := s.publish(key, ks); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		s.cfg.Logger.Error("xds: some proxies keep their last configuration", "err", err)
		return err
	}
	return nil
}

// EndpointsVersion returns the version of the shared load assignments
// published by the last Update; a proxy that ACKs it has the endpoints.
func (s *Server) EndpointsVersion() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.builder.eds.version
}

// acquire registers a stream for key and publishes its snapshot if it has
// none yet.
func (s *Server) acquire(key proxyKey) {
	if key.kind == KindSidecar {
		defer s.wantSecrets(key.id)
	}
	defer s.flush()
	warnNoSNI := false
	defer func() { // after the lock is released
		if warnNoSNI {
			s.cfg.Logger.Warn("xds: a proxyless workload does not declare that it sends server names, so it gets no endpoint reached through an east-west gateway; run it with GRPC_EXPERIMENTAL_XDS_SNI=true and meshfed agent --xds-sni", "identity", key.id)
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	ks, ok := s.keys[key]
	if !ok {
		ks = &keyState{}
		s.keys[key] = ks
	}
	ks.refs++
	warnNoSNI = key.noSNI && ks.refs == 1 && len(s.builder.gatewayAddresses()) > 0
	if key.kind == KindGateway {
		s.gatewayStreams++
		s.wakeGateway()
	}
	if ks.refs == 1 && s.builder.ix != nil {
		_ = s.publish(key, ks) // logged
	}
}

// release drops a stream of key; the last one clears its snapshot.
func (s *Server) release(key proxyKey) {
	defer s.flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.keys[key]
	if ks == nil {
		return
	}
	if key.kind == KindGateway {
		s.gatewayStreams--
		s.wakeGateway()
	}
	ks.refs--
	if ks.refs <= 0 {
		delete(s.keys, key)
		s.queue(cacheWrite{key: key.String()})
	}
}

// GatewaysConnected is how many ADS streams the cluster's east-west
// gateway (Config.GatewayIdentity) has open: one per serving replica.
func (s *Server) GatewaysConnected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gatewayStreams
}

// GatewayChanges receives a value after GatewaysConnected changes. The
// signals coalesce (room for one); there is one reader.
func (s *Server) GatewayChanges() <-chan struct{} { return s.gatewayWake }

func (s *Server) wakeGateway() {
	select {
	case s.gatewayWake <- struct{}{}:
	default:
	}
}

// Run serves until ctx ends, then stops the gRPC server and returns after
// every stream has ended.
func (s *Server) Run(ctx context.Context) error {
	lis := s.cfg.Listener
	if lis == nil {
		var err error
		lis, err = net.Listen("tcp", s.cfg.Address)
		if err != nil {
			return fmt.Errorf("xds server: listen on %s: %w", s.cfg.Address, err)
		}
	}
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.cfg.TLS)),
		grpc.StreamInterceptor(s.authenticate),
		grpc.UnaryInterceptor(s.refuseUnary),
		grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error { return errNotServed }),
		grpc.MaxRecvMsgSize(s.cfg.Limits.MaxMessageBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: s.cfg.KeepaliveTime, Timeout: s.cfg.KeepaliveTime}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(100000),
	)
	srvCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer func() {
		s.mu.Lock()
		s.drainAlarm.stop()
		s.warmAlarm.stop()
		s.mu.Unlock()
	}()
	xs := xdsserver.NewServer(srvCtx, s.cache, s.callbacks())
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, sotwADS{xs: xs})

	secretsDone := make(chan struct{})
	go func() {
		defer close(secretsDone)
		if s.cfg.Secrets != nil {
			s.runSecrets(srvCtx)
		}
	}()
	defer func() { cancel(); <-secretsDone }()

	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	select {
	case <-ctx.Done():
		cancel()
		gs.Stop()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("xds server: serve: %w", err)
	}
}

// sotwADSMethod is the one discovery method meshfed serves.
const sotwADSMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"

// sotwADS is the aggregated discovery service with state-of-the-world
// streams only: DeltaAggregatedResources answers errNotServed without
// reading a request. No other discovery service (per-type, delta, SDS on
// its own) is registered; gRPC answers them with errNotServed too
// (UnknownServiceHandler).
type sotwADS struct{ xs xdsserver.Server }

func (a sotwADS) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return a.xs.StreamAggregatedResources(st)
}

func (sotwADS) DeltaAggregatedResources(discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return errNotServed
}

// refuseUnary answers every unary call (the Fetch methods of the discovery
// services, should one ever be registered) with errNotServed.
func (s *Server) refuseUnary(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
	s.metrics.refusedRequests.WithLabelValues(reasonMethod).Inc()
	return nil, errNotServed
}

// authenticate lets only the state-of-the-world ADS method through,
// establishes who the stream's peer is, stamps every request's node with
// that identity (and the kind its user agent names), refuses requests
// over the limits, and holds the proxy's snapshot while the stream lives.
// Anything else ends the stream before a request is read.
func (s *Server) authenticate(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod != sotwADSMethod {
		s.metrics.refusedRequests.WithLabelValues(reasonMethod).Inc()
		s.cfg.Logger.Warn("xds: refusing a discovery method meshfed does not serve", "method", truncate(info.FullMethod, 256))
		return errNotServed
	}
	id, err := s.cfg.Authenticator.Authenticate(ss.Context())
	if err != nil {
		s.metrics.authFailures.Inc()
		s.cfg.Logger.Warn("xds: refusing stream", "method", info.FullMethod, "err", err)
		return status.Error(codes.Unauthenticated, err.Error())
	}
	w := &identityStream{ServerStream: ss, server: s, id: id}
	err = handler(srv, w)
	if r := w.close(); r != nil {
		// go-control-plane ends a stream whose Recv fails without an
		// error; the proxy is told why.
		return status.Error(r.code, r.msg)
	}
	return err
}

// identityStream stamps the authenticated identity on every request and
// refuses requests over the limits. RecvMsg runs on go-control-plane's
// receiving goroutine, close on the stream's; mu orders them.
type identityStream struct {
	grpc.ServerStream
	server *Server
	id     mesh.Identity

	mu      sync.Mutex
	key     *proxyKey
	node    *corev3.Node
	refusal *refusal
	closed  bool
}

// RecvMsg reads the next request, checks it (checkRequest) and replaces
// its node with one naming the authenticated identity. A message that is
// not a DiscoveryRequest, or that is refused, ends the stream.
func (w *identityStream) RecvMsg(m any) error {
	err := w.ServerStream.RecvMsg(m)
	if err != nil && status.Code(err) != codes.ResourceExhausted {
		return err
	}
	if r := w.check(m, err); r != nil {
		w.mu.Lock()
		w.refusal = r
		proxy := string(w.id)
		if w.key != nil {
			proxy = w.key.String()
		}
		w.mu.Unlock()
		w.server.refused(proxy, r)
		return r
	}
	// w.mu orders stamp's acquire with close's release (lock order:
	// w.mu, then Server.mu).
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errors.New("xds: stream closed")
	}
	req := m.(*discoveryv3.DiscoveryRequest) // check refuses anything else
	if w.key == nil {
		w.stamp(req.GetNode())
	}
	req.Node = w.node
	return nil
}

// check returns why m, received with err (nil or gRPC's refusal of an
// oversize message), is refused, or nil.
func (w *identityStream) check(m any, err error) *refusal {
	if err != nil {
		return refuse(reasonMessageSize, codes.ResourceExhausted, "request over %d bytes", w.server.cfg.Limits.MaxMessageBytes)
	}
	req, ok := m.(*discoveryv3.DiscoveryRequest)
	if !ok {
		return refuse(reasonMessage, codes.InvalidArgument, "unexpected message %T", m)
	}
	return checkRequest(req, w.server.cfg.Limits)
}

// stamp makes the stream's node a copy of node named after the
// authenticated identity and kind, and holds that key's snapshot.
// Called under w.mu, once.
func (w *identityStream) stamp(node *corev3.Node) {
	kind := KindProxyless
	switch {
	case w.server.cfg.GatewayIdentity != "" && w.id == w.server.cfg.GatewayIdentity:
		kind = KindGateway
	case node.GetUserAgentName() == "envoy":
		kind = KindSidecar
	}
	key := proxyKey{id: w.id, kind: kind, noSNI: kind == KindProxyless && !declaresSNI(node)}
	w.key = &key
	w.node = &corev3.Node{}
	if node != nil {
		w.node = proto.Clone(node).(*corev3.Node)
	}
	w.node.Id = key.String()
	claim(w.node, node.GetId())
	w.server.metrics.connected.WithLabelValues(string(kind)).Inc()
	w.server.acquire(key)
}

// close releases the stream's key and returns why the stream was refused,
// if it was.
func (w *identityStream) close() *refusal {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.key != nil {
		w.server.metrics.connected.WithLabelValues(string(w.key.kind)).Dec()
		w.server.release(*w.key)
	}
	return w.refusal
}

// callbacks count pushes, bytes, ACK latency and NACKs. They run on stream
// goroutines and take only streamsMu.
func (s *Server) callbacks() xdsserver.Callbacks {
	return xdsserver.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			s.streamsMu.Lock()
			s.streams[id] = &streamState{opened: time.Now(), types: map[string]*typeExchange{}}
			s.streamsMu.Unlock()
			return nil
		},
		StreamClosedFunc: func(id int64, _ *corev3.Node) {
			s.streamsMu.Lock()
			delete(s.streams, id)
			s.streamsMu.Unlock()
		},
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			s.streamsMu.Lock()
			st := s.streams[id]
			var x *typeExchange
			if st != nil {
				if st.key == "" {
					st.key = req.GetNode().GetId()
					st.nodeID = req.GetNode().GetMetadata().GetFields()[claimedNodeID].GetStringValue()
				}
				x = st.types[req.GetTypeUrl()]
			}
			if x == nil || req.GetResponseNonce() == "" || x.sent.nonce != req.GetResponseNonce() {
				s.streamsMu.Unlock()
				return nil
			}
			sent := x.sent
			typ := shortType(req.GetTypeUrl())
			d := req.GetErrorDetail()
			if d != nil {
				x.nack = &NACK{Version: sent.version, Message: truncate(d.GetMessage(), 1024), At: time.Now()}
			} else {
				x.acked, x.ackedAt, x.nack = req.GetVersionInfo(), time.Now(), nil
			}
			s.streamsMu.Unlock()
			if d != nil {
				s.metrics.nacks.WithLabelValues(typ).Inc()
				s.cfg.Logger.Warn("xds: proxy rejected configuration; it keeps its last good one",
					"proxy", req.GetNode().GetId(), "type", typ, "version", sent.version, "err", truncate(d.GetMessage(), 1024))
				return nil
			}
			s.metrics.pushAck.WithLabelValues(typ).Observe(time.Since(sent.at).Seconds())
			if s.cfg.OnAck != nil {
				s.cfg.OnAck(req.GetNode().GetId(), req.GetTypeUrl(), req.GetVersionInfo())
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			typ := shortType(resp.GetTypeUrl())
			n := 0
			for _, r := range resp.GetResources() {
				n += len(r.GetValue())
			}
			s.metrics.pushes.WithLabelValues(typ).Inc()
			s.metrics.pushedBytes.WithLabelValues(typ).Add(float64(n))
			s.streamsMu.Lock()
			if st := s.streams[id]; st != nil {
				x := st.types[resp.GetTypeUrl()]
				if x == nil {
					x = &typeExchange{}
					st.types[resp.GetTypeUrl()] = x
				}
				x.sent = sentResponse{nonce: resp.GetNonce(), version: resp.GetVersionInfo(), at: time.Now()}
			}
			s.streamsMu.Unlock()
		},
	}
}

func shortType(url string) string {
	switch url {
	case "type.googleapis.com/envoy.config.listener.v3.Listener":
		return "lds"
	case "type.googleapis.com/envoy.config.route.v3.RouteConfiguration":
		return "rds"
	case "type.googleapis.com/envoy.config.cluster.v3.Cluster":
		return "cds"
	case "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment":
		return "eds"
	case resourcev3.SecretType:
		return "sds"
	}
	return "other"
}
