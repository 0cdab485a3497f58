package mtls_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/mtls"
)

var td = spiffeid.RequireTrustDomainFromString("meshfed.local")

// idRecorder remembers the SPIFFE ID of the last client the server saw.
type idRecorder struct {
	mu   sync.Mutex
	last spiffeid.ID
	err  error
}

func (r *idRecorder) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	id, err := mtls.PeerID(ctx)
	r.mu.Lock()
	r.last, r.err = id, err
	r.mu.Unlock()
	return h(ctx, req)
}

func (r *idRecorder) get() (spiffeid.ID, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last, r.err
}

// startServer serves the gRPC health service with mTLS on 127.0.0.1.
func startServer(t *testing.T, src *mtls.Source) (addr string, rec *idRecorder) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec = &idRecorder{}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(mtls.ServerConfig(src, src, td))),
		grpc.UnaryInterceptor(rec.intercept),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), rec
}

func dial(t *testing.T, addr string, src *mtls.Source) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(src, src, tlsconfig.AuthorizeMemberOf(td)))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func mustSVID(t *testing.T, c *ca.Intermediate, ns, sa string) *x509svid.SVID {
	t.Helper()
	id, err := trust.WorkloadID(td, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.IssueSVID(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMTLSAcrossClustersSharingARootSeesBothIdentities(t *testing.T) {
	root, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	east, err := root.NewIntermediate("east", time.Hour*12, nil)
	if err != nil {
		t.Fatal(err)
	}
	west, err := root.NewIntermediate("west", time.Hour*12, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The server in west trusts only west's bundle; the client in east only east's.
	serverSVID := mustSVID(t, west, "bookstore", "bookstore")
	clientSVID := mustSVID(t, east, "bookbuyer", "bookbuyer")
	addr, rec := startServer(t, mtls.NewSource(serverSVID, west.Bundle()))
	cc := dial(t, addr, mtls.NewSource(clientSVID, east.Bundle()))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		t.Fatalf("mTLS call from east to west: %v", err)
	}
	gotServer, err := mtls.PeerIDFromState(p.AuthInfo.(credentials.TLSInfo).State)
	if err != nil || gotServer != serverSVID.ID {
		t.Fatalf("client saw server %s (%v), want %s", gotServer, err, serverSVID.ID)
	}
	gotClient, err := rec.get()
	if err != nil || gotClient != clientSVID.ID {
		t.Fatalf("server saw client %s (%v), want %s", gotClient, err, clientSVID.ID)
	}
}

func TestMTLSRefusesClientFromAnotherRoot(t *testing.T) {
	root, _ := ca.GenerateRoot(td, 24*time.Hour)
	stranger, _ := ca.GenerateRoot(td, 24*time.Hour)
	west, _ := root.NewIntermediate("west", time.Hour, nil)
	evil, _ := stranger.NewIntermediate("evil", time.Hour, nil)
	addr, _ := startServer(t, mtls.NewSource(mustSVID(t, west, "bookstore", "bookstore"), west.Bundle()))
	// The client trusts the server's root, but its own SVID is from a stranger root.
	cc := dial(t, addr, mtls.NewSource(mustSVID(t, evil, "bookbuyer", "bookbuyer"), west.Bundle()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Fatal("server accepted a client certificate from an untrusted root")
	}
}
