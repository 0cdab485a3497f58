package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"github.com/meshfed/meshfed/controller/bootstrap"
	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/controller/xds/server"
	"github.com/meshfed/meshfed/localmesh/gateway"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/trust/agent"
	"github.com/meshfed/meshfed/trust/ca"
)

const td = "cluster.local"

var (
	bookstoreID = mesh.NewIdentity(td, "bookstore", "bookstore")
	bookbuyerID = mesh.NewIdentity(td, "bookbuyer", "bookbuyer")
	bookthiefID = mesh.NewIdentity(td, "bookthief", "bookthief")
	gatewayID   = mesh.NewIdentity(td, "meshfed-system", "meshfed-gateway")
	port        = []mesh.Port{{Name: "grpc", Port: 14001, Protocol: mesh.ProtocolGRPC}}
	target      = generate.ClusterSetName(mesh.NamespacedName{Namespace: "bookstore", Name: "bookstore"}, 14001)
)

// The client runs as a child process of the test binary: grpc-go reads
// GRPC_EXPERIMENTAL_XDS_SNI once, when the process starts.
const clientEnv = "MESHFED_GATEWAY_TEST_CLIENT"

func TestMain(m *testing.M) {
	if os.Getenv(clientEnv) != "" {
		os.Exit(runClient())
	}
	os.Exit(m.Run())
}

// runClient calls target (the bootstrap is in GRPC_XDS_BOOTSTRAP) until a
// call is answered (or denied) or the wait in clientEnv passes, then 20
// times more, and prints one line per call: "ok <backend> <caller seen by
// the backend>" or "err <code> <message>".
func runClient() int {
	wait, err := time.ParseDuration(os.Getenv(clientEnv))
	if err != nil {
		fmt.Println("fatal", err)
		return 1
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		fmt.Println("fatal", err)
		return 1
	}
	dial, calls, pause := target, 20, time.Duration(0)
	if v := os.Getenv(clientEnv + "_TARGET"); v != "" {
		dial = v
	}
	if v := os.Getenv(clientEnv + "_CALLS"); v != "" {
		fmt.Sscan(v, &calls)
	}
	if v := os.Getenv(clientEnv + "_PAUSE"); v != "" {
		pause, _ = time.ParseDuration(v)
	}
	cc, err := grpc.NewClient("xds:///"+dial, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Println("fatal", err)
		return 1
	}
	defer cc.Close()
	c := healthpb.NewHealthClient(cc)
	call := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var md metadata.MD
		if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md)); err != nil {
			return fmt.Sprintf("err %s %s", status.Code(err), strings.ReplaceAll(status.Convert(err).Message(), "\n", " "))
		}
		return fmt.Sprintf("ok %s %s", strings.Join(md.Get("backend"), ","), strings.Join(md.Get("caller"), ","))
	}
	deadline := time.Now().Add(wait)
	line := call()
	for !strings.HasPrefix(line, "ok") && !strings.HasPrefix(line, "err PermissionDenied") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		line = call()
	}
	fmt.Println(line)
	for i := 0; i < calls; i++ {
		time.Sleep(pause)
		fmt.Println(call())
	}
	return 0
}

// pki is the federation's CA: one root, and SVID files as meshfed agent
// writes them.
type pki struct {
	inter *ca.Intermediate
	pool  *x509.CertPool
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	root, err := ca.GenerateRoot(spiffeid.RequireTrustDomainFromString(td), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("east", 12*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, c := range inter.Bundle().X509Authorities() {
		pool.AddCert(c)
	}
	return &pki{inter: inter, pool: pool}
}

func (p *pki) tlsCert(t testing.TB, id mesh.Identity, dns ...string) tls.Certificate {
	t.Helper()
	cert, err := p.inter.IssueTLS(spiffeid.RequireFromString(string(id)), time.Hour, dns...)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// bootstrap writes id's SVID files and a proxyless workload's bootstrap
// for the xDS server at addr; it returns the bootstrap's path.
func (p *pki) bootstrap(t testing.TB, id mesh.Identity, addr string) string {
	t.Helper()
	dir := t.TempDir()
	svid, err := p.inter.IssueSVID(spiffeid.RequireFromString(string(id)), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.WriteFiles(dir, svid, p.inter.Bundle()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "bootstrap.json")
	// Every node declares that it sends server names, so that a client
	// started without grpc-go's switch (the no-SNI test) is still given
	// the gateway, and the gateway is what refuses it.
	if err := bootstrap.Write(path, bootstrap.Config{XDSAddress: addr, CertDir: dir, NodeID: string(id), SNI: true}); err != nil {
		t.Fatal(err)
	}
	return path
}

// startXDS runs a real meshfed xDS server on 127.0.0.1 whose gateway is
// gatewayID, and returns it with its address.
func startXDS(t testing.TB, p *pki) (*server.Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.Listener = lis
	cfg.Authenticator = server.PeerCertificateAuthenticator{TrustDomain: td}
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{p.tlsCert(t, mesh.NewIdentity(td, "meshfed-system", "meshfed-controller"), "localhost")},
		ClientCAs: p.pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	cfg.GatewayIdentity = gatewayID
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Workloads dial it by name: its certificate names localhost.
	return srv, net.JoinHostPort("localhost", fmt.Sprint(lis.Addr().(*net.TCPAddr).Port))
}

func update(t testing.TB, srv *server.Server, s mesh.State) {
	t.Helper()
	if problems, err := srv.Update(s); err != nil || len(problems) > 0 {
		t.Fatalf("Update: %v %v", problems, err)
	}
}

// startPod is west's bookstore pod: a real grpc-go xDS server (mTLS and
// RBAC from west's controller) that answers with its name and the SPIFFE
// ID of the caller it authenticated.
func startPod(t testing.TB, p *pki, xdsAddr, ip string) (netip.AddrPort, <-chan struct{}) {
	t.Helper()
	return startNamedPod(t, p, xdsAddr, ip, "west-pod", bookstoreID)
}

// startNamedPod is startPod for a pod called name serving as id, with
// extra server options.
func startNamedPod(t testing.TB, p *pki, xdsAddr, ip, name string, id mesh.Identity, opts ...grpc.ServerOption) (netip.AddrPort, <-chan struct{}) {
	t.Helper()
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	contents, err := os.ReadFile(p.bootstrap(t, id, xdsAddr))
	if err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{})
	closed := false
	srv, err := xds.NewGRPCServer(append(opts, grpc.Creds(creds), xds.BootstrapContentsForTesting(contents),
		xds.ServingModeCallback(func(_ net.Addr, args xds.ServingModeChangeArgs) {
			if args.Mode == connectivity.ServingModeServing && !closed {
				closed = true
				close(serving)
			}
		}),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			caller := "unknown"
			if pr, ok := peer.FromContext(ctx); ok {
				if info, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 && len(info.State.PeerCertificates[0].URIs) == 1 {
					caller = info.State.PeerCertificates[0].URIs[0].String()
				}
			}
			_ = grpc.SetHeader(ctx, metadata.Pairs("backend", name, "caller", caller))
			return h(ctx, req)
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return netip.MustParseAddrPort(lis.Addr().String()), serving
}

// runClientProcess runs the client as id against east's xDS server, with
// grpc-go's SNI switch as given, and returns the lines it printed. wait is
// how long it waits for a first answer: long where one is expected, short
// where every call should fail (it starts with the configuration current).
func runClientProcess(t *testing.T, p *pki, id mesh.Identity, xdsAddr string, sni bool, wait time.Duration, env ...string) []string {
	t.Helper()
	cmd := clientCommand(t, p, id, xdsAddr, sni, wait, env...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client %s: %v\n%s", id, err, out)
	}
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) == 0 {
		t.Fatalf("client %s printed nothing", id)
	}
	return lines
}

// clientCommand is the client process's command (see runClientProcess).
func clientCommand(t *testing.T, p *pki, id mesh.Identity, xdsAddr string, sni bool, wait time.Duration, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), clientEnv+"="+wait.String(), "GRPC_XDS_BOOTSTRAP="+p.bootstrap(t, id, xdsAddr),
		fmt.Sprintf("GRPC_EXPERIMENTAL_XDS_SNI=%v", sni)), env...)
	cmd.Stderr = os.Stderr
	return cmd
}

// Two clusters on two networks: east's clients know west's bookstore only
// by its clusterset name, and only at west's gateway address. A real
// grpc-go client in east (SNI on) calls it: the stand-in gateway routes the
// TLS connection by its SNI to west's pod, a real grpc-go xDS server, which
// authenticates the caller's own SPIFFE ID and enforces west's
// TrafficTarget (bookbuyer allowed, bookthief denied); the client verified
// the pod's SVID, for a wrong expected identity fails. Without SNI the
// gateway has nothing to route on and the call fails.
func TestCallsCrossNetworksThroughTheGateway(t *testing.T) {
	p := newPKI(t)

	// West: the pod, its controller (TrafficTarget: bookbuyer may call
	// bookstore), bookstore exported, the gateway.
	westXDS, westAddr := startXDS(t, p)
	pod, serving := startPod(t, p, westAddr, "127.0.0.3")
	podEP := mesh.Endpoint{Address: pod.Addr().String(), TargetPorts: map[string]uint32{"grpc": uint32(pod.Port())},
		Cluster: "west", Network: "net-west", Ready: true, Identity: bookstoreID}
	update(t, westXDS, mesh.State{
		Settings:         mesh.Settings{ClusterName: "west", Network: "net-west", TrustDomain: td},
		MeshedNamespaces: []string{"bookstore"},
		Services:         []mesh.Service{{Namespace: "bookstore", Name: "bookstore", Cluster: "west", Ports: port, Endpoints: []mesh.Endpoint{podEP}}},
		TrafficTargets: []mesh.TrafficTarget{{Namespace: "bookstore", Name: "bookbuyer-access-bookstore", Destination: bookstoreID,
			Sources: []mesh.Identity{bookbuyerID}, Rules: []mesh.TrafficTargetRule{{Kind: mesh.KindTCPRoute, Name: "all"}}}},
		TCPRoutes: []mesh.TCPRoute{{Namespace: "bookstore", Name: "all"}},
		Imports:   []mesh.Import{{Namespace: "bookstore", Name: "bookstore", Ports: port, Clusters: []string{"east", "west"}}},
	})
	select {
	case <-serving:
	case <-time.After(time.Minute):
		t.Fatal("west's pod never got its server listener")
	}
	gw := gateway.New(gateway.Config{XDSAddress: westAddr,
		TLS:    &tls.Config{Certificates: []tls.Certificate{p.tlsCert(t, gatewayID)}, RootCAs: p.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12},
		Listen: func(uint32) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }})
	ctx, cancel := context.WithCancel(context.Background())
	gwDone := make(chan error, 1)
	go func() { gwDone <- gw.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-gwDone })
	var gwAddr netip.AddrPort
	for deadline := time.Now().Add(time.Minute); ; {
		if a := gw.Addr(generate.GatewayPort); a != "" {
			gwAddr = netip.MustParseAddrPort(a)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway never got its listener")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// East: west's bookstore as the federation hands it over, through
	// west's gateway (mesh.ThroughGateways).
	eastXDS, eastAddr := startXDS(t, p)
	east := func(identities ...mesh.Identity) mesh.State {
		remote := mesh.Service{Namespace: "bookstore", Name: "bookstore", Cluster: "west", Ports: port, Identities: identities,
			Endpoints: []mesh.Endpoint{podEP}}
		return mesh.State{
			Settings:         mesh.Settings{ClusterName: "east", Network: "net-east", TrustDomain: td, PermissiveTrafficPolicy: true},
			MeshedNamespaces: []string{"bookbuyer", "bookthief"},
			Imports:          []mesh.Import{{Namespace: "bookstore", Name: "bookstore", Ports: port, Clusters: []string{"west"}}},
			Remote: map[string]mesh.ClusterCatalog{"west": {Cluster: "west", Network: "net-west", Version: 1,
				Services: []mesh.Service{mesh.ThroughGateways(remote, []netip.AddrPort{gwAddr})}}},
		}
	}
	update(t, eastXDS, east(bookstoreID))

	lines := runClientProcess(t, p, bookbuyerID, eastAddr, true, time.Minute)
	for _, l := range lines {
		if l != "ok west-pod "+string(bookbuyerID) {
			t.Fatalf("bookbuyer through the gateway: %q; want every call answered by west's pod, which saw bookbuyer's own SPIFFE ID (all: %q)", l, lines)
		}
	}
	t.Logf("bookbuyer in east → west's gateway %s → bookstore pod %s: %d calls answered, the pod saw %s", gwAddr, pod, len(lines), bookbuyerID)

	for _, l := range runClientProcess(t, p, bookthiefID, eastAddr, true, time.Minute) {
		if !strings.HasPrefix(l, "err PermissionDenied") {
			t.Fatalf("bookthief through the gateway: %q; want west's TrafficTarget to deny it", l)
		}
	}

	// The client checks the pod's SVID: expecting another identity, it
	// refuses the pod behind the gateway.
	update(t, eastXDS, east(mesh.NewIdentity(td, "bookstore", "someone-else")))
	for _, l := range runClientProcess(t, p, bookbuyerID, eastAddr, true, 3*time.Second) {
		if !strings.HasPrefix(l, "err Unavailable") {
			t.Fatalf("a pod whose SVID the client does not expect answered: %q", l)
		}
	}
	update(t, eastXDS, east(bookstoreID))

	// Without grpc-go's SNI switch the gateway cannot route the call.
	for _, l := range runClientProcess(t, p, bookbuyerID, eastAddr, false, 3*time.Second) {
		if !strings.HasPrefix(l, "err Unavailable") {
			t.Fatalf("a call without SNI got through the gateway: %q", l)
		}
	}
	if n := gw.NACKs(); len(n) > 0 {
		t.Errorf("the gateway refused meshfed's configuration: %v", n)
	}
}
