package federate

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
)

func remote(cluster string, at time.Time, es catalog.ExportedService) exporter {
	return exporter{Cluster: cluster, Service: es, At: at}
}

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
				remote("west", t0, exported("b", t0, grpcPort(14001))),
				remote("east", t0.Add(time.Minute), exported("b", t0, grpcPort(14001))),
			},
			wantAccepted: []string{"west", "east"}, wantPorts: []uint16{14001},
		},
		{
			name: "same port name, other number: the younger export is rejected",
			exporters: []exporter{
				remote("east", t0.Add(time.Minute), exported("b", t0, grpcPort(15000))),
				remote("west", t0, exported("b", t0, grpcPort(14001))),
			},
			wantAccepted: []string{"west"}, wantRejected: map[string]string{"east": "PortConflict"}, wantPorts: []uint16{14001},
		},
		{
			name: "same port number under another name: rejected",
			exporters: []exporter{
				remote("west", t0, exported("b", t0, grpcPort(14001))),
				remote("east", t0.Add(time.Minute), exported("b", t0, catalog.Port{Name: "web", Port: 14001, Protocol: "http"})),
			},
			wantAccepted: []string{"west"}, wantRejected: map[string]string{"east": "PortConflict"}, wantPorts: []uint16{14001},
		},
		{
			name: "disjoint ports: union",
			exporters: []exporter{
				remote("west", t0, exported("b", t0, grpcPort(14001))),
				remote("east", t0.Add(time.Minute), exported("b", t0, catalog.Port{Name: "metrics", Port: 9090, Protocol: "http"})),
			},
			wantAccepted: []string{"west", "east"}, wantPorts: []uint16{9090, 14001},
		},
		{
			name: "same time: the smaller cluster name wins",
			exporters: []exporter{
				remote("west", t0, exported("b", t0, grpcPort(14001))),
				remote("east", t0, exported("b", t0, grpcPort(15000))),
			},
			wantAccepted: []string{"east"}, wantRejected: map[string]string{"west": "PortConflict"}, wantPorts: []uint16{15000},
		},
		{
			name: "unknown time counts as newest",
			exporters: []exporter{
				remote("east", time.Time{}, exported("b", t0, grpcPort(15000))),
				remote("west", t0, exported("b", t0, grpcPort(14001))),
			},
			wantAccepted: []string{"west"}, wantRejected: map[string]string{"east": "PortConflict"}, wantPorts: []uint16{14001},
		},
		{
			name: "the local export takes precedence over an older remote one",
			exporters: []exporter{
				remote("west", t0, exported("b", t0, grpcPort(14001))),
				localExporter("zeta", exported("b", t0.Add(time.Hour), grpcPort(15000))),
			},
			wantAccepted: []string{"zeta"}, wantRejected: map[string]string{"west": "PortConflict"}, wantPorts: []uint16{15000},
		},
		{
			name: "headless after ClusterSetIP: type conflict",
			exporters: []exporter{
				remote("west", t0, exported("b", t0, grpcPort(14001))),
				remote("east", t0.Add(time.Minute), func() catalog.ExportedService {
					s := exported("b", t0, grpcPort(14001))
					s.Headless = true
					return s
				}()),
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

// held is a remote view in which each cluster holds a catalog with the
// given services (all routable).
func held(services map[string][]catalog.ExportedService) *federation.RemoteView {
	rv := &federation.RemoteView{Clusters: map[string]federation.ClusterView{}}
	for c, ss := range services {
		rv.Clusters[c] = federation.ClusterView{Catalog: &catalog.Catalog{Cluster: c, Version: 1, Services: ss}, Services: ss}
	}
	return rv
}

func TestRemoteExportTimeIsBoundedByFirstSeen(t *testing.T) {
	epoch := time.Unix(0, 0).UTC()
	honest := exported("bookstore", t0, grpcPort(14001))
	backdated := exported("bookstore", epoch, grpcPort(9999))
	seen := newFirstSeen()

	seen.observe(held(map[string][]catalog.ExportedService{"west": {honest}}), t0.Add(time.Minute), nil)
	rv := held(map[string][]catalog.ExportedService{"west": {honest}, "evil": {backdated}})
	seen.observe(rv, t0.Add(time.Hour), nil)
	if got := seen.bound("evil", backdated); !got.Equal(t0.Add(time.Hour)) {
		t.Errorf("a claim of 1970 counts from %v, want when first seen (%v)", got, t0.Add(time.Hour))
	}
	if got := seen.bound("west", honest); !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("west's export counts from %v, want when first seen (%v)", got, t0.Add(time.Minute))
	}

	v := computeView("east", nil, rv, seen)
	if len(v.imports) != 1 || !reflect.DeepEqual(v.imports[0].Clusters, []string{"west"}) || v.imports[0].Ports[0].Port != 14001 {
		t.Fatalf("imports %+v: want bookstore from west only, port 14001 (the backdated newcomer loses)", v.imports)
	}
	if _, ok := findServiceIn(v.remote.Remote["evil"].Services, "bookstore"); ok {
		t.Error("the backdated export is routed to")
	}
	if len(v.leftOut) != 1 || v.leftOut[0].Cluster != "evil" || len(v.conflicts) != 0 {
		t.Errorf("left out %+v, conflicts %+v: want evil's export left out, no local conflict", v.leftOut, v.conflicts)
	}

	// A claimed time later than first seen counts as claimed.
	future := exported("bookstore", t0.Add(48*time.Hour), grpcPort(9999))
	if got := seen.bound("evil", future); !got.Equal(future.ExportedAt) {
		t.Errorf("a later claim counts from %v, want %v", got, future.ExportedAt)
	}

	// Withdrawn and exported again: counts from its return.
	seen.observe(held(map[string][]catalog.ExportedService{"west": {}, "evil": {backdated}}), t0.Add(2*time.Hour), nil)
	seen.observe(held(map[string][]catalog.ExportedService{"west": {honest}, "evil": {backdated}}), t0.Add(3*time.Hour), nil)
	if got := seen.bound("west", honest); !got.Equal(t0.Add(3 * time.Hour)) {
		t.Errorf("west's re-export counts from %v, want its return (%v)", got, t0.Add(3*time.Hour))
	}
	// A cluster that is gone is forgotten.
	seen.observe(held(map[string][]catalog.ExportedService{"west": {honest}}), t0.Add(4*time.Hour), nil)
	if _, ok := seen.at["evil"]; ok {
		t.Error("a cluster no longer held is still remembered")
	}
}

func TestRestartKeepsThePrecedenceOfWhatWasImported(t *testing.T) {
	honest := exported("bookstore", t0, grpcPort(14001))
	backdated := exported("bookstore", time.Unix(0, 0).UTC(), grpcPort(9999))
	// After a restart, both catalogs are first seen at once; the
	// ServiceImport written before the restart lists west.
	prior := func(cluster, key string) (time.Time, bool) {
		return t0.Add(-time.Hour), cluster == "west" && key == "bookstore/bookstore"
	}
	seen := newFirstSeen()
	rv := held(map[string][]catalog.ExportedService{"west": {honest}, "evil": {backdated}})
	seen.observe(rv, t0.Add(time.Hour), prior)
	if got := seen.bound("west", honest); !got.Equal(t0) {
		t.Errorf("west's imported export counts from %v, want its claim (%v), later than the ServiceImport's creation", got, t0)
	}
	v := computeView("east", nil, rv, seen)
	if len(v.imports) != 1 || !reflect.DeepEqual(v.imports[0].Clusters, []string{"west"}) {
		t.Fatalf("imports %+v: want west's only (evil sorts first, but west was imported before the restart)", v.imports)
	}
	// A prior time after now is no earlier than now: it gains nothing.
	seen = newFirstSeen()
	seen.observe(rv, t0, func(string, string) (time.Time, bool) { return t0.Add(time.Hour), true })
	if got := seen.bound("west", honest); !got.Equal(t0) {
		t.Errorf("a future prior time counts as %v, want now (%v)", got, t0)
	}
}

func TestConflictMessageEscapesRemoteNames(t *testing.T) {
	evil := exported("bookstore", t0, catalog.Port{Name: "grpc", Port: 9999, Protocol: "grpc\n\x1b[31mok"})
	res := resolve([]exporter{
		localExporter("east", exported("bookstore", t0, grpcPort(14001))),
		remote("evil\nname", t0, evil),
	})
	v := view{conflicts: map[string]conflict{}}
	v.noteConflicts("bookstore/bookstore", res)
	c, ok := v.conflicts["bookstore/bookstore"]
	if !ok {
		t.Fatalf("no conflict reported: %+v", res)
	}
	if strings.ContainsAny(c.Message, "\n\x1b") || !strings.Contains(c.Message, `cluster "evil\nname"`) {
		t.Errorf("message %q: want the remote names escaped", c.Message)
	}
}

func TestConflictMessageIsBounded(t *testing.T) {
	exporters := []exporter{localExporter("east", exported("bookstore", t0, grpcPort(14001)))}
	for _, c := range []string{"a", "b", "c", "d", "e"} {
		exporters = append(exporters, remote(c, t0, exported("bookstore", t0, catalog.Port{Name: "grpc", Port: 9999, Protocol: strings.Repeat("x", 500)})))
	}
	v := view{conflicts: map[string]conflict{}}
	v.noteConflicts("bookstore/bookstore", resolve(exporters))
	c := v.conflicts["bookstore/bookstore"]
	if len(c.Message) > maxConflictMessage || !strings.Contains(c.Message, `cluster "a"`) {
		t.Errorf("message of %d bytes %q: want at most %d, naming the first conflicting cluster", len(c.Message), c.Message, maxConflictMessage)
	}
	if len(v.leftOut) != 5 {
		t.Errorf("left out %d exports, want 5", len(v.leftOut))
	}
}

func findServiceIn(ss []mesh.Service, name string) (mesh.Service, bool) {
	for _, s := range ss {
		if s.Name == name {
			return s, true
		}
	}
	return mesh.Service{}, false
}

// FuzzConflictResolution feeds conflict resolution with a remote export
// of arbitrary names, ports and claimed time, next to a local export and
// an honest remote one seen earlier. Whatever the remote claims, the local
// export is accepted first, the honest remote export is never displaced by
// it, and the condition message is bounded and escaped.
func FuzzConflictResolution(f *testing.F) {
	f.Add("evil", "grpc", "grpc", uint16(9999), int64(0), false)
	f.Add("evil\nname", "grpc\x1b[31m", "h\u00e9ttp", uint16(14001), int64(-1<<62), true)
	f.Add("a", "", "", uint16(0), int64(1<<62), false)
	f.Fuzz(func(t *testing.T, cluster, portName, proto string, port uint16, claimed int64, headless bool) {
		if cluster == "" || cluster == "east" || cluster == "west" {
			return
		}
		attack := exported("bookstore", time.Unix(claimed, 0).UTC(), catalog.Port{Name: portName, Port: port, Protocol: proto})
		attack.Headless = headless
		honest := exported("bookstore", t0, grpcPort(14001))
		seen := newFirstSeen()
		seen.observe(held(map[string][]catalog.ExportedService{"west": {honest}}), t0, nil)
		rv := held(map[string][]catalog.ExportedService{"west": {honest}, cluster: {attack}})
		seen.observe(rv, t0.Add(time.Second), nil)
		if at := seen.bound(cluster, attack); at.Before(t0.Add(time.Second)) {
			t.Fatalf("claim %v counts from %v, before it was first seen", attack.ExportedAt, at)
		}

		local := exported("bookstore", t0.Add(time.Hour), grpcPort(15000))
		for _, exports := range []map[string]catalog.ExportedService{nil, {"bookstore/bookstore": local}} {
			v := computeView("east", exports, rv, seen)
			if exports != nil && (len(v.published) != 1 || v.published[0].Ports[0].Port != 15000) {
				t.Fatalf("published %+v: the local export was evicted", v.published)
			}
			if exports == nil {
				if len(v.imports) != 1 || !slices.Contains(v.imports[0].Clusters, "west") {
					t.Fatalf("imports %+v: west's export, seen first, was displaced", v.imports)
				}
			}
			for _, c := range v.conflicts {
				if len(c.Message) > maxConflictMessage || !utf8.ValidString(c.Message) || strings.ContainsFunc(c.Message, unicode.IsControl) {
					t.Fatalf("condition message %q: unbounded or unescaped", c.Message)
				}
			}
		}
	})
}
