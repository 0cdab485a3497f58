package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"github.com/meshfed/meshfed/controller/xds/server"
	"github.com/meshfed/meshfed/mesh"
)

const trustDomain = "cluster.local"

var (
	bookstoreID = mesh.NewIdentity(trustDomain, "bookstore", "bookstore")
	bookbuyerID = mesh.NewIdentity(trustDomain, "bookbuyer", "bookbuyer")
	bookthiefID = mesh.NewIdentity(trustDomain, "bookthief", "bookthief")
	target      = "bookstore.bookstore.svc.cluster.local:14001"
)

// mesh is one xDS server on 127.0.0.1 with its CA and registry.
type testMesh struct {
	ca   *testCA
	srv  *server.Server
	addr string
	reg  *prometheus.Registry
}

func startMesh(t *testing.T) *testMesh { t.Helper(); return startMeshWithAck(t, nil) }

func startMeshWithAck(t *testing.T, onAck func(proxy, typeURL, version string)) *testMesh {
	t.Helper()
	ca := newTestCA(t)
	cfg, reg := testServerConfig(t)
	cfg.TLS = ca.serverTLS(t, mesh.NewIdentity(trustDomain, "meshfed-system", "meshfed-controller"))
	cfg.OnAck = onAck
	srv := runServer(t, cfg)
	return &testMesh{ca: ca, srv: srv, addr: cfg.Listener.Addr().String(), reg: reg}
}

// testServerConfig is the default server config listening on 127.0.0.1,
// authenticating peers of trustDomain by certificate, with metrics in the
// returned registry and warnings logged to stderr. TLS is left to the caller.
func testServerConfig(t *testing.T) (server.Config, *prometheus.Registry) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := server.DefaultConfig()
	cfg.Listener = lis
	cfg.Authenticator = server.PeerCertificateAuthenticator{TrustDomain: trustDomain}
	cfg.Registerer = reg
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return cfg, reg
}

// runServer starts a server with cfg; it runs until the test ends, when Run
// must return nil.
func runServer(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return srv
}

func (m *testMesh) update(t *testing.T, s mesh.State) {
	t.Helper()
	problems, err := m.srv.Update(s)
	if err != nil || len(problems) > 0 {
		t.Fatalf("Update: problems %v, err %v", problems, err)
	}
}

// backend is a real grpc-go xDS server (health service) for the bookstore
// identity; every response carries its name in the "backend" header.
type backend struct {
	name string
	port uint32
	ip   string // the address it listens on
}

func startBackend(t *testing.T, m *testMesh, id mesh.Identity, name string) (*backend, <-chan struct{}) {
	t.Helper()
	return startBackendAt(t, m, id, name, "127.0.0.1")
}

// startBackendAt is startBackend listening on ip (any 127.0.0.0/8 address
// is local on Linux, so 127.0.0.2, 127.0.0.3, … stand for pods of
// different clusters).
func startBackendAt(t *testing.T, m *testMesh, id mesh.Identity, name, ip string) (*backend, <-chan struct{}) {
	t.Helper()
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{})
	var once sync.Once
	srv, err := xds.NewGRPCServer(
		grpc.Creds(creds),
		xds.BootstrapContentsForTesting(m.ca.workloadBootstrap(t, id, m.addr)),
		xds.ServingModeCallback(func(_ net.Addr, args xds.ServingModeChangeArgs) {
			if args.Mode == connectivity.ServingModeServing {
				once.Do(func() { close(serving) })
			}
		}),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			_ = grpc.SetHeader(ctx, metadata.Pairs("backend", name))
			return h(ctx, req)
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return &backend{name: name, port: uint32(lis.Addr().(*net.TCPAddr).Port), ip: ip}, serving
}

// client is a real grpc-go xDS client with id's SVID, calling target.
func client(t *testing.T, m *testMesh, id mesh.Identity) healthpb.HealthClient {
	t.Helper()
	return clientFor(t, m, id, target)
}

// clientFor is client dialing an arbitrary target.
func clientFor(t *testing.T, m *testMesh, id mesh.Identity, dial string) healthpb.HealthClient {
	t.Helper()
	return healthpb.NewHealthClient(dialXDS(t, m.ca.workloadBootstrap(t, id, m.addr), dial))
}

// dialXDS returns a grpc-go client of "xds:///"+target with the given
// bootstrap, closed when the test ends. It stays idle until first used.
func dialXDS(t *testing.T, bootstrap []byte, target string) *grpc.ClientConn {
	t.Helper()
	rb, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(rb), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func endpoint(b *backend) mesh.Endpoint {
	return mesh.Endpoint{Address: b.ip, TargetPorts: map[string]uint32{"grpc": b.port}, Cluster: "east",
		Locality: mesh.Locality{Zone: "z1"}, Ready: true, Identity: bookstoreID}
}

// bookstore returns the mesh: bookstore (root) backed by v1 and v2,
// bookstore-v1, bookstore-v2.
func bookstore(v1, v2 *backend) mesh.State {
	port := []mesh.Port{{Name: "grpc", Port: 14001, Protocol: mesh.ProtocolGRPC}}
	return mesh.State{
		Settings: mesh.Settings{MeshName: "meshfed", ClusterName: "east", TrustDomain: trustDomain},
		Services: []mesh.Service{
			{Namespace: "bookstore", Name: "bookstore", Cluster: "east", Ports: port, Endpoints: []mesh.Endpoint{endpoint(v1), endpoint(v2)}},
			{Namespace: "bookstore", Name: "bookstore-v1", Cluster: "east", Ports: port, Endpoints: []mesh.Endpoint{endpoint(v1)}},
			{Namespace: "bookstore", Name: "bookstore-v2", Cluster: "east", Ports: port, Endpoints: []mesh.Endpoint{endpoint(v2)}},
		},
	}
}

// allowBookbuyerCheck is the OSM-style policy: bookbuyer may call
// Health/Check (an HTTPRouteGroup match on the gRPC method path) only.
func allowBookbuyerCheck(s mesh.State) mesh.State {
	s.HTTPRouteGroups = []mesh.HTTPRouteGroup{{Namespace: "bookstore", Name: "bookstore-service-routes", Matches: []mesh.HTTPMatch{
		{Name: "check", PathRegex: `/grpc\.health\.v1\.Health/Check`, Methods: []string{"POST"}},
	}}}
	s.TrafficTargets = []mesh.TrafficTarget{{
		Namespace: "bookstore", Name: "bookbuyer-access-bookstore", Destination: bookstoreID, Sources: []mesh.Identity{bookbuyerID},
		Rules: []mesh.TrafficTargetRule{{Kind: mesh.KindHTTPRouteGroup, Name: "bookstore-service-routes", Matches: []string{"check"}}},
	}}
	return s
}

func check(c healthpb.HealthClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func list(c healthpb.HealthClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.List(ctx, &healthpb.HealthListRequest{})
	return err
}

// eventually retries f until it returns nil or 15 s pass.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

func wantCode(rpcErr error, want codes.Code) error {
	if got := status.Code(rpcErr); got != want {
		return fmt.Errorf("got %v (%v), want %v", got, rpcErr, want)
	}
	return nil
}

func TestAccessIsDeniedByDefaultAndFollowsTrafficTargetsAndPermissiveMode(t *testing.T) {
	m := startMesh(t)
	v1, v1Serving := startBackend(t, m, bookstoreID, "v1")
	v2, v2Serving := startBackend(t, m, bookstoreID, "v2")
	state := bookstore(v1, v2)
	m.update(t, state)
	<-v1Serving
	<-v2Serving

	buyer, thief := client(t, m, bookbuyerID), client(t, m, bookthiefID)
	t.Run("no TrafficTarget: bookbuyer is denied", func(t *testing.T) {
		eventually(t, "bookbuyer Check", func() error { return wantCode(check(buyer), codes.PermissionDenied) })
	})

	m.update(t, allowBookbuyerCheck(state))
	t.Run("TrafficTarget: bookbuyer may Check", func(t *testing.T) {
		eventually(t, "bookbuyer Check", func() error { return check(buyer) })
		for i := 0; i < 20; i++ { // both backends got the policy
			if err := check(buyer); err != nil {
				t.Fatalf("bookbuyer Check %d: %v", i, err)
			}
		}
	})
	t.Run("TrafficTarget: bookbuyer may not List", func(t *testing.T) {
		if err := wantCode(list(buyer), codes.PermissionDenied); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("TrafficTarget: bookthief is still denied", func(t *testing.T) {
		if err := wantCode(check(thief), codes.PermissionDenied); err != nil {
			t.Fatal(err)
		}
	})

	permissive := allowBookbuyerCheck(state)
	permissive.Settings.PermissiveTrafficPolicy = true
	permissive.MeshedNamespaces = []string{"bookbuyer", "bookstore", "bookthief"}
	m.update(t, permissive)
	t.Run("permissive: both may call anything", func(t *testing.T) {
		eventually(t, "bookthief Check", func() error { return check(thief) })
		eventually(t, "bookbuyer List", func() error { return list(buyer) })
	})

	m.update(t, allowBookbuyerCheck(state))
	t.Run("back to deny by default without restarts", func(t *testing.T) {
		eventually(t, "bookthief Check", func() error { return wantCode(check(thief), codes.PermissionDenied) })
	})

	if n := m.metric(t, "meshfed_xds_connected_proxies"); n < 4 {
		t.Errorf("connected proxies = %v, want ≥ 4", n)
	}
}

// metric sums the samples of a gauge or counter.
func (m *testMesh) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			sum += mt.GetGauge().GetValue() + mt.GetCounter().GetValue()
		}
	}
	return sum
}

// callBackend does one Check and returns which backend answered.
func callBackend(c healthpb.HealthClient) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var md metadata.MD
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md)); err != nil {
		return "", err
	}
	if v := md.Get("backend"); len(v) == 1 {
		return v[0], nil
	}
	return "", fmt.Errorf("no backend header")
}

func withSplit(s mesh.State, w1, w2 int64) mesh.State {
	s.TrafficSplits = []mesh.TrafficSplit{{Namespace: "bookstore", Name: "bookstore-split", Service: "bookstore", Backends: []mesh.SplitBackend{
		{Service: "bookstore-v1", Weight: w1}, {Service: "bookstore-v2", Weight: w2},
	}}}
	return s
}

func TestTrafficSplitFollowsWeightsAndShiftsWithoutFailures(t *testing.T) {
	m := startMesh(t)
	v1, v1Serving := startBackend(t, m, bookstoreID, "v1")
	v2, v2Serving := startBackend(t, m, bookstoreID, "v2")
	state := allowBookbuyerCheck(bookstore(v1, v2))
	m.update(t, withSplit(state, 80, 20))
	<-v1Serving
	<-v2Serving
	buyer := client(t, m, bookbuyerID)
	eventually(t, "first RPC", func() error { _, err := callBackend(buyer); return err })

	// 2000 RPCs; grpc-go picks weighted clusters at random per RPC, so the
	// v1 count is Binomial(2000, 0.8): σ ≈ 17.9 RPCs (0.9 %). Tolerance
	// ±4 percentage points is ≈ 4.5σ.
	const n, tolerance = 2000, 0.04
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		b, err := callBackend(buyer)
		if err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
		counts[b]++
	}
	share := float64(counts["v1"]) / n
	t.Logf("80/20 split over %d RPCs: v1=%d v2=%d (v1 share %.3f, tolerance ±%.2f)", n, counts["v1"], counts["v2"], share, tolerance)
	if math.Abs(share-0.8) > tolerance {
		t.Fatalf("v1 share %.3f outside 0.80±%.2f", share, tolerance)
	}

	// Shift to 0/100 while RPCs run: none may fail.
	var lastV1 atomic.Int64 // RPC sequence number of the last v1 answer
	calls := startCallers(t, buyer, "RPC during shift", func(seq int64, b string) {
		if b == "v1" {
			lastV1.Store(seq)
		}
	})
	time.Sleep(200 * time.Millisecond)
	shiftAt := calls.total.Load()
	m.update(t, withSplit(state, 0, 100))
	time.Sleep(1500 * time.Millisecond)
	total, failed := calls.stop()
	t.Logf("shift 80/20 → 0/100: %d RPCs, %d failed; last v1 answer at RPC %d, shift at RPC %d", total, failed, lastV1.Load(), shiftAt)
	if failed != 0 {
		t.Fatalf("%d RPCs failed during the shift", failed)
	}
	for i := 0; i < 200; i++ {
		b, err := callBackend(buyer)
		if err != nil || b != "v2" {
			t.Fatalf("after shift RPC %d: backend %q, err %v", i, b, err)
		}
	}
}

// callers are four goroutines calling a backend until stopped.
type callers struct {
	total, failed atomic.Int64
	done          chan struct{}
	wg            sync.WaitGroup
}

// startCallers calls c from four goroutines until stop; every failure is
// reported as an error of the test, prefixed with what; onAnswer, if set,
// gets each answer's sequence number and backend.
func startCallers(t *testing.T, c healthpb.HealthClient, what string, onAnswer func(seq int64, backend string)) *callers {
	cs := &callers{done: make(chan struct{})}
	for w := 0; w < 4; w++ {
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			for {
				select {
				case <-cs.done:
					return
				default:
				}
				b, err := callBackend(c)
				seq := cs.total.Add(1)
				if err != nil {
					cs.failed.Add(1)
					t.Errorf("%s: %v", what, err)
					continue
				}
				if onAnswer != nil {
					onAnswer(seq, b)
				}
			}
		}()
	}
	return cs
}

// stop stops the callers and returns how many RPCs they made and how many
// failed.
func (cs *callers) stop() (total, failed int64) {
	close(cs.done)
	cs.wg.Wait()
	return cs.total.Load(), cs.failed.Load()
}
