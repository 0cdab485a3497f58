// Package e2e holds meshfed's end-to-end suites: real local clusters
// (sandbox), the real meshfed-controller binary as a process, and the
// bookstore demo's grpc-go workloads as processes with SVIDs from
// `meshfed agent`.
//
// How workloads get their addresses: the API server refuses loopback
// addresses, so the sandbox hands out pod addresses from a pod CIDR the test
// picks (a 10.244.<100–250>.0/24). The pods' addresses live in a network
// namespace the test makes without root (a user namespace with only
// loopback, localmesh/workloads.UserNetwork), where every workload runs, so
// pod-to-pod traffic never leaves it. The controller serves xDS and issuing
// on Unix sockets, which reach across network namespaces, and its metrics
// on 127.0.0.1. Nothing is sent to any other address. It needs unshare,
// nsenter and ip (util-linux, iproute2) and unprivileged user namespaces;
// without them the tests skip and say so.
package e2e

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshfed/meshfed/controller/kube"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/localmesh"
	"github.com/meshfed/meshfed/localmesh/workloads"
	"github.com/meshfed/meshfed/sandbox"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
)

const (
	meshName  = deploy.DefaultMeshName
	cpNS      = deploy.DefaultNamespace
	buyBook   = "BuyBook"
	listBooks = "ListBooks"
	ok        = "OK"
	denied    = "PermissionDenied"
)

// bookstoreMesh is one sandbox cluster with meshfed installed, the
// controller running as a process and the bookstore apps applied from
// docs/example/manifests/apps.
type bookstoreMesh struct {
	sb       *sandbox.Sandbox
	cluster  *sandbox.Cluster
	apply    *applier
	results  *tally
	manifest string
	metrics  string // the controller's /metrics URL
}

func startBookstoreMesh(t *testing.T) *bookstoreMesh {
	t.Helper()
	if err := workloads.CanCreateUserNetworks(); err != nil {
		t.Skipf("end-to-end traffic needs pod addresses in a network namespace the test creates: %v", err)
	}
	bins := buildBinaries(t)
	cidr := pickCIDR(t)
	network, err := workloads.CreateUserNetwork(cidr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := network.Close(); err != nil {
			t.Errorf("close network: %v", err)
		}
	})
	results := &tally{}
	logDir := t.TempDir()
	wlLog := &lockedFile{path: filepath.Join(logDir, "workloads.log")}
	runner := workloads.New(workloads.Config{
		Images:   map[string]workloads.Program{"meshfed/bookapp": {Path: bins.Bookapp}},
		Meshfed:  bins.Meshfed,
		Dir:      t.TempDir(),
		Env:      []string{"BOOKAPP_INTERVAL=2ms"},
		OnOutput: results.add,
		Log:      wlLog,
	})
	sb := sandboxtest.StartWith(t, sandbox.Config{Clusters: []string{"east"}, Hooks: runner.Hooks(), PodCIDR: map[string]string{"east": cidr}})
	t.Cleanup(func() {
		runner.StopAll()
		if t.Failed() {
			t.Logf("workloads log (last lines):\n%s", tail(wlLog.path, 40))
		}
	})
	c := sb.Cluster("east")
	ctx := context.Background()

	inst, err := installer.New(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	opts := deploy.DefaultOptions()
	opts.ClusterName = "east"
	if _, err := inst.Install(ctx, opts); err != nil {
		t.Fatalf("install: %v", err)
	}
	sockets := t.TempDir()
	xdsAddr, issuerAddr := "unix://"+filepath.Join(sockets, "xds.sock"), "unix://"+filepath.Join(sockets, "issuer.sock")
	port, err := localmesh.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", port)
	startController(t, bins.Controller,
		"--kubeconfig="+c.KubeconfigPath, "--mesh-name="+meshName, "--namespace="+cpNS, "--mesh-config="+deploy.MeshConfigName,
		"--xds-address="+xdsAddr, "--issuer-address="+issuerAddr, "--metrics-address="+metrics,
		"--serving-name=localhost", "--debounce=50ms", "--log-level=info")
	waitReady(t, "http://"+metrics+"/readyz")
	cm, err := c.Client().CoreV1().ConfigMaps(cpNS).Get(ctx, "meshfed-ca-bundle", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("trust bundle ConfigMap: %v", err)
	}
	runner.AddCluster("east", workloads.Cluster{
		Client: c.Client(), Network: network,
		IssuerAddress: issuerAddr, XDSAddress: xdsAddr,
		TrustDomain: deploy.DefaultTrustDomain, IssuerID: "spiffe://" + deploy.DefaultTrustDomain + "/ns/" + cpNS + "/sa/" + deploy.ControllerName, BundlePEM: []byte(cm.Data["ca.crt"]),
	})

	m := &bookstoreMesh{sb: sb, cluster: c, apply: newApplier(t, c.RESTConfig()), results: results,
		manifest: writeManifests(t), metrics: "http://" + metrics + "/metrics"}
	m.apply.applyFiles(t, filepath.Join(m.manifest, "apps"))
	if err := inst.AddNamespaces(ctx, meshName, []string{"bookstore", "bookbuyer", "bookthief", "bookwarehouse"}, installer.InjectionUnchanged); err != nil {
		t.Fatalf("namespace add: %v", err)
	}
	return m
}

func (m *bookstoreMesh) setPermissive(t *testing.T, on bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"traffic":{"enablePermissiveTrafficPolicyMode":%t}}}`, on)
	_, err := m.apply.dyn.Resource(kube.MeshConfigGVR).Namespace(cpNS).Patch(context.Background(), deploy.MeshConfigName, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("patch MeshConfig: %v", err)
	}
}

const converge = 90 * time.Second

func TestBookstoreAccessIsDeniedByDefaultAllowedByTrafficTargetAndPermissiveMode(t *testing.T) {
	m := startBookstoreMesh(t)
	res := m.results

	t.Run("no TrafficTarget: bookbuyer and bookthief are denied", func(t *testing.T) {
		eventually(t, converge, "bookbuyer BuyBook denied", func() error { return res.allCode(0, "bookbuyer", buyBook, 20, denied) })
		eventually(t, converge, "bookthief BuyBook denied", func() error { return res.allCode(0, "bookthief", buyBook, 20, denied) })
	})
	if t.Failed() {
		return
	}

	t.Run("TrafficTarget + HTTPRouteGroup: bookbuyer may buy, not list; bookthief is denied", func(t *testing.T) {
		m.apply.applyFiles(t, filepath.Join(m.manifest, "access"))
		eventually(t, converge, "bookbuyer BuyBook allowed", func() error { return res.allCode(0, "bookbuyer", buyBook, 20, ok) })
		mark := res.mark()
		eventually(t, converge, "more bookbuyer RPCs", func() error { _, err := res.lastN(mark, "bookbuyer", buyBook, 100); return err })
		checkAll(t, res.since(mark, "bookbuyer", buyBook), ok)
		checkAll(t, res.since(mark, "bookbuyer", listBooks), denied)
		checkAll(t, res.since(mark, "bookthief", buyBook), denied)
		backends := map[string]int{}
		for _, r := range res.since(mark, "bookbuyer", buyBook) {
			backends[r.r.Version]++
		}
		t.Logf("bookbuyer BuyBook answered by versions %v", backends)
	})
	if t.Failed() {
		return
	}

	t.Run("permissive mode lets both through without restarts", func(t *testing.T) {
		m.setPermissive(t, true)
		eventually(t, converge, "bookthief BuyBook allowed", func() error { return res.allCode(0, "bookthief", buyBook, 20, ok) })
		eventually(t, converge, "bookbuyer ListBooks allowed", func() error { return res.allCode(0, "bookbuyer", listBooks, 20, ok) })
	})
	if t.Failed() {
		return
	}

	t.Run("back to deny by default", func(t *testing.T) {
		m.setPermissive(t, false)
		eventually(t, converge, "bookthief BuyBook denied again", func() error { return res.allCode(0, "bookthief", buyBook, 20, denied) })
		mark := res.mark()
		eventually(t, converge, "more bookbuyer RPCs", func() error { _, err := res.lastN(mark, "bookbuyer", buyBook, 50); return err })
		checkAll(t, res.since(mark, "bookbuyer", buyBook), ok)
	})

	t.Run("the controller measured changes reaching proxies", func(t *testing.T) {
		if n := scrape(t, m.metrics, "meshfed_controller_change_to_ack_seconds_count"); n < 1 {
			t.Errorf("change-to-ACK observations = %v, want ≥ 1", n)
		}
		if n := scrape(t, m.metrics, "meshfed_xds_connected_proxies"); n < 4 {
			t.Errorf("connected proxies = %v, want ≥ 4 (two bookstores, bookbuyer, bookthief)", n)
		}
	})
}

// checkAll fails the test unless every record has code.
func checkAll(t *testing.T, rs []record, code string) {
	t.Helper()
	bad := 0
	var first record
	for _, r := range rs {
		if r.r.Code != code {
			if bad == 0 {
				first = r
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d %s %s results are not %s; first: %s %q", bad, len(rs), first.w.Labels["app"], first.r.Method, code, first.r.Code, first.r.Error)
	}
}

func TestBookstoreTrafficSplitFollowsWeightsAndShiftsWithoutFailures(t *testing.T) {
	m := startBookstoreMesh(t)
	res := m.results
	split := func(name string) { m.apply.applyFiles(t, filepath.Join(m.manifest, "split", name)) }
	m.apply.applyFiles(t, filepath.Join(m.manifest, "access"))

	// Start from 0/100: once only v2 answers, the split is in force; then
	// 80/20, and the first v1 answer marks the new weights.
	split("bookstore-0-100.yaml")
	eventually(t, converge, "only v2 answers under 0/100", func() error { return allVersion(res, 0, 100, "v2") })
	mark := res.mark()
	split("bookstore-80-20.yaml")
	eventually(t, converge, "v1 answers under 80/20", func() error {
		for _, r := range res.since(mark, "bookbuyer", buyBook) {
			if r.r.Version == "v1" {
				return nil
			}
		}
		return fmt.Errorf("no v1 answer yet")
	})

	t.Run("80/20 within tolerance over 1200 RPCs", func(t *testing.T) {
		// grpc-go picks a weighted cluster at random per RPC, so the v1
		// count is Binomial(n, 0.8): σ = sqrt(n·0.8·0.2) ≈ 13.9 RPCs (1.15
		// percentage points) at n = 1200. The tolerance, ±4.5 points, is
		// ≈ 3.9σ: a correct split fails it about once in 10,000 runs.
		const n, tolerance = 1200, 0.045
		start := res.mark()
		eventually(t, 3*time.Minute, "1200 RPCs", func() error { _, err := res.lastN(start, "bookbuyer", buyBook, n); return err })
		rs := res.since(start, "bookbuyer", buyBook)[:n]
		counts := map[string]int{}
		for _, r := range rs {
			if r.r.Code != ok {
				t.Fatalf("RPC failed under 80/20: %s %s", r.r.Code, r.r.Error)
			}
			counts[r.r.Version]++
		}
		share := float64(counts["v1"]) / n
		t.Logf("80/20 split over %d RPCs: v1=%d v2=%d (v1 share %.3f, tolerance ±%.3f)", n, counts["v1"], counts["v2"], share, tolerance)
		if math.Abs(share-0.8) > tolerance || counts["v1"]+counts["v2"] != n {
			t.Fatalf("v1 share %.3f outside 0.80±%.3f (counts %v)", share, tolerance, counts)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("80/20 to 0/100 moves all traffic with zero failed RPCs", func(t *testing.T) {
		start := res.mark()
		split("bookstore-0-100.yaml")
		eventually(t, converge, "only v2 answers", func() error { return allVersion(res, start, 200, "v2") })
		rs := res.since(start, "bookbuyer", buyBook)
		versions := map[string]int{}
		for _, r := range rs {
			versions[r.r.Version]++
		}
		t.Logf("during the shift: %d BuyBook RPCs by version %v", len(rs), versions)
		checkAll(t, rs, ok)
	})
}

// allVersion checks that the last n bookbuyer BuyBook RPCs since mark
// succeeded and were answered by version.
func allVersion(res *tally, mark, n int, version string) error {
	rs, err := res.lastN(mark, "bookbuyer", buyBook, n)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.r.Code != ok || r.r.Version != version {
			return fmt.Errorf("got %s from %q, want OK from %s", r.r.Code, r.r.Version, version)
		}
	}
	return nil
}

func TestBookstoreBadObjectsGetEventsAndTheRestKeepsServing(t *testing.T) {
	m := startBookstoreMesh(t)
	res := m.results
	m.apply.applyFiles(t, filepath.Join(m.manifest, "access"))
	eventually(t, converge, "bookbuyer BuyBook allowed", func() error { return res.allCode(0, "bookbuyer", buyBook, 20, ok) })

	bad := []struct {
		name, kind, apiVersion, want string
		spec                         map[string]any
	}{
		{"split-missing-backend", "TrafficSplit", "split.smi-spec.io/v1alpha2", "no such service",
			map[string]any{"service": "bookstore-v1", "backends": []any{map[string]any{"service": "bookstore-v9", "weight": int64(100)}}}},
		{"split-all-zero", "TrafficSplit", "split.smi-spec.io/v1alpha2", "all weights are zero",
			map[string]any{"service": "bookstore-v2", "backends": []any{
				map[string]any{"service": "bookstore-v1", "weight": int64(0)}, map[string]any{"service": "bookstore-v2", "weight": int64(0)}}}},
		{"target-missing-routes", "TrafficTarget", "access.smi-spec.io/v1alpha3", "no such route",
			map[string]any{
				"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": "bookstore"},
				"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookthief", "namespace": "bookthief"}},
				"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "no-such-routes"}},
			}},
		{"target-other-namespace", "TrafficTarget", "access.smi-spec.io/v1alpha3", "namespace mismatch",
			map[string]any{
				"destination": map[string]any{"kind": "ServiceAccount", "name": "bookwarehouse", "namespace": "bookwarehouse"},
				"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookthief", "namespace": "bookthief"}},
				"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "bookstore-service-routes"}},
			}},
		{"routes-bad-regex", "HTTPRouteGroup", "specs.smi-spec.io/v1alpha4", "invalid regular expression",
			map[string]any{"matches": []any{map[string]any{"name": "broken", "pathRegex": `/bookstore\.Bookstore/(`}}}},
	}
	for _, b := range bad {
		m.apply.apply(t, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": b.apiVersion, "kind": b.kind,
			"metadata": map[string]any{"name": b.name, "namespace": "bookstore"},
			"spec":     b.spec,
		}})
	}
	for _, b := range bad {
		t.Run(b.kind+" "+b.name+" gets an Event", func(t *testing.T) {
			eventually(t, converge, "event", func() error {
				evs, err := m.cluster.Client().CoreV1().Events("bookstore").List(context.Background(), metav1.ListOptions{
					FieldSelector: "involvedObject.name=" + b.name + ",involvedObject.kind=" + b.kind})
				if err != nil {
					return err
				}
				for _, ev := range evs.Items {
					if ev.Reason == kube.ReasonRejected && ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Message, b.want) && ev.InvolvedObject.UID != "" {
						t.Logf("event on %s/%s: %s", b.kind, b.name, ev.Message)
						return nil
					}
				}
				return fmt.Errorf("no %s event mentioning %q among %d events", kube.ReasonRejected, b.want, len(evs.Items))
			})
		})
	}
	t.Run("the rest keeps being served", func(t *testing.T) {
		mark := res.mark()
		eventually(t, converge, "more RPCs", func() error {
			if _, err := res.lastN(mark, "bookbuyer", buyBook, 100); err != nil {
				return err
			}
			_, err := res.lastN(mark, "bookthief", buyBook, 50)
			return err
		})
		checkAll(t, res.since(mark, "bookbuyer", buyBook), ok)
		checkAll(t, res.since(mark, "bookthief", buyBook), denied)
	})
	t.Run("rejected objects are counted", func(t *testing.T) {
		if n := scrape(t, m.metrics, "meshfed_controller_rejected_objects"); n != float64(len(bad)) {
			t.Errorf("meshfed_controller_rejected_objects = %v, want %d", n, len(bad))
		}
	})
}
