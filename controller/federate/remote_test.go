package federate_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/controller/xds/server"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
	"github.com/meshfed/meshfed/trust/ca"
)

func exportOf(name string, addrs ...string) catalog.ExportedService {
	s := catalog.ExportedService{Namespace: "bookstore", Name: name, Ports: []catalog.Port{{Name: "http", Port: 14001, Protocol: "http"}}}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, catalog.Endpoint{Address: a, Ready: true, Zone: "z1", Identity: string(mesh.NewIdentity(trustDomain, "bookstore", name))})
	}
	return s
}

// TestRemoteServiceWithBadNameDoesNotFreezeXDS has a federation member
// (its own process, its own valid signing key) publish a signed catalog
// with one good service and two bad ones: a name with a newline, and an
// endpoint that is a host name. Before remote services were judged one by
// one, such a catalog reached generation and every xDS Update failed in
// every receiving cluster, local changes included. East's bridge skips the
// two, reports them (metric, MeshConfig status, escaped), keeps the good
// one; a real xDS server fed with east's state serves it to a real
// proxyless client over mTLS, and a local change still reaches that client.
func TestRemoteServiceWithBadNameDoesNotFreezeXDS(t *testing.T) {
	sb := sandboxtest.Start(t, "east")
	root, gossipKey := newFederationKeys(t)
	east := startMember(t, sb.Cluster("east"), root, gossipKey)
	ensureNamespace(t, east, "bookstore")
	startChildMember(t, "mallory", root, gossipKey, east.fed.Addr(),
		exportOf("bookstore-v3", "10.244.3.5"),
		exportOf("evil\nname", "10.244.3.6"),
		exportOf("bookstore-v4", "not-an-ip.example.com"),
	)

	// East holds mallory's whole signed catalog, and its bridge hands out
	// only the good service.
	eventually(t, time.Minute, func() (bool, string) {
		cv := east.fed.Snapshot().Clusters["mallory"]
		rs := east.bridge.Remote()
		got := []string{}
		for _, s := range rs.Remote["mallory"].Services {
			got = append(got, s.Namespace+"/"+s.Name)
		}
		return cv.Catalog != nil && len(cv.Catalog.Services) == 3 && len(got) == 1 && got[0] == "bookstore/bookstore-v3",
			fmt.Sprintf("east's federation holds %d of mallory's services; its bridge hands out %q", len(servicesOf(cv.Catalog)), got)
	})
	if v := gauge(t, east, "meshfed_federate_remote_services_invalid", "mallory"); v != 2 {
		t.Errorf("meshfed_federate_remote_services_invalid{cluster=mallory} = %v, want 2", v)
	}
	eventually(t, time.Minute, func() (bool, string) {
		clusters, _, _, ok := serviceImport(t, east, "bookstore", "bookstore-v3")
		return ok && len(clusters) == 1 && clusters[0] == "mallory", fmt.Sprintf("ServiceImport bookstore/bookstore-v3: %v %v", ok, clusters)
	})
	if _, _, _, ok := serviceImport(t, east, "bookstore", "bookstore-v4"); ok {
		t.Error("east imports bookstore/bookstore-v4, whose endpoint is a host name")
	}

	// The MeshConfig status says what was skipped, names escaped.
	eventually(t, time.Minute, func() (bool, string) {
		u, err := east.dyn.Resource(federate.MeshConfigGVR).Namespace(deploy.DefaultNamespace).Get(testContext(t), deploy.MeshConfigName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		members, _, _ := unstructured.NestedSlice(u.Object, "status", "federation", "members")
		for _, m := range members {
			m := m.(map[string]any)
			if m["name"] != "mallory" {
				continue
			}
			invalid := fmt.Sprint(m["invalid"])
			return fmt.Sprint(m["invalidCount"]) == "2" && strings.Contains(invalid, `bookstore/"evil\nname"`) &&
					strings.Contains(invalid, "endpoint not-an-ip.example.com: not an IP address") && !strings.Contains(invalid, "evil\nname"),
				fmt.Sprintf("mallory in east's status: invalidCount %v, invalid %q", m["invalidCount"], invalid)
		}
		return false, "mallory is not in east's status"
	})

	// A real xDS server fed as the controller feeds it (east's own
	// services plus the bridge's remote state), and a real proxyless
	// client of bookbuyer's identity over mTLS.
	srv, addr := startXDS(t, root)
	bookbuyer := mesh.NewIdentity(trustDomain, "bookbuyer", "bookbuyer")
	local := mesh.Service{Namespace: "bookbuyer", Name: "bookbuyer", Cluster: "east", Ports: []mesh.Port{{Name: "http", Port: 14001}},
		Endpoints: []mesh.Endpoint{{Address: "10.244.1.5", Cluster: "east", Ready: true, Identity: bookbuyer}}}
	state := func(local mesh.Service, remote map[string]mesh.ClusterCatalog, imports []mesh.Import) mesh.State {
		return mesh.State{Settings: mesh.Settings{MeshName: "meshfed", ClusterName: "east", TrustDomain: trustDomain},
			Services: []mesh.Service{local}, Remote: remote, Imports: imports}
	}
	// What the attack did: mallory's catalog taken whole makes Update fail.
	rawRemote, rawImports := unchecked(east)
	if _, err := srv.Update(state(local, rawRemote, rawImports)); err == nil {
		t.Fatal("the xDS server accepts mallory's catalog taken whole; the test does not perform the attack")
	}
	rs := east.bridge.Remote()
	if _, err := srv.Update(state(local, rs.Remote, rs.Imports)); err != nil {
		t.Fatalf("xDS Update with east's remote state: %v", err)
	}
	remoteCluster := generate.ClusterName(mesh.NamespacedName{Namespace: "bookstore", Name: "bookstore-v3"}, 14001, "mallory")
	localCluster := generate.ClusterName(local.Key(), 14001, "")
	ads := dialADS(t, root, addr, bookbuyer)
	ads.send(resourcev3.EndpointType, []string{remoteCluster, localCluster}, nil)
	resp := ads.recv()
	got := endpointsByCluster(t, resp)
	if !slices.Contains(got[remoteCluster], "10.244.3.5") || !slices.Contains(got[localCluster], "10.244.1.5") {
		t.Fatalf("bookbuyer's endpoints: %v", got)
	}
	// A local change still reaches the client.
	local.Endpoints = append(local.Endpoints, mesh.Endpoint{Address: "10.244.1.6", Cluster: "east", Ready: true, Identity: bookbuyer})
	ads.send(resourcev3.EndpointType, []string{remoteCluster, localCluster}, resp)
	if _, err := srv.Update(state(local, rs.Remote, rs.Imports)); err != nil {
		t.Fatalf("xDS Update with a local change: %v", err)
	}
	got = endpointsByCluster(t, ads.recv())
	if !slices.Contains(got[localCluster], "10.244.1.6") || !slices.Contains(got[remoteCluster], "10.244.3.5") {
		t.Fatalf("after a local change bookbuyer's endpoints are %v", got)
	}
}

const xdsServerName = "xds.meshfed.test"

// startXDS runs a real xDS server on 127.0.0.1 with an SVID of root's
// trust domain, requiring client certificates of it.
func startXDS(t *testing.T, root *ca.Root) (*server.Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.Listener = lis
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{svidPair(t, root, mesh.NewIdentity(trustDomain, "meshfed-system", "meshfed-controller"), xdsServerName)},
		ClientCAs: certPool(root), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	cfg.Authenticator = server.PeerCertificateAuthenticator{TrustDomain: trustDomain}
	cfg.Logger = slog.New(slog.DiscardHandler)
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
			t.Errorf("xDS server: %v", err)
		}
	})
	return srv, lis.Addr().String()
}

func svidPair(t *testing.T, root *ca.Root, id mesh.Identity, dns ...string) tls.Certificate {
	t.Helper()
	inter, err := root.NewIntermediate("east", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := inter.IssueTLS(spiffeid.RequireFromString(string(id)), time.Hour, dns...)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func certPool(root *ca.Root) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(root.Certificate)
	return p
}

// adsClient is a proxyless (grpc-go-like) ADS client of one identity.
type adsClient struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
	resps  chan *discoveryv3.DiscoveryResponse
}

func dialADS(t *testing.T, root *ca.Root, addr string, id mesh.Identity) *adsClient {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{svidPair(t, root, id)}, RootCAs: certPool(root),
		ServerName: xdsServerName, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := &adsClient{t: t, stream: stream, node: &corev3.Node{Id: "bookbuyer", UserAgentName: "gRPC Go"}, resps: make(chan *discoveryv3.DiscoveryResponse, 16)}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				close(a.resps)
				return
			}
			a.resps <- resp
		}
	}()
	return a
}

func (a *adsClient) send(typeURL string, names []string, ack *discoveryv3.DiscoveryResponse) {
	a.t.Helper()
	req := &discoveryv3.DiscoveryRequest{Node: a.node, TypeUrl: typeURL, ResourceNames: names}
	if ack != nil {
		req.VersionInfo, req.ResponseNonce = ack.GetVersionInfo(), ack.GetNonce()
	}
	if err := a.stream.Send(req); err != nil {
		a.t.Fatal(err)
	}
}

func (a *adsClient) recv() *discoveryv3.DiscoveryResponse {
	a.t.Helper()
	select {
	case resp, ok := <-a.resps:
		if !ok {
			a.t.Fatal("xDS stream ended")
		}
		return resp
	case <-time.After(time.Minute):
		a.t.Fatal("no xDS response within a minute")
	}
	return nil
}

// endpointsByCluster returns the endpoint addresses of each load
// assignment in resp.
func endpointsByCluster(t *testing.T, resp *discoveryv3.DiscoveryResponse) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, r := range resp.GetResources() {
		var cla endpointv3.ClusterLoadAssignment
		if err := r.UnmarshalTo(&cla); err != nil {
			t.Fatal(err)
		}
		for _, le := range cla.GetEndpoints() {
			for _, e := range le.GetLbEndpoints() {
				out[cla.GetClusterName()] = append(out[cla.GetClusterName()], e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
			}
		}
	}
	return out
}

// unchecked converts east's federation snapshot of mallory's catalog into
// the mesh state as it was done before services were checked one by one.
func unchecked(m *member) (map[string]mesh.ClusterCatalog, []mesh.Import) {
	cv := m.fed.Snapshot().Clusters["mallory"]
	cc := mesh.ClusterCatalog{Cluster: "mallory", Version: cv.Catalog.Version}
	var imports []mesh.Import
	for _, es := range cv.Services {
		s := mesh.Service{Namespace: es.Namespace, Name: es.Name, Cluster: "mallory"}
		for _, p := range es.Ports {
			s.Ports = append(s.Ports, mesh.Port{Name: p.Name, Port: uint32(p.Port), Protocol: mesh.ProtocolHTTP})
		}
		for _, e := range es.Endpoints {
			s.Endpoints = append(s.Endpoints, mesh.Endpoint{Address: e.Address, Cluster: "mallory", Ready: e.Ready, Identity: mesh.Identity(e.Identity)})
		}
		cc.Services = append(cc.Services, s)
		imports = append(imports, mesh.Import{Namespace: s.Namespace, Name: s.Name, Ports: s.Ports, Clusters: []string{"mallory"}})
	}
	return map[string]mesh.ClusterCatalog{"mallory": cc}, imports
}

func servicesOf(c *catalog.Catalog) []catalog.ExportedService {
	if c == nil {
		return nil
	}
	return c.Services
}

func gauge(t *testing.T, m *member, name, cluster string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mm := range mf.GetMetric() {
			for _, l := range mm.GetLabel() {
				if l.GetName() == "cluster" && l.GetValue() == cluster {
					return mm.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}
