package federate_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
	"github.com/meshfed/meshfed/trust/ca"
)

// Two real clusters (API server, controller manager) with a federation
// member and a bridge each, gossiping on 127.0.0.1; a third member runs in
// a child process so that it can be killed.
func TestBridge(t *testing.T) {
	sb := sandboxtest.Start(t, "east", "west")
	root, gossipKey := newFederationKeys(t)
	east := startMember(t, sb.Cluster("east"), root, gossipKey)
	west := startMember(t, sb.Cluster("west"), root, gossipKey, east.fed.Addr())
	eventually(t, time.Minute, func() (bool, string) {
		return len(east.fed.Members()) == 2 && len(west.fed.Members()) == 2, "east and west do not see each other"
	})

	t.Run("ExportInWestAppearsAsServiceImportInEast", func(t *testing.T) { testExportAppears(t, east, west) })
	t.Run("EditedServiceImportIsRestored", func(t *testing.T) { testImportRestored(t, east) })
	t.Run("ExportOfMissingServiceIsReportedAndSkipped", func(t *testing.T) { testMissingService(t, east, west) })
	t.Run("ConflictingPortsEachClusterKeepsItsOwnExport", func(t *testing.T) { testConflict(t, east, west) })
	t.Run("UnexportRemovesServiceImport", func(t *testing.T) { testUnexport(t, east, west) })
	t.Run("LostClusterIsWithdrawnAfterWithdrawAfter", func(t *testing.T) { testLostCluster(t, root, gossipKey, east) })
	t.Run("MembersAreWrittenToMeshConfigStatus", func(t *testing.T) { testStatus(t, east) })
}

func testExportAppears(t *testing.T, east, west *member) {
	deployService(t, west, "bookstore", "bookstore-v2", 14001)
	// The namespace exists in east too (namespace sameness).
	ensureNamespace(t, east, "bookstore")
	export(t, west, "bookstore", "bookstore-v2")

	eventually(t, time.Minute, func() (bool, string) {
		clusters, ports, typ, ok := serviceImport(t, east, "bookstore", "bookstore-v2")
		return ok && reflect.DeepEqual(clusters, []string{"west"}) && reflect.DeepEqual(ports, []int64{14001}) && typ == "ClusterSetIP",
			fmt.Sprintf("east's ServiceImport bookstore/bookstore-v2: present=%v clusters=%v ports=%v type=%q", ok, clusters, ports, typ)
	})
	eventually(t, time.Minute, func() (bool, string) {
		clusters, _, _, ok := serviceImport(t, west, "bookstore", "bookstore-v2")
		return ok && reflect.DeepEqual(clusters, []string{"west"}), fmt.Sprintf("west's own ServiceImport: present=%v clusters=%v", ok, clusters)
	})
	if s, r, _ := condition(t, west, "bookstore", "bookstore-v2", "Valid"); s != "True" || r != "Valid" {
		t.Errorf("west's ServiceExport Valid=%s/%s, want True/Valid", s, r)
	}

	// East's remote view: west's service with its endpoint (once the
	// real EndpointSlice controller has published the Pod), labelled with
	// cluster, network, zone and the Pod's ServiceAccount identity.
	wantID := mesh.NewIdentity(trustDomain, "bookstore", "bookstore-v2")
	eventually(t, time.Minute, func() (bool, string) {
		rs := east.bridge.Remote()
		svc, ok := findService(rs.Remote["west"], "bookstore", "bookstore-v2")
		if !ok || len(svc.Endpoints) != 1 {
			return false, fmt.Sprintf("east's remote view of west: %+v", rs.Remote["west"])
		}
		e := svc.Endpoints[0]
		return e.Cluster == "west" && e.Network == "flat" && e.Identity == wantID && e.Ready && e.Locality.Zone != "" &&
				strings.HasPrefix(e.Address, "10.244.") && svc.Ports[0].Target() == 8080,
			fmt.Sprintf("west's endpoint in east's view: %+v ports %+v", e, svc.Ports)
	})
	rs := east.bridge.Remote()
	if !slices.ContainsFunc(rs.Imports, func(i mesh.Import) bool {
		return i.Namespace == "bookstore" && i.Name == "bookstore-v2" && reflect.DeepEqual(i.Clusters, []string{"west"})
	}) {
		t.Errorf("east's imports %+v lack bookstore/bookstore-v2 from west", rs.Imports)
	}
	if n := histogramCount(t, east, "meshfed_federate_remote_change_to_state_seconds"); n == 0 {
		t.Error("no remote change was timed in east")
	}
	east.bridge.Pushed(rs.Version)
	if n := histogramCount(t, east, "meshfed_federate_remote_change_to_push_seconds"); n == 0 {
		t.Error("Pushed did not time the remote change")
	}
}

// A ServiceImport meshfed wrote and someone else changed is written back
// (the bridge skips the imports it found in sync only while their
// resourceVersion stays).
func testImportRestored(t *testing.T, east *member) {
	si := east.dyn.Resource(federate.ServiceImportGVR).Namespace("bookstore")
	u, err := si.Get(testContext(t), "bookstore-v2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedSlice(u.Object, []any{map[string]any{"name": "grpc", "port": int64(9999), "protocol": "TCP"}}, "spec", "ports"); err != nil {
		t.Fatal(err)
	}
	if _, err := si.Update(testContext(t), u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, func() (bool, string) {
		_, ports, _, ok := serviceImport(t, east, "bookstore", "bookstore-v2")
		return ok && reflect.DeepEqual(ports, []int64{14001}), fmt.Sprintf("east's ServiceImport bookstore/bookstore-v2 ports %v, want [14001] written back", ports)
	})
}

func testMissingService(t *testing.T, east, west *member) {
	export(t, west, "bookstore", "ghost")
	eventually(t, time.Minute, func() (bool, string) {
		s, r, msg := condition(t, west, "bookstore", "ghost", "Valid")
		return s == "False" && r == "NoService", fmt.Sprintf("ghost's Valid condition: %s/%s %q", s, r, msg)
	})
	eventually(t, time.Minute, func() (bool, string) {
		evs, err := west.kube.CoreV1().Events("bookstore").List(testContext(t), metav1.ListOptions{
			FieldSelector: fields.Set{"involvedObject.name": "ghost", "reason": federate.ReasonExportInvalid}.String(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return len(evs.Items) > 0 && evs.Items[0].Type == corev1.EventTypeWarning, "no Warning Event on ServiceExport bookstore/ghost"
	})
	// Once east holds west's latest catalog, ghost is in neither its view
	// nor its ServiceImports, and bookstore-v2 still is.
	waitCaughtUp(t, east, west)
	if _, ok := findService(east.bridge.Remote().Remote["west"], "bookstore", "ghost"); ok {
		t.Error("an export without a service was published")
	}
	if _, _, _, ok := serviceImport(t, east, "bookstore", "ghost"); ok {
		t.Error("east has a ServiceImport for an export without a service")
	}
	if _, ok := findService(east.bridge.Remote().Remote["west"], "bookstore", "bookstore-v2"); !ok {
		t.Error("a bad export cost the good one")
	}
	unexport(t, west, "bookstore", "ghost")
}

func testConflict(t *testing.T, east, west *member) {
	// East exports the same name later, with another port. Each cluster
	// keeps its own export (a remote claim never evicts a local one),
	// reports the conflict on its ServiceExport and leaves the other's
	// export out of its clusterset service.
	deployService(t, east, "bookstore", "bookstore-v2", 15000)
	export(t, east, "bookstore", "bookstore-v2")
	for _, c := range []struct {
		m     *member
		other string
	}{{east, "west"}, {west, "east"}} {
		eventually(t, time.Minute, func() (bool, string) {
			s, r, msg := condition(t, c.m, "bookstore", "bookstore-v2", "Conflict")
			return s == "True" && r == "PortConflict" && strings.Contains(msg, `cluster "`+c.other+`"`),
				fmt.Sprintf("%s's Conflict condition: %s/%s %q", c.m.name, s, r, msg)
		})
		if s, r, _ := condition(t, c.m, "bookstore", "bookstore-v2", "Ready"); s != "True" || r != "Exported" {
			t.Errorf("%s's ServiceExport in conflict: Ready=%s/%s, want True/Exported", c.m.name, s, r)
		}
		waitEvent(t, c.m, "bookstore", "bookstore-v2", federate.ReasonExportConflict, corev1.EventTypeWarning)
		waitLeftOutLogged(t, c.m, c.other, "bookstore/bookstore-v2")
	}
	waitCaughtUp(t, west, east)
	waitCaughtUp(t, east, west)
	for _, c := range []struct {
		m     *member
		port  int64
		other string
	}{{east, 15000, "west"}, {west, 14001, "east"}} {
		clusters, ports, _, ok := serviceImport(t, c.m, "bookstore", "bookstore-v2")
		if !ok || !reflect.DeepEqual(clusters, []string{c.m.name}) || !reflect.DeepEqual(ports, []int64{c.port}) {
			t.Errorf("%s's ServiceImport: present=%v clusters=%v ports=%v, want its own only", c.m.name, ok, clusters, ports)
		}
		if _, ok := findService(c.m.bridge.Remote().Remote[c.other], "bookstore", "bookstore-v2"); ok {
			t.Errorf("%s routes to %s's conflicting export", c.m.name, c.other)
		}
	}
}

func testUnexport(t *testing.T, east, west *member) {
	// West withdraws its export: east's, now the only one, is imported
	// everywhere, and east's conflict is gone.
	unexport(t, west, "bookstore", "bookstore-v2")
	eventually(t, time.Minute, func() (bool, string) {
		clusters, ports, _, ok := serviceImport(t, west, "bookstore", "bookstore-v2")
		return ok && reflect.DeepEqual(clusters, []string{"east"}) && reflect.DeepEqual(ports, []int64{15000}),
			fmt.Sprintf("west's ServiceImport after west unexported: present=%v clusters=%v ports=%v", ok, clusters, ports)
	})
	eventually(t, time.Minute, func() (bool, string) {
		s, _, _ := condition(t, east, "bookstore", "bookstore-v2", "Conflict")
		return s == "False", "east's export still reports a conflict"
	})
	waitEvent(t, east, "bookstore", "bookstore-v2", federate.ReasonExportProblemGone, corev1.EventTypeNormal)
	// The last exporter goes: the ServiceImport goes everywhere.
	unexport(t, east, "bookstore", "bookstore-v2")
	for _, m := range []*member{east, west} {
		eventually(t, time.Minute, func() (bool, string) {
			clusters, _, _, ok := serviceImport(t, m, "bookstore", "bookstore-v2")
			return !ok, fmt.Sprintf("%s still has ServiceImport bookstore/bookstore-v2 (clusters %v)", m.name, clusters)
		})
	}
}

func testLostCluster(t *testing.T, root *ca.Root, gossipKey []byte, east *member) {
	north := startChildMember(t, "north", root, gossipKey, east.fed.Addr(), catalog.ExportedService{
		Namespace: "bookstore", Name: "bookthief", Ports: []catalog.Port{{Name: "grpc", Port: 14001, Protocol: "grpc"}},
		Endpoints: []catalog.Endpoint{{Address: "10.244.9.4", Ready: true, Zone: "north-a"}},
	})
	eventually(t, time.Minute, func() (bool, string) {
		_, ok := findService(east.bridge.Remote().Remote["north"], "bookstore", "bookthief")
		clusters, _, _, imp := serviceImport(t, east, "bookstore", "bookthief")
		return ok && imp && reflect.DeepEqual(clusters, []string{"north"}), "north's export is not in east's view and ServiceImports"
	})
	north.kill()
	// Withdrawn: the service stays in the view with no endpoints (splits
	// keep its cluster at weight 0), and its ServiceImport goes.
	eventually(t, time.Minute, func() (bool, string) {
		svc, ok := findService(east.bridge.Remote().Remote["north"], "bookstore", "bookthief")
		return ok && len(svc.Endpoints) == 0, "north's endpoints are still in east's view after it was killed"
	})
	eventually(t, time.Minute, func() (bool, string) {
		_, _, _, ok := serviceImport(t, east, "bookstore", "bookthief")
		return !ok, "north's ServiceImport is still in east"
	})
	// Withdrawn, not forgotten: the reason is visible.
	view := east.fed.Snapshot().Clusters["north"]
	if len(view.Withdrawn) == 0 || !strings.Contains(view.Reason, "north") {
		t.Errorf("north's view in east: withdrawn %v, reason %q", view.Withdrawn, view.Reason)
	}
}

func testStatus(t *testing.T, east *member) {
	eventually(t, time.Minute, func() (bool, string) {
		u, err := east.dyn.Resource(federate.MeshConfigGVR).Namespace(deploy.DefaultNamespace).Get(testContext(t), deploy.MeshConfigName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		members, _, _ := unstructured.NestedSlice(u.Object, "status", "federation", "members")
		states := map[string]string{}
		for _, m := range members {
			m := m.(map[string]any)
			states[fmt.Sprint(m["name"])] = fmt.Sprint(m["state"])
		}
		return states["east"] == "alive" && states["west"] == "alive" && states["north"] == "dead",
			fmt.Sprintf("members in east's MeshConfig status: %v", states)
	})
}

// waitCaughtUp waits until a holds b's latest catalog version.
func waitCaughtUp(t *testing.T, a, b *member) {
	t.Helper()
	eventually(t, time.Minute, func() (bool, string) {
		var want, got uint64
		for _, m := range b.fed.Members() {
			if m.Local {
				want = m.CatalogVersion
			}
		}
		for _, m := range a.fed.Members() {
			if m.Name == b.name {
				got = m.CatalogVersion
			}
		}
		// Let a's bridge reconcile what it holds: its remote state
		// carries the version.
		rv := a.bridge.Remote().Remote[b.name].Version
		return want != 0 && got == want && rv == want, fmt.Sprintf("%s holds %s's catalog v%d (bridge v%d), latest v%d", a.name, b.name, got, rv, want)
	})
}

func findService(cc mesh.ClusterCatalog, ns, name string) (mesh.Service, bool) {
	for _, s := range cc.Services {
		if s.Namespace == ns && s.Name == name {
			return s, true
		}
	}
	return mesh.Service{}, false
}

func histogramCount(t *testing.T, m *member, name string) uint64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mm := range mf.GetMetric() {
			n += histogram(mm).GetSampleCount()
		}
	}
	return n
}

func histogram(m *dto.Metric) *dto.Histogram { return m.GetHistogram() }
