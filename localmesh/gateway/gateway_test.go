package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/controller/xds/server"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/trust/ca"
)

const td = "cluster.local"

var (
	gatewayID   = mesh.NewIdentity(td, "meshfed-system", "meshfed-gateway")
	bookstoreID = mesh.NewIdentity(td, "bookstore", "bookstore")
	bookbuyerID = mesh.NewIdentity(td, "bookbuyer", "bookbuyer")
)

type fixture struct {
	client tls.Certificate // bookbuyer's
	inter  *ca.Intermediate
	pool   *x509.CertPool
	srv    *server.Server
	addr   string
}

func issue(t *testing.T, inter *ca.Intermediate, id mesh.Identity, dns ...string) tls.Certificate {
	t.Helper()
	cert, err := inter.IssueTLS(spiffeid.RequireFromString(string(id)), time.Hour, dns...)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// newIntermediate is a real CA for td.
func newIntermediate(t *testing.T) *ca.Intermediate {
	t.Helper()
	root, err := ca.GenerateRoot(spiffeid.RequireTrustDomainFromString(td), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("east", 12*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	return inter
}

// startController runs a real xDS server whose gateway identity is
// gatewayID, with TLS from a real CA.
func startController(t *testing.T) *fixture {
	t.Helper()
	inter := newIntermediate(t)
	pool := x509.NewCertPool()
	for _, c := range inter.Bundle().X509Authorities() {
		pool.AddCert(c)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.Listener = lis
	cfg.Authenticator = server.PeerCertificateAuthenticator{TrustDomain: td}
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{issue(t, inter, mesh.NewIdentity(td, "meshfed-system", "meshfed-controller"), "xds.test")},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
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
	return &fixture{client: issue(t, inter, bookbuyerID), inter: inter, pool: pool, srv: srv, addr: lis.Addr().String()}
}

// startBackend is a bookstore pod: a TLS server with bookstore's SVID that
// requires a client certificate and answers each connection with the
// SPIFFE ID it verified and its own name.
func startBackend(t *testing.T, f *fixture, ip, name string) net.Addr {
	t.Helper()
	lis, err := tls.Listen("tcp", ip+":0", &tls.Config{Certificates: []tls.Certificate{issue(t, f.inter, bookstoreID)},
		ClientCAs: f.pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func(c *tls.Conn) {
				defer c.Close()
				if err := c.Handshake(); err != nil {
					return
				}
				peer := c.ConnectionState().PeerCertificates[0].URIs[0].String()
				_, _ = c.Write([]byte(peer + " " + name + "\n"))
			}(c.(*tls.Conn))
		}
	}()
	return lis.Addr()
}

func (f *fixture) update(t *testing.T, backends []net.Addr, exported bool) {
	t.Helper()
	port := []mesh.Port{{Name: "grpc", Port: 14001, Protocol: mesh.ProtocolGRPC}}
	svc := mesh.Service{Namespace: "bookstore", Name: "bookstore", Cluster: "east", Ports: port}
	for _, b := range backends {
		a := b.(*net.TCPAddr)
		svc.Endpoints = append(svc.Endpoints, mesh.Endpoint{Address: a.IP.String(), TargetPorts: map[string]uint32{"grpc": uint32(a.Port)},
			Cluster: "east", Ready: true, Identity: bookstoreID})
	}
	s := mesh.State{Settings: mesh.Settings{ClusterName: "east", TrustDomain: td}, Services: []mesh.Service{svc},
		MeshedNamespaces: []string{"bookstore"}}
	if exported {
		s.Imports = []mesh.Import{{Namespace: "bookstore", Name: "bookstore", Ports: port, Clusters: []string{"east", "west"}}}
	}
	if problems, err := f.srv.Update(s); err != nil || len(problems) > 0 {
		t.Fatalf("Update: %v %v", problems, err)
	}
}

func startGateway(t *testing.T, f *fixture) *Gateway {
	t.Helper()
	g := New(Config{XDSAddress: f.addr,
		TLS: &tls.Config{Certificates: []tls.Certificate{issue(t, f.inter, gatewayID)}, RootCAs: f.pool, ServerName: "xds.test", MinVersion: tls.VersionTLS12},
		// Any free loopback port stands for the gateway Service's port.
		Listen: func(uint32) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return g
}

// listening waits for g to listen on the gateway port and returns its
// address.
func listening(t *testing.T, g *Gateway) string {
	t.Helper()
	var addr string
	eventually(t, "the gateway listens", func() error {
		if addr = g.Addr(generate.GatewayPort); addr == "" {
			return errors.New("no listener yet")
		}
		return nil
	})
	return addr
}

// call dials the gateway as bookbuyer with sni and returns what the pod
// said, after checking that the pod (not the gateway) presented
// bookstore's SVID.
func call(f *fixture, gw, sni string) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", gw, &tls.Config{
		Certificates: []tls.Certificate{f.client}, RootCAs: f.pool, ServerName: sni, MinVersion: tls.VersionTLS13,
		// A SPIFFE client checks the URI SAN, not the server name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			opts := x509.VerifyOptions{Roots: f.pool, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				return err
			}
			if got := cs.PeerCertificates[0].URIs[0].String(); got != string(bookstoreID) {
				return errors.New("server presented " + got)
			}
			return nil
		}})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return bufio.NewReader(c).ReadString('\n')
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A connection naming an exported service's SNI reaches one of its pods
// with mTLS end to end: the client verified the pod's SVID and the pod the
// client's. Connections spread over the pods. A wrong SNI, the SNI of a
// service that is not exported, or no TLS at all is closed.
func TestGatewayPassesTLSThroughBySNI(t *testing.T) {
	f := startController(t)
	b1, b2 := startBackend(t, f, "127.0.0.2", "pod-1"), startBackend(t, f, "127.0.0.3", "pod-2")
	f.update(t, []net.Addr{b1, b2}, true)
	g := startGateway(t, f)
	sni := generate.SNI(mesh.NamespacedName{Namespace: "bookstore", Name: "bookstore"}, 14001)

	addr := listening(t, g)
	seen := map[string]int{}
	eventually(t, "both pods answer through the gateway", func() error {
		got, err := call(f, addr, sni)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(got, string(bookbuyerID)+" ") {
			t.Fatalf("the pod saw %q; want the client's own SPIFFE ID", got)
		}
		seen[strings.TrimSpace(strings.TrimPrefix(got, string(bookbuyerID)+" "))]++
		if seen["pod-1"] == 0 || seen["pod-2"] == 0 {
			return errors.New("answers so far: " + strings.Join(keys(seen), ","))
		}
		return nil
	})

	for _, bad := range []string{"outbound_.14001_._.bookwarehouse.bookstore.svc.cluster.local", "bookstore.bookstore.svc.cluster.local", ""} {
		if got, err := call(f, addr, bad); err == nil {
			t.Errorf("SNI %q reached a pod: %q", bad, got)
		}
	}
	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = plain.Write([]byte("GET / HTTP/1.1\r\nHost: bookstore\r\n\r\n"))
	_ = plain.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _ := plain.Read(make([]byte, 64)); n != 0 {
		t.Error("a plaintext connection got an answer")
	}
	_ = plain.Close()

	// Unexported: the gateway closes the listener's last route.
	f.update(t, []net.Addr{b1, b2}, false)
	eventually(t, "the unexported service is no longer reachable", func() error {
		if _, err := call(f, addr, sni); err == nil {
			return errors.New("still answered")
		}
		return nil
	})
	if n := g.NACKs(); len(n) > 0 {
		t.Errorf("the gateway refused meshfed's own configuration: %v", n)
	}
}

func keys(m map[string]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// The gateway listens only once the clusters its routes name have their
// endpoints (as Envoy warms clusters before it serves a listener), so the
// first connection after the port opens is routed: a load balancer never
// sends a client to a replica that would close it.
func TestGatewayListensOnlyOnceWarm(t *testing.T) {
	f := startController(t)
	b1 := startBackend(t, f, "127.0.0.2", "pod-1")
	f.update(t, []net.Addr{b1}, true)
	g := startGateway(t, f)
	sni := generate.SNI(mesh.NamespacedName{Namespace: "bookstore", Name: "bookstore"}, 14001)
	addr := listening(t, g)
	if got, err := call(f, addr, sni); err != nil || !strings.HasSuffix(strings.TrimSpace(got), "pod-1") {
		t.Fatalf("the first connection once the port is open: %q, %v", got, err)
	}
}

func TestWarmNeedsEveryClusterAndItsEndpoints(t *testing.T) {
	routes := map[string]string{"a.sni": "ca", "b.sni": "cb"}
	for _, c := range []struct {
		name string
		t    table
		want bool
	}{
		{"nothing known", table{}, false},
		{"a cluster missing", table{clusters: map[string]string{"ca": "ea"}, endpoints: map[string][]netip.AddrPort{"ea": nil}}, false},
		{"an assignment missing", table{clusters: map[string]string{"ca": "ea", "cb": "eb"}, endpoints: map[string][]netip.AddrPort{"ea": nil}}, false},
		{"all received (no endpoints is an answer)", table{clusters: map[string]string{"ca": "ea", "cb": "eb"}, endpoints: map[string][]netip.AddrPort{"ea": nil, "eb": {}}}, true},
	} {
		if got := c.t.warm(routes); got != c.want {
			t.Errorf("%s: warm = %v, want %v", c.name, got, c.want)
		}
	}
}
