package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sort"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/localmesh/gateway"
	"github.com/meshfed/meshfed/mesh"
)

// BenchmarkRPCThroughTheGateway measures a unary gRPC call with mTLS to
// west's pod (a grpc-go xDS server with RBAC), dialled directly and
// through the stand-in gateway, over one connection each, and reports
// p50 and p99. The client is plain grpc-go with bookbuyer's SVID, sending
// the SNI the gateway routes on (the authority) and checking the pod's
// SPIFFE ID, as an xDS client does.
func BenchmarkRPCThroughTheGateway(b *testing.B) {
	p := newPKI(b)
	westXDS, westAddr := startXDS(b, p)
	pod, serving := startPod(b, p, westAddr, "127.0.0.3")
	update(b, westXDS, mesh.State{
		Settings:         mesh.Settings{ClusterName: "west", Network: "net-west", TrustDomain: td},
		MeshedNamespaces: []string{"bookstore"},
		Services: []mesh.Service{{Namespace: "bookstore", Name: "bookstore", Cluster: "west", Ports: port, Endpoints: []mesh.Endpoint{{
			Address: pod.Addr().String(), TargetPorts: map[string]uint32{"grpc": uint32(pod.Port())}, Cluster: "west", Ready: true, Identity: bookstoreID}}}},
		TrafficTargets: []mesh.TrafficTarget{{Namespace: "bookstore", Name: "bookbuyer-access-bookstore", Destination: bookstoreID,
			Sources: []mesh.Identity{bookbuyerID}, Rules: []mesh.TrafficTargetRule{{Kind: mesh.KindTCPRoute, Name: "all"}}}},
		TCPRoutes: []mesh.TCPRoute{{Namespace: "bookstore", Name: "all"}},
		Imports:   []mesh.Import{{Namespace: "bookstore", Name: "bookstore", Ports: port, Clusters: []string{"west"}}},
	})
	select {
	case <-serving:
	case <-time.After(time.Minute):
		b.Fatal("west's pod never got its server listener")
	}
	gw := gateway.New(gateway.Config{XDSAddress: westAddr,
		TLS:    &tls.Config{Certificates: []tls.Certificate{p.tlsCert(b, gatewayID)}, RootCAs: p.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12},
		Listen: func(uint32) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	var gwAddr string
	for deadline := time.Now().Add(time.Minute); gwAddr == ""; gwAddr = gw.Addr(generate.GatewayPort) {
		if time.Now().After(deadline) {
			b.Fatal("the gateway never got its listener")
		}
		time.Sleep(50 * time.Millisecond)
	}
	sni := generate.SNI(mesh.NamespacedName{Namespace: "bookstore", Name: "bookstore"}, 14001)
	for _, c := range []struct{ name, addr string }{{"direct", pod.String()}, {"gateway", gwAddr}} {
		b.Run(c.name, func(b *testing.B) {
			client := healthpb.NewHealthClient(dialPod(b, p, c.addr, sni))
			call := func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
				return err
			}
			for deadline := time.Now().Add(time.Minute); call() != nil; {
				if time.Now().After(deadline) {
					b.Fatalf("%s: no answer: %v", c.name, call())
				}
				time.Sleep(50 * time.Millisecond)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if err := call(); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// dialPod is a plain grpc-go client with bookbuyer's SVID that sends sni
// and accepts only bookstore's SPIFFE ID.
func dialPod(b *testing.B, p *pki, addr, sni string) *grpc.ClientConn {
	b.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{p.tlsCert(b, bookbuyerID)}, MinVersion: tls.VersionTLS13,
		InsecureSkipVerify: true, // the SPIFFE check below replaces the host name check
		VerifyConnection: func(cs tls.ConnectionState) error {
			opts := x509.VerifyOptions{Roots: p.pool, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				return err
			}
			if len(cs.PeerCertificates[0].URIs) != 1 || cs.PeerCertificates[0].URIs[0].String() != string(bookstoreID) {
				return errors.New("not bookstore")
			}
			return nil
		}}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)), grpc.WithAuthority(sni))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cc.Close() })
	return cc
}
