package federate

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func exported(name string, at time.Time, ports ...catalog.Port) catalog.ExportedService {
	return catalog.ExportedService{Namespace: "bookstore", Name: name, ExportedAt: at, Ports: ports}
}

func grpcPort(n uint16) catalog.Port { return catalog.Port{Name: "grpc", Port: n, Protocol: "grpc"} }

func TestViewLabelsRemoteEndpointsAndLeavesOutLosers(t *testing.T) {
	westSvc := exported("bookstore-v2", t0, grpcPort(14001))
	westSvc.Ports[0].TargetPort = 8080
	westSvc.Endpoints = []catalog.Endpoint{{Address: "10.244.2.7", Ready: true, Zone: "west-a", Identity: "spiffe://meshfed.local/ns/bookstore/sa/bookstore-v2"}}
	westV3 := exported("bookstore-v3", t0, grpcPort(14001)) // older than east's, but remote
	rv := &federation.RemoteView{Clusters: map[string]federation.ClusterView{
		"west": {
			Catalog:  &catalog.Catalog{Cluster: "west", Network: "flat", Version: 7, Services: []catalog.ExportedService{westSvc, westV3}},
			Services: []catalog.ExportedService{westSvc, westV3},
		},
		"north": { // everything withdrawn by the failure policy
			Catalog:   &catalog.Catalog{Cluster: "north", Network: "flat", Version: 3, Services: []catalog.ExportedService{exported("gone", t0)}},
			Withdrawn: []string{"bookstore/gone"},
		},
	}}
	local := map[string]catalog.ExportedService{
		"bookstore/bookstore-v3": exported("bookstore-v3", t0.Add(time.Hour), grpcPort(15000)), // conflicts, stays
		"bookstore/bookstore-v1": exported("bookstore-v1", t0, grpcPort(14001)),
	}
	seen := newFirstSeen()
	seen.observe(rv, t0, nil)
	v := computeView("east", local, rv, seen)

	if len(v.published) != 2 || v.published[0].Name != "bookstore-v1" || v.published[1].Name != "bookstore-v3" {
		t.Fatalf("published %+v, want bookstore-v1 and bookstore-v3 (a remote export never evicts a local one)", v.published)
	}
	if c, ok := v.conflicts["bookstore/bookstore-v3"]; !ok || c.Reason != "PortConflict" || !strings.Contains(c.Message, `cluster "west"`) {
		t.Fatalf("conflicts %+v, want bookstore/bookstore-v3 PortConflict naming west", v.conflicts)
	}
	if len(v.leftOut) != 1 || v.leftOut[0].Cluster != "west" || v.leftOut[0].Key != "bookstore/bookstore-v3" {
		t.Fatalf("left out %+v, want west's bookstore/bookstore-v3", v.leftOut)
	}
	want := mesh.Service{
		Namespace: "bookstore", Name: "bookstore-v2", Cluster: "west",
		Ports:      []mesh.Port{{Name: "grpc", Port: 14001, TargetPort: 8080, Protocol: mesh.ProtocolGRPC}},
		Identities: []mesh.Identity{"spiffe://meshfed.local/ns/bookstore/sa/bookstore-v2"},
		Endpoints: []mesh.Endpoint{{
			Address: "10.244.2.7", Cluster: "west", Network: "flat", Locality: mesh.Locality{Zone: "west-a"},
			Ready: true, Identity: "spiffe://meshfed.local/ns/bookstore/sa/bookstore-v2",
		}},
	}
	if got := v.remote.Remote["west"]; got.Version != 7 || got.Network != "flat" || len(got.Services) != 1 || !reflect.DeepEqual(got.Services[0], want) {
		t.Fatalf("remote west = %+v\nwant one service %+v", got, want)
	}
	// A withdrawn service stays in the view without endpoints (a split that
	// names it keeps its cluster at weight 0) and is not imported.
	if got := v.remote.Remote["north"]; len(got.Services) != 1 || got.Services[0].Name != "gone" || len(got.Services[0].Endpoints) != 0 {
		t.Fatalf("north's withdrawn services in the view: %+v; want gone, without endpoints", got.Services)
	}
	var names []string
	for _, imp := range v.imports {
		names = append(names, imp.Name+"@"+imp.Clusters[0])
	}
	if !reflect.DeepEqual(names, []string{"bookstore-v1@east", "bookstore-v2@west", "bookstore-v3@east"}) {
		t.Fatalf("imports %v", names)
	}
}

func TestFailStaticAnnotation(t *testing.T) {
	for _, tc := range []struct {
		annotations map[string]string
		want        string // "nil", "true", "false" or "error"
	}{
		{nil, "nil"},
		{map[string]string{AnnotationFailStatic: "true"}, "true"},
		{map[string]string{AnnotationFailStatic: " false "}, "false"},
		{map[string]string{AnnotationFailStatic: "sometimes"}, "error"},
	} {
		got, err := failStaticOverride(tc.annotations)
		var s string
		switch {
		case err != nil:
			s = "error"
		case got == nil:
			s = "nil"
		default:
			s = strconv.FormatBool(*got)
		}
		if s != tc.want {
			t.Errorf("%v: got %s (err %v), want %s", tc.annotations, s, err, tc.want)
		}
	}
}
