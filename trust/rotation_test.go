package trust_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/mtls"
)

// cluster is one cluster's CA and one workload's rotating credentials.
type cluster struct {
	name  string
	inter *ca.Intermediate
	id    spiffeid.ID
	src   *mtls.Source
}

func (c *cluster) reissue(t *testing.T) {
	t.Helper()
	svid, err := c.inter.IssueSVID(c.id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.src.SetSVID(svid)
}

func (c *cluster) trust(t *testing.T, b *x509bundle.Bundle) {
	t.Helper()
	inter, err := c.inter.WithBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	c.inter = inter
	c.src.SetBundle(inter.Bundle())
}

// TestRootRotationByBundleUnionFailsNoRPC rotates the federation root while
// a client in east calls a server in west over mTLS without pause, both on a
// long-lived connection and on a fresh connection (a full handshake) per
// call, and requires that no call fails.
func TestRootRotationByBundleUnionFailsNoRPC(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("meshfed.local")
	oldRoot, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name, ns string) *cluster {
		inter, err := oldRoot.NewIntermediate(name, 12*time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := trust.WorkloadID(td, ns, ns)
		c := &cluster{name: name, inter: inter, id: id, src: mtls.NewSource(nil, inter.Bundle())}
		c.reissue(t)
		return c
	}
	east, west := mk("east", "bookbuyer"), mk("west", "bookstore")

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(mtls.ServerConfig(west.src, west.src, td))))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	clientCreds := credentials.NewTLS(mtls.ClientConfig(east.src, east.src, tlsconfig.AuthorizeID(west.id)))

	var ok, failed, handshakes atomic.Int64
	var firstErr atomic.Value
	call := func(ctx context.Context, cc *grpc.ClientConn) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{}); err != nil {
			if ctx.Err() == nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
			return
		}
		ok.Add(1)
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // one long-lived connection
		defer wg.Done()
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(clientCreds))
		if err != nil {
			t.Error(err)
			return
		}
		defer cc.Close()
		for ctx.Err() == nil {
			call(ctx, cc)
		}
	}()
	go func() { // a new connection, and so a new handshake, per call
		defer wg.Done()
		for ctx.Err() == nil {
			cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(clientCreds))
			if err != nil {
				t.Error(err)
				return
			}
			call(ctx, cc)
			handshakes.Add(1)
			cc.Close()
		}
	}()

	phase := func(name string, step func()) {
		before := handshakes.Load()
		step()
		time.Sleep(300 * time.Millisecond)
		if n := handshakes.Load() - before; n < 3 {
			t.Errorf("phase %q saw only %d handshakes", name, n)
		}
		t.Logf("phase %q: %d handshakes, %d calls ok so far, %d failed", name, handshakes.Load()-before, ok.Load(), failed.Load())
	}
	newRoot, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	union, err := ca.Union(oldRoot.Bundle(), newRoot.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	phase("old root only", func() {})
	phase("1: every cluster trusts old and new root", func() {
		east.trust(t, union)
		west.trust(t, union)
	})
	phase("2: new intermediates under the new root, SVIDs reissued", func() {
		for _, c := range []*cluster{east, west} {
			inter, err := newRoot.NewIntermediate(c.name, 12*time.Hour, union)
			if err != nil {
				t.Fatal(err)
			}
			c.inter = inter
			c.reissue(t)
		}
	})
	phase("3: old root removed", func() {
		only, err := ca.Without(union, oldRoot.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		east.trust(t, only)
		west.trust(t, only)
	})
	stop()
	wg.Wait()

	if failed.Load() != 0 {
		t.Fatalf("%d of %d RPCs failed during rotation; first: %v", failed.Load(), failed.Load()+ok.Load(), firstErr.Load())
	}
	// After rotation, the old root is no longer trusted.
	oldInter, _ := oldRoot.NewIntermediate("stale", time.Hour, nil)
	stale, _ := oldInter.IssueSVID(east.id, time.Hour)
	if _, _, err := x509svid.Verify(stale.Certificates, west.src); err == nil {
		t.Fatal("an SVID under the removed root still verifies")
	}
	// Why the union step is needed: a peer that still trusted only the old
	// root would have refused the reissued SVIDs.
	current, _ := west.src.GetX509SVID()
	if _, _, err := x509svid.Verify(current.Certificates, oldRoot.Bundle()); err == nil {
		t.Fatal("an SVID under the new root verifies against the old root alone; the test proves nothing")
	}
	t.Logf("%d RPCs, 0 failed, %d fresh handshakes", ok.Load(), handshakes.Load())
}
