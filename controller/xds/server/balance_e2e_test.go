package server_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"

	"github.com/meshfed/meshfed/mesh"
)

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

// clientFor is client dialing an arbitrary target.
func clientFor(t *testing.T, m *testMesh, id mesh.Identity, dial string) healthpb.HealthClient {
	t.Helper()
	rb, err := xds.NewXDSResolverWithConfigForTesting(m.ca.workloadBootstrap(t, id, m.addr))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+dial, grpc.WithResolvers(rb), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

// tally makes n calls and counts the answering backends.
func tally(t *testing.T, c healthpb.HealthClient, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		b, err := callBackend(c)
		if err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
		counts[b]++
	}
	return counts
}

func TestRootServiceBalancesAcrossEndpoints(t *testing.T) {
	m := startMesh(t)
	v1, v1Serving := startBackendAt(t, m, bookstoreID, "v1", "127.0.0.2")
	v2, v2Serving := startBackendAt(t, m, bookstoreID, "v2", "127.0.0.3")
	m.update(t, allowBookbuyerCheck(bookstore(v1, v2)))
	<-v1Serving
	<-v2Serving
	buyer := client(t, m, bookbuyerID)
	eventually(t, "first RPC", func() error { _, err := callBackend(buyer); return err })
	// Let both subchannels connect, then count.
	eventually(t, "both backends answer", func() error {
		c := tally(t, buyer, 20)
		if c["v1"] == 0 || c["v2"] == 0 {
			return fmt.Errorf("only %v", c)
		}
		return nil
	})
	const n = 1000
	counts := tally(t, buyer, n)
	t.Logf("root service, no split, %d RPCs: %v", n, counts)
	// Round robin alternates; even random picking (Binomial(1000, 0.5),
	// σ ≈ 15.8) stays within ±80 (≈ 5σ).
	if d := counts["v1"] - n/2; d > 80 || d < -80 {
		t.Fatalf("v1 got %d of %d RPCs, want %d±80", counts["v1"], n, n/2)
	}
}
