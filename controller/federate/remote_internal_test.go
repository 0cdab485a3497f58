package federate

import (
	"reflect"
	"strconv"
	"testing"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/catalog"
)

func TestCheckCatalogSkipsOnlyBadServices(t *testing.T) {
	good := func(name string) catalog.ExportedService {
		return catalog.ExportedService{Namespace: "bookstore", Name: name, Ports: []catalog.Port{{Name: "http", Port: 14001}},
			Endpoints: []catalog.Endpoint{{Address: "10.244.3.5", Ready: true, Identity: "spiffe://meshfed.local/ns/bookstore/sa/" + name}}}
	}
	bad := good("evil\nname")
	loopback := good("bookstore-v4")
	loopback.Endpoints[0].Address = "127.0.0.1"
	cat := &catalog.Catalog{Cluster: "west", Network: "flat", Version: 4, Services: []catalog.ExportedService{
		good("bookstore-v2"), bad, good("twice"), good("twice"), loopback, good("bookstore-v3"),
	}}
	cc := checkCatalog("west", "meshfed.local", cat)
	want := map[string]bool{"bookstore/evil\nname": true, "bookstore/twice": true, "bookstore/bookstore-v4": true}
	if !reflect.DeepEqual(cc.skip, want) || cc.count != 4 || len(cc.problems) != 4 {
		t.Fatalf("skipped %v (%d, %d problems), want %v", cc.skip, cc.count, len(cc.problems), want)
	}
	cv := federation.ClusterView{Catalog: cat, Services: cat.Services[:4], Withdrawn: []string{"bookstore/bookstore-v4", "bookstore/bookstore-v3"}}
	got := withoutSkipped(cv, cc.skip)
	keys := func(ss []catalog.ExportedService) (out []string) {
		for _, s := range ss {
			out = append(out, s.Key())
		}
		return out
	}
	if k := keys(got.Catalog.Services); !reflect.DeepEqual(k, []string{"bookstore/bookstore-v2", "bookstore/bookstore-v3"}) {
		t.Errorf("catalog keeps %q", k)
	}
	if k := keys(got.Services); !reflect.DeepEqual(k, []string{"bookstore/bookstore-v2"}) {
		t.Errorf("routable services %q", k)
	}
	if !reflect.DeepEqual(got.Withdrawn, []string{"bookstore/bookstore-v3"}) {
		t.Errorf("withdrawn %q", got.Withdrawn)
	}
	if len(cat.Services) != 6 {
		t.Error("the shared catalog was changed")
	}
	badNet := *cat
	badNet.Network = "flat\x1b[2J"
	if cc := checkCatalog("west", "meshfed.local", &badNet); cc.count != 6 {
		t.Errorf("a catalog with network %q kept %d services", badNet.Network, 6-cc.count)
	}
}

// BenchmarkCheckCatalog10k checks a 10,000-service catalog (ten endpoints
// each), as the bridge does once per new catalog version.
func BenchmarkCheckCatalog10k(b *testing.B) {
	cat := &catalog.Catalog{Cluster: "west", Network: "flat", Version: 1}
	for i := range 10000 {
		ns := "team-" + strconv.Itoa(i%200)
		name := "svc-" + strconv.Itoa(i)
		es := catalog.ExportedService{Namespace: ns, Name: name, Ports: []catalog.Port{{Name: "http", Port: 8080}, {Name: "grpc", Port: 9090, Protocol: "grpc"}}}
		for j := range 10 {
			es.Endpoints = append(es.Endpoints, catalog.Endpoint{Address: "10." + strconv.Itoa(i/250%240) + "." + strconv.Itoa(i%250) + "." + strconv.Itoa(j+1),
				Ready: true, Zone: "zone-" + strconv.Itoa(j%3), Identity: "spiffe://meshfed.local/ns/" + ns + "/sa/" + name})
		}
		cat.Services = append(cat.Services, es)
	}
	b.ReportAllocs()
	for b.Loop() {
		if cc := checkCatalog("west", "meshfed.local", cat); cc.count != 0 {
			b.Fatal(cc.problems[0])
		}
	}
}
