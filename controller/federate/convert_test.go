package federate

import (
	"reflect"
	"strconv"
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

func TestConflictResolution(t *testing.T) {
	for _, tc := range []struct {
		name         string
		exporters    []exporter
		wantAccepted []string
		wantRejected map[string]string // cluster → reason
		wantPorts    []uint16
	}{
		{
			name: "same ports in two clusters: both accepted",
			exporters: []exporter{
				{"west", exported("b", t0, grpcPort(14001))},
				{"east", exported("b", t0.Add(time.Minute), grpcPort(14001))},
			},
			wantAccepted: []string{"west", "east"}, wantPorts: []uint16{14001},
		},
		{
			name: "same port name, other number: the younger export is rejected",
			exporters: []exporter{
				{"east", exported("b", t0.Add(time.Minute), grpcPort(15000))},
				{"west", exported("b", t0, grpcPort(14001))},
			},
			wantAccepted: []string{"west"}, wantRejected: map[string]string{"east": "PortConflict"}, wantPorts: []uint16{14001},
		},
		{
			name: "same port number under another name: rejected",
			exporters: []exporter{
				{"west", exported("b", t0, grpcPort(14001))},
				{"east", exported("b", t0.Add(time.Minute), catalog.Port{Name: "web", Port: 14001, Protocol: "http"})},
			},
			wantAccepted: []string{"west"}, wantRejected: map[string]string{"east": "PortConflict"}, wantPorts: []uint16{14001},
		},
		{
			name: "disjoint ports: union",
			exporters: []exporter{
				{"west", exported("b", t0, grpcPort(14001))},
				{"east", exported("b", t0.Add(time.Minute), catalog.Port{Name: "metrics", Port: 9090, Protocol: "http"})},
			},
			wantAccepted: []string{"west", "east"}, wantPorts: []uint16{9090, 14001},
		},
		{
			name: "same time: the smaller cluster name wins",
			exporters: []exporter{
				{"west", exported("b", t0, grpcPort(14001))},
				{"east", exported("b", t0, grpcPort(15000))},
			},
			wantAccepted: []string{"east"}, wantRejected: map[string]string{"west": "PortConflict"}, wantPorts: []uint16{15000},
		},
		{
			name: "unknown export time counts as newest",
			exporters: []exporter{
				{"east", exported("b", time.Time{}, grpcPort(15000))},
				{"west", exported("b", t0, grpcPort(14001))},
			},
			wantAccepted: []string{"west"}, wantRejected: map[string]string{"east": "PortConflict"}, wantPorts: []uint16{14001},
		},
		{
			name: "headless after ClusterSetIP: type conflict",
			exporters: []exporter{
				{"west", exported("b", t0, grpcPort(14001))},
				{"east", func() catalog.ExportedService {
					s := exported("b", t0.Add(time.Minute), grpcPort(14001))
					s.Headless = true
					return s
				}()},
			},
			wantAccepted: []string{"west"}, wantRejected: map[string]string{"east": "TypeConflict"}, wantPorts: []uint16{14001},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := resolve(tc.exporters)
			var accepted []string
			for _, e := range res.Accepted {
				accepted = append(accepted, e.Cluster)
			}
			if !reflect.DeepEqual(accepted, tc.wantAccepted) {
				t.Errorf("accepted %v, want %v", accepted, tc.wantAccepted)
			}
			rejected := map[string]string{}
			for c, r := range res.Rejected {
				rejected[c] = r.Reason
				if r.Message == "" {
					t.Errorf("conflict of %s has no message", c)
				}
			}
			if tc.wantRejected == nil {
				tc.wantRejected = map[string]string{}
			}
			if !reflect.DeepEqual(rejected, tc.wantRejected) {
				t.Errorf("rejected %v, want %v", rejected, tc.wantRejected)
			}
			var ports []uint16
			for _, p := range res.Ports {
				ports = append(ports, p.Port)
			}
			if !reflect.DeepEqual(ports, tc.wantPorts) {
				t.Errorf("ports %v, want %v", ports, tc.wantPorts)
			}
		})
	}
}

func TestViewLabelsRemoteEndpointsAndLeavesOutLosers(t *testing.T) {
	westSvc := exported("bookstore-v2", t0, grpcPort(14001))
	westSvc.Ports[0].TargetPort = 8080
	westSvc.Endpoints = []catalog.Endpoint{{Address: "10.244.2.7", Ready: true, Zone: "west-a", Identity: "spiffe://meshfed.local/ns/bookstore/sa/bookstore-v2"}}
	rv := &federation.RemoteView{Clusters: map[string]federation.ClusterView{
		"west": {
			Catalog:  &catalog.Catalog{Cluster: "west", Network: "flat", Version: 7, Services: []catalog.ExportedService{westSvc}},
			Services: []catalog.ExportedService{westSvc},
		},
		"north": { // everything withdrawn by the failure policy
			Catalog:   &catalog.Catalog{Cluster: "north", Network: "flat", Version: 3, Services: []catalog.ExportedService{exported("gone", t0)}},
			Withdrawn: []string{"bookstore/gone"},
		},
	}}
	local := map[string]catalog.ExportedService{
		"bookstore/bookstore-v2": exported("bookstore-v2", t0.Add(time.Hour), grpcPort(15000)), // loses
		"bookstore/bookstore-v1": exported("bookstore-v1", t0, grpcPort(14001)),
	}
	v := computeView("east", local, rv)

	if len(v.published) != 1 || v.published[0].Name != "bookstore-v1" {
		t.Fatalf("published %+v, want only bookstore-v1 (bookstore-v2 conflicts with west's older export)", v.published)
	}
	if c, ok := v.rejected["bookstore/bookstore-v2"]; !ok || c.Reason != "PortConflict" {
		t.Fatalf("rejected %+v, want bookstore/bookstore-v2 PortConflict", v.rejected)
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
	if !reflect.DeepEqual(names, []string{"bookstore-v1@east", "bookstore-v2@west"}) {
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
