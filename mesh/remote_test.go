package mesh

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

func goodRemote() Service {
	td := "cluster.local"
	return Service{
		Namespace: "bookstore", Name: "bookstore-v2", Cluster: "west",
		Ports:      []Port{{Name: "http", Port: 14001, Protocol: ProtocolHTTP}},
		Identities: []Identity{NewIdentity(td, "bookstore", "bookstore-v2")},
		Endpoints: []Endpoint{
			{Address: "10.244.2.5", Cluster: "west", Network: "net-west", Locality: Locality{Zone: "eu-west-1a"}, Ready: true, Identity: NewIdentity(td, "bookstore", "bookstore-v2")},
			{Address: "fd00:10:244::5", Cluster: "west", Ready: true},
		},
	}
}

func TestValidateRemoteRefusesWhatAHostileMemberCouldSend(t *testing.T) {
	if err := goodRemote().ValidateRemote("west", "cluster.local"); err != nil {
		t.Fatalf("good remote service refused: %v", err)
	}
	cases := []struct {
		name   string
		change func(*Service)
		want   string
	}{
		{"newline in name", func(s *Service) { s.Name = "evil\nname" }, `name "evil\nname"`},
		{"name starts with a digit", func(s *Service) { s.Name = "2fast" }, "DNS-1035"},
		{"upper-case namespace", func(s *Service) { s.Namespace = "Bookstore" }, "namespace Bookstore"},
		{"long namespace", func(s *Service) { s.Namespace = strings.Repeat("a", 64) }, "DNS-1123"},
		{"another cluster's service", func(s *Service) { s.Cluster = "east" }, "claims cluster east"},
		{"host name as endpoint", func(s *Service) { s.Endpoints[0].Address = "not-an-ip.example.com" }, "not an IP address"},
		{"loopback endpoint", func(s *Service) { s.Endpoints[0].Address = "127.0.0.1" }, "loopback"},
		{"metadata service endpoint", func(s *Service) { s.Endpoints[0].Address = "169.254.169.254" }, "link-local"},
		{"unspecified endpoint", func(s *Service) { s.Endpoints[0].Address = "::" }, "unspecified"},
		{"non-canonical address", func(s *Service) { s.Endpoints[1].Address = "fd00:10:244:0::5" }, "canonical"},
		{"zoned address", func(s *Service) { s.Endpoints[1].Address = "fd00::5%eth0" }, "zoned"},
		{"endpoint of another cluster", func(s *Service) { s.Endpoints[0].Cluster = "east" }, "claims cluster east"},
		{"identity of another trust domain", func(s *Service) { s.Identities[0] = NewIdentity("evil.example", "bookstore", "bookstore-v2") }, "trust domain"},
		{"identity of another namespace", func(s *Service) {
			s.Endpoints[0].Identity = NewIdentity("cluster.local", "kube-system", "admin")
		}, "namespace"},
		{"identity not SPIFFE", func(s *Service) { s.Endpoints[0].Identity = "bookstore" }, "spiffe://"},
		{"port zero", func(s *Service) { s.Ports[0].Port = 0 }, "out of range"},
		{"port too large", func(s *Service) { s.Ports[0].TargetPort = 70000 }, "out of range"},
		{"port listed twice", func(s *Service) { s.Ports = append(s.Ports, Port{Name: "http2", Port: 14001}) }, "listed twice"},
		{"bad port name", func(s *Service) { s.Ports[0].Name = "h\x1bttp" }, `"h\x1bttp"`},
		{"bad zone", func(s *Service) { s.Endpoints[0].Locality.Zone = "zone a" }, "locality"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := goodRemote()
			s.Identities = append([]Identity(nil), s.Identities...)
			s.Endpoints = append([]Endpoint(nil), s.Endpoints...)
			s.Ports = append([]Port(nil), s.Ports...)
			tc.change(&s)
			err := s.ValidateRemote("west", "cluster.local")
			if !errors.Is(err, ErrRemoteService) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrRemoteService naming %q", err, tc.want)
			}
			if strings.ContainsAny(err.Error(), "\n\x1b") {
				t.Fatalf("error carries raw control bytes: %q", err)
			}
		})
	}
}

func TestValidateRemoteListsAFewProblemsAndCountsTheRest(t *testing.T) {
	s := goodRemote()
	s.Endpoints = nil
	for i := range 100000 {
		s.Endpoints = append(s.Endpoints, Endpoint{Address: "bad-" + strconv.Itoa(i), Cluster: "west"})
	}
	err := s.ValidateRemote("west", "cluster.local")
	if err == nil || !strings.Contains(err.Error(), "and 99990 more problems") {
		t.Fatalf("got %.300v", err)
	}
	if len(err.Error()) > 4096 {
		t.Fatalf("error is %d bytes long", len(err.Error()))
	}
}

// FuzzValidateRemote feeds arbitrary names and addresses through
// ValidateRemote: it must not panic, its message must not carry raw
// control bytes, and whatever it accepts must be a DNS name and an IP.
func FuzzValidateRemote(f *testing.F) {
	f.Add("bookstore", "bookstore-v2", "west", "10.244.2.5", "spiffe://cluster.local/ns/bookstore/sa/x", "z1", uint32(14001))
	f.Add("book\nstore", "evil\nname", "west", "not-an-ip.example.com", "spiffe://evil/ns/a/sa/b", "z 1", uint32(0))
	f.Add("a", "b", "east", "::ffff:1.2.3.4", "", "", uint32(70000))
	f.Fuzz(func(t *testing.T, ns, name, cluster, addr, id, zone string, port uint32) {
		s := Service{Namespace: ns, Name: name, Cluster: cluster, Ports: []Port{{Name: "p", Port: port}},
			Endpoints: []Endpoint{{Address: addr, Cluster: cluster, Identity: Identity(id), Locality: Locality{Zone: zone}}}}
		err := s.ValidateRemote("west", "cluster.local")
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r\x1b\x00") {
				t.Fatalf("message carries raw control bytes: %q", err)
			}
			return
		}
		if !IsDNS1123Label(ns) || !IsDNS1035Label(name) || cluster != "west" || checkRemoteAddress(addr) != nil {
			t.Fatalf("accepted %q/%q of %q at %q", ns, name, cluster, addr)
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted remotely but not locally: %v", err)
		}
	})
}

// Another network's service, as clients here reach it: the gateway
// addresses stand for its ready workloads, every port targets the
// gateway's port, and its identities stay those of its workloads.
func TestThroughGateways(t *testing.T) {
	id := NewIdentity("cluster.local", "bookstore", "bookstore")
	svc := Service{Namespace: "bookstore", Name: "bookstore", Cluster: "west",
		Ports: []Port{{Name: "grpc", Port: 14001}, {Name: "metrics", Port: 9090}}}
	for i, ready := range []bool{true, true, true, false, true} {
		svc.Endpoints = append(svc.Endpoints, Endpoint{Address: "10.1.0." + strconv.Itoa(i+1), Cluster: "west", Network: "net-west", Ready: ready, Identity: id})
	}
	gws := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.10:15443"), netip.MustParseAddrPort("192.0.2.11:15443")}

	got := ThroughGateways(svc, gws)
	if len(got.Endpoints) != 2 {
		t.Fatalf("%d endpoints, want one per gateway", len(got.Endpoints))
	}
	var stands uint32
	for i, e := range got.Endpoints {
		if e.Address != gws[i].Addr().String() || !e.Ready || e.Cluster != "west" || e.Network != "net-west" {
			t.Errorf("endpoint %d: %+v", i, e)
		}
		for _, p := range svc.Ports {
			if tp := e.TargetPort(p); tp != 15443 {
				t.Errorf("endpoint %d port %s: target %d, want the gateway's 15443", i, p.Name, tp)
			}
		}
		stands += e.Weight()
	}
	if stands != 4 {
		t.Errorf("the gateways stand for %d workloads, want the 4 ready ones", stands)
	}
	if len(got.Identities) != 1 || got.Identities[0] != id {
		t.Errorf("identities %v, want the workloads' %s", got.Identities, id)
	}
	if len(svc.Endpoints) != 5 || svc.Endpoints[0].Address != "10.1.0.1" {
		t.Error("ThroughGateways changed its argument's endpoints")
	}

	for i := range svc.Endpoints {
		svc.Endpoints[i].Ready = false
	}
	for _, e := range ThroughGateways(svc, gws).Endpoints {
		if e.Ready || e.Weight() != 0 {
			t.Errorf("no ready workload, yet gateway endpoint %+v takes traffic", e)
		}
	}
	if eps := ThroughGateways(svc, nil).Endpoints; len(eps) != 0 {
		t.Errorf("no gateway: endpoints %v, want none", eps)
	}
}

func TestCheckGatewayAddress(t *testing.T) {
	for addr, ok := range map[string]bool{
		"192.0.2.10:15443": true, "[2001:db8::1]:15443": true,
		"192.0.2.10": false, "192.0.2.10:0": false, "127.0.0.1:15443": false, "0.0.0.0:15443": false,
		"gateway.example:15443": false, "[::ffff:192.0.2.1]:15443": false, "192.0.2.10:15443\n": false,
	} {
		if err := CheckGatewayAddress(addr); (err == nil) != ok {
			t.Errorf("%q: %v, want ok=%v", addr, err, ok)
		}
	}
}
