package federate_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
)

// epoch is the export time a malicious member claims: 1970.
var epoch = time.Unix(0, 0).UTC()

// backdated is an export of ns/name by a malicious member: a conflicting
// port and an export time of 1970.
func backdated(ns, name string) catalog.ExportedService {
	return catalog.ExportedService{
		Namespace: ns, Name: name, ExportedAt: epoch,
		Ports:     []catalog.Port{{Name: "grpc", Port: 9999, Protocol: "grpc"}},
		Endpoints: []catalog.Endpoint{{Address: "10.244.66.6", Ready: true, Zone: "evil-a", Identity: "spiffe://" + trustDomain + "/ns/" + ns + "/sa/" + name}},
	}
}

// A federation member (holding the gossip key and its own cluster's
// intermediate, as any member does) exports bookstore/bookstore with a
// conflicting port and claims it did so in 1970. East, a real cluster
// (API server, controllers, federation member, bridge) that owns
// bookstore/bookstore, keeps its export and its clusterset service,
// reports the conflict on its ServiceExport, and leaves the attacker's
// export out. Between two remote exporters, the backdated newcomer does
// not overtake the one east saw first.
func TestBackdatedExportCannotEvictLocalExport(t *testing.T) {
	sb := sandboxtest.Start(t, "east")
	root, gossipKey := newFederationKeys(t)
	east := startMember(t, sb.Cluster("east"), root, gossipKey)
	evil := startBareMember(t, "evil", root, gossipKey, east.fed.Addr())
	eventually(t, time.Minute, func() (bool, string) {
		return len(east.fed.Members()) == 2, "east and evil do not see each other"
	})

	t.Run("LocalExportStaysAndReportsTheConflict", func(t *testing.T) { testBackdatedAgainstLocal(t, east, evil) })
	t.Run("BackdatedNewcomerDoesNotOvertakeEarlierRemote", func(t *testing.T) {
		west := startBareMember(t, "west", root, gossipKey, east.fed.Addr())
		testBackdatedAgainstRemote(t, east, evil, west)
	})
}

func testBackdatedAgainstLocal(t *testing.T, east *member, evil *federation.Federation) {
	ctx := testContext(t)
	deployService(t, east, "bookstore", "bookstore", 14001)
	export(t, east, "bookstore", "bookstore")
	eventually(t, time.Minute, func() (bool, string) {
		clusters, ports, _, ok := serviceImport(t, east, "bookstore", "bookstore")
		s, _, _ := condition(t, east, "bookstore", "bookstore", "Conflict")
		return ok && reflect.DeepEqual(clusters, []string{"east"}) && reflect.DeepEqual(ports, []int64{14001}) && s == "False",
			fmt.Sprintf("east's own export: ServiceImport present=%v clusters=%v ports=%v, Conflict=%q", ok, clusters, ports, s)
	})

	// The attack.
	version, err := evil.Publish(ctx, []catalog.ExportedService{backdated("bookstore", "bookstore")})
	if err != nil {
		t.Fatal(err)
	}
	waitBridgeHolds(t, east, "evil", version)

	eventually(t, time.Minute, func() (bool, string) {
		s, r, msg := condition(t, east, "bookstore", "bookstore", "Conflict")
		return s == "True" && r == "PortConflict" && strings.Contains(msg, `cluster "evil"`),
			fmt.Sprintf("east's Conflict condition: %s/%s %q", s, r, msg)
	})
	if s, r, _ := condition(t, east, "bookstore", "bookstore", "Ready"); s != "True" || r != "Exported" {
		t.Errorf("east's ServiceExport Ready=%s/%s, want True/Exported: the owner's export was evicted", s, r)
	}
	// The clusterset service is east's alone, on east's port.
	clusters, ports, _, ok := serviceImport(t, east, "bookstore", "bookstore")
	if !ok || !reflect.DeepEqual(clusters, []string{"east"}) || !reflect.DeepEqual(ports, []int64{14001}) {
		t.Errorf("east's ServiceImport: present=%v clusters=%v ports=%v, want east's only, port 14001", ok, clusters, ports)
	}
	rs := east.bridge.Remote()
	if !slices.ContainsFunc(rs.Imports, func(i mesh.Import) bool {
		return i.Namespace == "bookstore" && i.Name == "bookstore" && reflect.DeepEqual(i.Clusters, []string{"east"}) &&
			len(i.Ports) == 1 && i.Ports[0].Port == 14001
	}) {
		t.Errorf("east's imports %+v: want bookstore/bookstore from east only, port 14001", rs.Imports)
	}
	if _, ok := findService(rs.Remote["evil"], "bookstore", "bookstore"); ok {
		t.Error("east routes to the attacker's export")
	}
	// East still publishes its export to the federation.
	eventually(t, time.Minute, func() (bool, string) {
		cv := evil.Snapshot().Clusters["east"]
		return slices.ContainsFunc(cv.Services, func(es catalog.ExportedService) bool {
			return es.Key() == "bookstore/bookstore" && len(es.Ports) == 1 && es.Ports[0].Port == 14001
		}), fmt.Sprintf("east's catalog as the federation sees it: %+v", cv.Services)
	})
	waitEvent(t, east, "bookstore", "bookstore", federate.ReasonExportConflict, corev1.EventTypeWarning)
	waitLeftOutLogged(t, east, "evil", "bookstore/bookstore")

	// The attacker withdraws: the condition flips back, and an Event says so.
	if _, err := evil.Publish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, func() (bool, string) {
		s, r, msg := condition(t, east, "bookstore", "bookstore", "Conflict")
		return s == "False" && r == "NoConflicts", fmt.Sprintf("east's Conflict condition after evil withdrew: %s/%s %q", s, r, msg)
	})
	waitEvent(t, east, "bookstore", "bookstore", federate.ReasonExportProblemGone, corev1.EventTypeNormal)
}

func testBackdatedAgainstRemote(t *testing.T, east *member, evil, west *federation.Federation) {
	ctx := testContext(t)
	honest := catalog.ExportedService{
		Namespace: "bookstore", Name: "bookstore-v2", ExportedAt: time.Now().UTC(),
		Ports:     []catalog.Port{{Name: "grpc", Port: 14001, Protocol: "grpc"}},
		Endpoints: []catalog.Endpoint{{Address: "10.244.7.7", Ready: true, Zone: "west-a", Identity: "spiffe://" + trustDomain + "/ns/bookstore/sa/bookstore-v2"}},
	}
	version, err := west.Publish(ctx, []catalog.ExportedService{honest})
	if err != nil {
		t.Fatal(err)
	}
	waitBridgeHolds(t, east, "west", version)
	eventually(t, time.Minute, func() (bool, string) {
		clusters, _, _, ok := serviceImport(t, east, "bookstore", "bookstore-v2")
		return ok && reflect.DeepEqual(clusters, []string{"west"}), fmt.Sprintf("east's ServiceImport bookstore-v2: present=%v clusters=%v", ok, clusters)
	})

	// The attack: a newcomer claims 1970.
	version, err = evil.Publish(ctx, []catalog.ExportedService{backdated("bookstore", "bookstore-v2")})
	if err != nil {
		t.Fatal(err)
	}
	waitBridgeHolds(t, east, "evil", version)
	waitLeftOutLogged(t, east, "evil", "bookstore/bookstore-v2")

	clusters, ports, _, ok := serviceImport(t, east, "bookstore", "bookstore-v2")
	if !ok || !reflect.DeepEqual(clusters, []string{"west"}) || !reflect.DeepEqual(ports, []int64{14001}) {
		t.Errorf("east's ServiceImport bookstore-v2: present=%v clusters=%v ports=%v, want west's only, port 14001", ok, clusters, ports)
	}
	rs := east.bridge.Remote()
	if svc, ok := findService(rs.Remote["west"], "bookstore", "bookstore-v2"); !ok || len(svc.Endpoints) != 1 {
		t.Errorf("east's view of west's bookstore-v2: present=%v %+v, want its endpoint", ok, svc)
	}
	if _, ok := findService(rs.Remote["evil"], "bookstore", "bookstore-v2"); ok {
		t.Error("east routes to the backdated newcomer's export")
	}

	// East's controller restarts: it sees both catalogs at once, and
	// "evil" sorts before "west". West was imported before the restart
	// (its ServiceImport says so), so it keeps precedence.
	east.restartBridge(t)
	waitBridgeHolds(t, east, "evil", version)
	waitLeftOutLogged(t, east, "evil", "bookstore/bookstore-v2")
	clusters, ports, _, ok = serviceImport(t, east, "bookstore", "bookstore-v2")
	if !ok || !reflect.DeepEqual(clusters, []string{"west"}) || !reflect.DeepEqual(ports, []int64{14001}) {
		t.Errorf("after a restart, east's ServiceImport bookstore-v2: present=%v clusters=%v ports=%v, want west's only, port 14001", ok, clusters, ports)
	}
	if _, ok := findService(east.bridge.Remote().Remote["evil"], "bookstore", "bookstore-v2"); ok {
		t.Error("after a restart, east routes to the backdated newcomer's export")
	}
}

// waitBridgeHolds waits until m's bridge has reconciled cluster's catalog
// of the given version (or a later one).
func waitBridgeHolds(t *testing.T, m *member, cluster string, version uint64) {
	t.Helper()
	eventually(t, time.Minute, func() (bool, string) {
		got := m.bridge.Remote().Remote[cluster].Version
		return got >= version, fmt.Sprintf("%s's bridge holds %s's catalog v%d, want v%d", m.name, cluster, got, version)
	})
}

// waitEvent waits for an Event of the given reason and type on
// ServiceExport ns/name.
func waitEvent(t *testing.T, m *member, ns, name, reason, typ string) {
	t.Helper()
	eventually(t, time.Minute, func() (bool, string) {
		evs, err := m.kube.CoreV1().Events(ns).List(testContext(t), metav1.ListOptions{
			FieldSelector: fields.Set{"involvedObject.kind": "ServiceExport", "involvedObject.name": name, "reason": reason}.String(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(evs.Items, func(e corev1.Event) bool { return e.Type == typ }),
			fmt.Sprintf("no %s Event %s on ServiceExport %s/%s", typ, reason, ns, name)
	})
}

// waitLeftOutLogged waits until m's bridge has logged that cluster's
// export of key is left out, with both names quoted.
func waitLeftOutLogged(t *testing.T, m *member, cluster, key string) {
	t.Helper()
	eventually(t, time.Minute, func() (bool, string) {
		return len(m.logs.find(map[string]string{"cluster": `"` + cluster + `"`, "service": `"` + key + `"`})) > 0,
			fmt.Sprintf("%s did not log that %s's export of %s is left out", m.name, cluster, key)
	})
}
