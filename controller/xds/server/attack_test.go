package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	extensionservice "github.com/envoyproxy/go-control-plane/envoy/service/extension/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	runtimeservice "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
)

// dialConn is a gRPC connection to m's xDS server over mTLS with id's SVID.
func dialConn(t *testing.T, m *sdsMesh, id mesh.Identity) *grpc.ClientConn {
	t.Helper()
	cert := issue(t, m.authority.Current(), id)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool(m.authority.TrustBundle()),
		ServerName: xdsServerName, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(m.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// borrowedNode is the node an attacker authenticated as bookbuyer sends:
// it names bookstore's sidecar snapshot.
func borrowedNode() *corev3.Node {
	return &corev3.Node{Id: string(bookstoreID) + "|sidecar", UserAgentName: "envoy", Cluster: "bookstore"}
}

// everyDiscoveryService is every Envoy discovery service (ADS and each
// per-type one); their methods are read from the generated descriptors,
// so none is forgotten.
var everyDiscoveryService = []grpc.ServiceDesc{
	discoveryv3.AggregatedDiscoveryService_ServiceDesc,
	listenerservice.ListenerDiscoveryService_ServiceDesc,
	routeservice.RouteDiscoveryService_ServiceDesc,
	routeservice.ScopedRoutesDiscoveryService_ServiceDesc,
	routeservice.VirtualHostDiscoveryService_ServiceDesc,
	clusterservice.ClusterDiscoveryService_ServiceDesc,
	endpointservice.EndpointDiscoveryService_ServiceDesc,
	endpointservice.LocalityEndpointDiscoveryService_ServiceDesc,
	secretservice.SecretDiscoveryService_ServiceDesc,
	runtimeservice.RuntimeDiscoveryService_ServiceDesc,
	extensionservice.ExtensionConfigDiscoveryService_ServiceDesc,
}

// typeOfService is the resource type a per-type service's requests name.
func typeOfService(service string) string {
	switch {
	case strings.Contains(service, ".listener."):
		return resourcev3.ListenerType
	case strings.Contains(service, "RouteDiscovery"):
		return resourcev3.RouteType
	case strings.Contains(service, ".cluster."):
		return resourcev3.ClusterType
	case strings.Contains(service, "EndpointDiscovery"):
		return resourcev3.EndpointType
	}
	return resourcev3.SecretType
}

// TestDeltaXDSCannotBorrowAnotherIdentity performs the attack of issue 9
// (finding 1) on every discovery method meshfed does not serve: a client
// authenticated as bookbuyer names bookstore's sidecar as its node and
// subscribes to the identity secret (and the type the service serves)
// over delta ADS, every per-type SotW and delta stream, and every unary
// fetch. Each answers Unimplemented, pointing at SotW ADS, and sends
// nothing; bookstore's key is never issued.
func TestDeltaXDSCannotBorrowAnotherIdentity(t *testing.T) {
	m := startSDSMesh(t)
	conn := dialConn(t, m, bookbuyerID)
	attacked := 0
	for _, sd := range everyDiscoveryService {
		for _, st := range sd.Streams {
			method := "/" + sd.ServiceName + "/" + st.StreamName
			if method == "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources" {
				continue // served: TestSotWXDSCannotBorrowAnotherIdentity
			}
			attacked++
			t.Run(sd.ServiceName+"/"+st.StreamName, func(t *testing.T) {
				var req, resp proto.Message
				if strings.HasPrefix(st.StreamName, "Delta") {
					req = &discoveryv3.DeltaDiscoveryRequest{Node: borrowedNode(), TypeUrl: resourcev3.SecretType,
						ResourceNamesSubscribe: []string{generate.SDSIdentitySecret, generate.SDSTrustBundleSecret}}
					resp = &discoveryv3.DeltaDiscoveryResponse{}
				} else {
					req = &discoveryv3.DiscoveryRequest{Node: borrowedNode(), TypeUrl: typeOfService(sd.ServiceName),
						ResourceNames: []string{generate.SDSIdentitySecret, generate.SDSTrustBundleSecret}}
					resp = &discoveryv3.DiscoveryResponse{}
				}
				wantRefused(t, attackStream(t, conn, method, req, resp), resp)
			})
		}
		for _, md := range sd.Methods {
			attacked++
			t.Run(sd.ServiceName+"/"+md.MethodName, func(t *testing.T) {
				req := &discoveryv3.DiscoveryRequest{Node: borrowedNode(), TypeUrl: typeOfService(sd.ServiceName),
					ResourceNames: []string{generate.SDSIdentitySecret, generate.SDSTrustBundleSecret}}
				resp := &discoveryv3.DiscoveryResponse{}
				ctx, cancel := context.WithTimeout(context.Background(), testWait)
				defer cancel()
				err := conn.Invoke(ctx, "/"+sd.ServiceName+"/"+md.MethodName, req, resp)
				wantRefused(t, err, resp)
			})
		}
	}
	// The delta ADS stream is refused before any request is read: a
	// stream that sends nothing is refused too.
	t.Run("DeltaAggregatedResources without a request", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		wantRefused(t, err, resp)
	})
	if attacked < 25 {
		t.Fatalf("attacked %d methods; the descriptors list at least 25 besides SotW ADS", attacked)
	}
	if n := metricValue(t, m.reg, "meshfed_xds_refused_requests_total", "reason", "method"); n < float64(attacked) {
		t.Errorf("refused methods counted %v, want at least %d", n, attacked)
	}
	// No stream of any identity was ever served: bookstore's key was
	// never issued (nor bookbuyer's).
	if n := metricValue(t, m.reg, "meshfed_xds_connected_proxies", "", ""); n != 0 {
		t.Errorf("%v proxies connected, want none", n)
	}
}

// attackStream opens method as a bidirectional stream, sends req and
// returns the error of the first receive into resp.
func attackStream(t *testing.T, conn *grpc.ClientConn, method string, req, resp proto.Message) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	t.Cleanup(cancel)
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method)
	if err != nil {
		return err
	}
	if err := st.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("send: %v", err)
	}
	return st.RecvMsg(resp)
}

// wantRefused checks that err is Unimplemented, pointing at SotW ADS, and
// that nothing was received into resp.
func wantRefused(t *testing.T, err error, resp proto.Message) {
	t.Helper()
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("got %v (response %v), want Unimplemented", err, resp)
	}
	if !strings.Contains(status.Convert(err).Message(), "api_type: GRPC") {
		t.Errorf("refusal %q does not say to use api_type: GRPC", status.Convert(err).Message())
	}
	if resp != nil && proto.Size(resp) != 0 {
		t.Fatalf("refused method sent %v", resp)
	}
}

// TestSotWXDSCannotBorrowAnotherIdentity performs the same attack on the
// one method meshfed serves, state-of-the-world ADS: bookbuyer's sidecar
// names bookstore's sidecar as its node on every request. It is served
// bookbuyer's own secrets and bookbuyer's own configuration, never
// bookstore's inbound listener, routes and clusters.
func TestSotWXDSCannotBorrowAnotherIdentity(t *testing.T) {
	m := startSDSMesh(t)
	genuine := sidecarConfig(t, m, bookstoreID, &corev3.Node{Id: "bookstore", UserAgentName: "envoy"})
	if !slices.Contains(genuine.listeners, generate.SidecarInboundListener) {
		t.Fatalf("bookstore's sidecar has no inbound listener (%v); the test cannot tell identities apart", genuine.listeners)
	}
	own := sidecarConfig(t, m, bookbuyerID, &corev3.Node{Id: "bookbuyer", UserAgentName: "envoy"})
	attacker := sidecarConfig(t, m, bookbuyerID, borrowedNode())
	if attacker.secretID != bookbuyerID {
		t.Fatalf("attacker was served the key of %s", attacker.secretID)
	}
	if !slices.Equal(attacker.listeners, own.listeners) || !slices.Equal(attacker.clusters, own.clusters) {
		t.Fatalf("attacker got listeners %v, clusters %v; bookbuyer's own are %v, %v",
			attacker.listeners, attacker.clusters, own.listeners, own.clusters)
	}
	if slices.Equal(attacker.clusters, genuine.clusters) && slices.Equal(attacker.listeners, genuine.listeners) {
		t.Fatal("attacker got bookstore's configuration")
	}
}

// servedSidecar is what one sidecar stream was served.
type servedSidecar struct {
	secretID            mesh.Identity
	listeners, clusters []string
}

// sidecarConfig connects as id with node (every request carries it) and
// returns the identity of the served certificate and the names of the
// served listeners and clusters.
func sidecarConfig(t *testing.T, m *sdsMesh, id mesh.Identity, node *corev3.Node) servedSidecar {
	t.Helper()
	a := dialADS(t, m, id, node.GetUserAgentName())
	a.node = node
	a.request(resourcev3.SecretType, []string{generate.SDSIdentitySecret, generate.SDSTrustBundleSecret}, nil)
	a.request(resourcev3.ClusterType, nil, nil)
	a.request(resourcev3.ListenerType, nil, nil)
	var out servedSidecar
	for seen := 0; seen != 7; {
		resp := a.recv()
		switch resp.GetTypeUrl() {
		case resourcev3.SecretType:
			got := secrets(t, resp)
			tc := got[generate.SDSIdentitySecret].GetTlsCertificate()
			svid, err := x509svid.Parse(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
			if err != nil {
				t.Fatalf("identity secret: %v", err)
			}
			out.secretID = mesh.Identity(svid.ID.String())
			verifiedSVID(t, got, out.secretID, m.authority)
			seen |= 1
			a.request(resourcev3.SecretType, []string{generate.SDSIdentitySecret, generate.SDSTrustBundleSecret}, resp)
			continue
		case resourcev3.ClusterType:
			out.clusters = resourceNames(t, resp, &clusterv3.Cluster{})
			seen |= 2
		case resourcev3.ListenerType:
			out.listeners = resourceNames(t, resp, &listenerv3.Listener{})
			seen |= 4
		}
		a.request(resp.GetTypeUrl(), nil, resp) // ACK
	}
	return out
}

// testWait bounds a wait for something that happens at once on an idle
// machine; it is long so that a loaded one never fails the test.
const testWait = time.Minute

// resourceNames returns the sorted names of resp's resources, each
// decoded into a fresh copy of msg.
func resourceNames(t *testing.T, resp *discoveryv3.DiscoveryResponse, msg interface {
	proto.Message
	GetName() string
}) []string {
	t.Helper()
	var names []string
	for _, r := range resp.GetResources() {
		m := proto.Clone(msg)
		if err := r.UnmarshalTo(m); err != nil {
			t.Fatal(err)
		}
		names = append(names, m.(interface{ GetName() string }).GetName())
	}
	slices.Sort(names)
	return names
}

// metricValue returns the value of the counter or gauge name whose label
// has value (any series if label is ""), summed.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			match := label == ""
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if match {
				sum += mt.GetCounter().GetValue() + mt.GetGauge().GetValue()
			}
		}
	}
	return sum
}
