package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/controller/xds/server"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/sds"
)

const xdsServerName = "xds.meshfed.test"

// sdsMesh is an xDS server whose secrets come from a real trust/ca
// Authority, with TLS from the same CA.
type sdsMesh struct {
	root      *ca.Root
	authority *ca.Authority
	srv       *server.Server
	addr      string
	reg       *prometheus.Registry
	// state is the state the server was given.
	state mesh.State
}

func startSDSMesh(t *testing.T) *sdsMesh {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	root, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("east", 12*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	authority := ca.NewAuthority(inter)
	controller := issue(t, inter, mesh.NewIdentity(trustDomain, "meshfed-system", "meshfed-controller"), xdsServerName)
	cfg, reg := testServerConfig(t)
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{controller}, ClientCAs: pool(inter.Bundle()),
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	cfg.Secrets = server.NewAuthoritySecrets(authority, time.Hour)
	cfg.GatewayIdentity = gatewayID
	srv := runServer(t, cfg)
	// bookstore serves (its sidecar has an inbound listener using SDS);
	// every sidecar has the bookstore cluster using SDS upstream.
	state := mesh.State{
		Settings: mesh.Settings{ClusterName: "east", TrustDomain: trustDomain},
		Services: []mesh.Service{{
			Namespace: "bookstore", Name: "bookstore", Cluster: "east",
			Ports: []mesh.Port{{Name: "grpc", Port: 14001, Protocol: mesh.ProtocolGRPC}},
			Endpoints: []mesh.Endpoint{{Address: "10.0.0.1", TargetPorts: map[string]uint32{"grpc": 9000}, Cluster: "east",
				Locality: mesh.Locality{Zone: "z1"}, Ready: true, Identity: bookstoreID}},
		}},
	}
	if problems, err := srv.Update(state); err != nil || len(problems) > 0 {
		t.Fatalf("Update: problems %v, err %v", problems, err)
	}
	return &sdsMesh{root: root, authority: authority, srv: srv, addr: cfg.Listener.Addr().String(), reg: reg, state: state}
}

// issue returns a TLS certificate for id from inter.
func issue(t *testing.T, inter *ca.Intermediate, id mesh.Identity, dns ...string) tls.Certificate {
	t.Helper()
	cert, err := inter.IssueTLS(spiffeid.RequireFromString(string(id)), time.Hour, dns...)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func pool(b *x509bundle.Bundle) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range b.X509Authorities() {
		p.AddCert(c)
	}
	return p
}

// adsStream is an Envoy-like ADS client: it connects with id's SVID and
// says it is Envoy (or not).
type adsStream struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
}

func dialADS(t *testing.T, m *sdsMesh, id mesh.Identity, userAgent string) *adsStream {
	t.Helper()
	cert := issue(t, m.authority.Current(), id)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool(m.authority.TrustBundle()),
		ServerName: xdsServerName, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(m.addr, grpc.WithTransportCredentials(creds))
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
	// The node ID is a claim the server ignores; the certificate decides.
	return &adsStream{t: t, stream: stream, node: &corev3.Node{Id: "claims-to-be-bookbuyer", UserAgentName: userAgent}}
}

func (a *adsStream) request(typeURL string, names []string, ack *discoveryv3.DiscoveryResponse) {
	a.t.Helper()
	req := &discoveryv3.DiscoveryRequest{Node: a.node, TypeUrl: typeURL, ResourceNames: names}
	if ack != nil {
		req.VersionInfo, req.ResponseNonce = ack.GetVersionInfo(), ack.GetNonce()
	}
	if err := a.stream.Send(req); err != nil {
		a.t.Fatal(err)
	}
}

func (a *adsStream) recv() *discoveryv3.DiscoveryResponse {
	a.t.Helper()
	resp, err := a.stream.Recv()
	if err != nil {
		a.t.Fatal(err)
	}
	return resp
}

// secrets returns the secrets of resp by name.
func secrets(t *testing.T, resp *discoveryv3.DiscoveryResponse) map[string]*tlsv3.Secret {
	t.Helper()
	out := map[string]*tlsv3.Secret{}
	for _, r := range resp.GetResources() {
		s := &tlsv3.Secret{}
		if err := r.UnmarshalTo(s); err != nil {
			t.Fatal(err)
		}
		out[s.GetName()] = s
	}
	return out
}

// verifiedSVID checks that got holds exactly want's certificate and key and
// the trust bundle: the key matches the certificate, which verifies against
// the served bundle (and the CA's) with want's SPIFFE ID.
func verifiedSVID(t *testing.T, got map[string]*tlsv3.Secret, want mesh.Identity, authority *ca.Authority) *x509svid.SVID {
	t.Helper()
	if len(got) != 2 || got[generate.SDSIdentitySecret] == nil || got[generate.SDSTrustBundleSecret] == nil {
		t.Fatalf("secrets %v, want exactly %s and %s", keys(got), generate.SDSIdentitySecret, generate.SDSTrustBundleSecret)
	}
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	roots, err := ca.ParseCertificatesPEM(got[generate.SDSTrustBundleSecret].GetValidationContext().GetTrustedCa().GetInlineBytes())
	if err != nil {
		t.Fatal(err)
	}
	served := x509bundle.FromX509Authorities(td, roots)
	tc := got[generate.SDSIdentitySecret].GetTlsCertificate()
	// Parse fails unless the private key belongs to the leaf certificate.
	svid, err := x509svid.Parse(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("identity secret: %v", err)
	}
	for _, b := range []*x509bundle.Bundle{served, authority.TrustBundle()} {
		id, _, err := x509svid.Verify(svid.Certificates, b)
		if err != nil {
			t.Fatalf("identity certificate does not verify against the bundle: %v", err)
		}
		if id.String() != string(want) {
			t.Fatalf("identity certificate is for %s, want %s", id, want)
		}
	}
	return svid
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

func TestSidecarGetsOnlyItsOwnIdentitysSecrets(t *testing.T) {
	m := startSDSMesh(t)
	a := dialADS(t, m, bookstoreID, "envoy")
	// It also names bookbuyer's secret, by trust/sds's name and by the
	// name bookbuyer's own snapshot uses: neither gives it bookbuyer's key.
	foreign := sds.IdentitySecretName(spiffeid.RequireFromString(string(bookbuyerID)))
	a.request(resourcev3.SecretType, []string{generate.SDSIdentitySecret, generate.SDSTrustBundleSecret, foreign}, nil)
	got := secrets(t, a.recv())
	if got[foreign] != nil {
		t.Fatalf("bookstore's sidecar was served %s", foreign)
	}
	verifiedSVID(t, got, bookstoreID, m.authority)
	if n := counter(t, m.reg, "meshfed_xds_refused_secret_requests_total"); n != 1 {
		t.Errorf("refused secret requests = %v, want 1", n)
	}
}

func TestSidecarsOfTwoIdentitiesGetDifferentKeysUnderTheSameNames(t *testing.T) {
	m := startSDSMesh(t)
	var leaves []*x509.Certificate
	for _, id := range []mesh.Identity{bookstoreID, bookbuyerID} {
		a := dialADS(t, m, id, "envoy")
		a.request(resourcev3.SecretType, []string{generate.SDSIdentitySecret, generate.SDSTrustBundleSecret}, nil)
		leaves = append(leaves, verifiedSVID(t, secrets(t, a.recv()), id, m.authority).Certificates[0])
	}
	if leaves[0].Equal(leaves[1]) {
		t.Fatal("two identities were served the same certificate")
	}
}

func TestSidecarGetsANewSecretWhenTheCARotates(t *testing.T) {
	m := startSDSMesh(t)
	a := dialADS(t, m, bookstoreID, "envoy")
	names := []string{generate.SDSIdentitySecret, generate.SDSTrustBundleSecret}
	a.request(resourcev3.SecretType, names, nil)
	first := a.recv()
	before := verifiedSVID(t, secrets(t, first), bookstoreID, m.authority)
	a.request(resourcev3.SecretType, names, first) // ACK

	next, err := m.root.NewIntermediate("east", 12*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.authority.Set(next)
	m.srv.RefreshSecrets()

	second := a.recv()
	if second.GetVersionInfo() == first.GetVersionInfo() {
		t.Fatalf("version %s sent again", second.GetVersionInfo())
	}
	after := verifiedSVID(t, secrets(t, second), bookstoreID, m.authority)
	if after.Certificates[0].Equal(before.Certificates[0]) {
		t.Fatal("same certificate after the CA rotated")
	}
	if err := after.Certificates[0].CheckSignatureFrom(next.Certificate()); err != nil {
		t.Fatalf("new certificate is not signed by the new intermediate: %v", err)
	}
}

func TestProxylessClientGetsNoSecrets(t *testing.T) {
	m := startSDSMesh(t)
	a := dialADS(t, m, bookstoreID, "grpc-go")
	a.request(resourcev3.SecretType, []string{generate.SDSIdentitySecret}, nil)
	a.request(resourcev3.ClusterType, nil, nil)
	// Requests are handled in order: by the CDS answer the SDS request has
	// been seen; any SDS answer before it is empty.
	for {
		resp := a.recv()
		if resp.GetTypeUrl() == resourcev3.SecretType {
			if len(resp.GetResources()) > 0 {
				t.Fatalf("proxyless client was sent %d secrets", len(resp.GetResources()))
			}
			continue
		}
		break
	}
	if n := counter(t, m.reg, "meshfed_xds_refused_secret_requests_total"); n != 1 {
		t.Errorf("refused secret requests = %v, want 1", n)
	}
}
