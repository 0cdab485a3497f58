package federate_test

import (
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/xds/server"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/tests/sandbox"
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
// one, and a real xDS server fed with east's state keeps accepting local
// changes.
func TestRemoteServiceWithBadNameDoesNotFreezeXDS(t *testing.T) {
	sb := sandbox.StartForTest(t, "east")
	root, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gossipKey := make([]byte, 32)
	if _, err := rand.Read(gossipKey); err != nil {
		t.Fatal(err)
	}
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

	// A real xDS server fed as the controller feeds it: east's own
	// services plus the bridge's remote state.
	cfg := server.DefaultConfig()
	cfg.Address = "127.0.0.1:0"
	cfg.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}
	cfg.Authenticator = server.PeerCertificateAuthenticator{TrustDomain: trustDomain}
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	local := mesh.Service{Namespace: "bookbuyer", Name: "bookbuyer", Cluster: "east", Ports: []mesh.Port{{Name: "http", Port: 14001}},
		Endpoints: []mesh.Endpoint{{Address: "10.244.1.5", Cluster: "east", Ready: true, Identity: mesh.NewIdentity(trustDomain, "bookbuyer", "bookbuyer")}}}
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
	before := srv.EndpointsVersion()
	local.Endpoints = append(local.Endpoints, mesh.Endpoint{Address: "10.244.1.6", Cluster: "east", Ready: true, Identity: mesh.NewIdentity(trustDomain, "bookbuyer", "bookbuyer")})
	if _, err := srv.Update(state(local, rs.Remote, rs.Imports)); err != nil {
		t.Fatalf("xDS Update with a local change: %v", err)
	}
	if srv.EndpointsVersion() == before {
		t.Error("a new local endpoint did not change the published endpoints")
	}
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
