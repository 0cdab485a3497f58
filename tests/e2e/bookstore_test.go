// Package e2e holds meshfed's end-to-end suites for one cluster: a real
// local cluster (sandbox), the real meshfed-controller binary as a process,
// and the bookstore demo's grpc-go workloads as processes with SVIDs from
// `meshfed agent`, all started by localmesh as `meshfed demo` and
// tests/federated start theirs.
//
// How workloads get their addresses: the API server refuses loopback
// addresses, so the sandbox hands out pod addresses from the cluster's pod
// CIDR (10.244.1.0/24). The pods' addresses live in a network namespace
// localmesh makes without root (a user namespace with only loopback,
// localmesh/workloads.UserNetwork), where every workload runs, so
// pod-to-pod traffic never leaves it. The controller serves xDS and issuing
// on Unix sockets, which reach across network namespaces, and its metrics
// on 127.0.0.1. Nothing is sent to any other address. It needs unshare,
// nsenter and ip (util-linux, iproute2) and unprivileged user namespaces;
// without them the tests skip and say so.
package e2e

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/controller/inject"
	"github.com/meshfed/meshfed/controller/kube"
	"github.com/meshfed/meshfed/localmesh"
)

const (
	buyBook   = "BuyBook"
	listBooks = "ListBooks"
	ok        = "OK"
	denied    = "PermissionDenied"
)

func (m *bookstoreMesh) setPermissive(t *testing.T, on bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"traffic":{"enablePermissiveTrafficPolicyMode":%t}}}`, on)
	if err := m.h.PatchMeshConfig(m.ctx, cluster, patch); err != nil {
		t.Fatal(err)
	}
}

const converge = 90 * time.Second

func TestBookstoreAccessIsDeniedByDefaultAllowedByTrafficTargetAndPermissiveMode(t *testing.T) {
	m := startBookstoreMesh(t)

	t.Run("the plain manifests' Pods are stored injected and run their injected agents", func(t *testing.T) {
		manifest, err := os.ReadFile(m.h.Manifest("apps/bookbuyer.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(manifest), inject.AgentContainer) || strings.Contains(string(manifest), "volumes:") {
			t.Fatalf("the demo's manifest should be plain (app container, ServiceAccount, labels):\n%s", manifest)
		}
		for _, ns := range []string{"bookbuyer", "bookstore", "bookthief", "bookwarehouse"} {
			var pods *corev1.PodList
			m.wait(t, converge, "Pods running in "+ns, func() error {
				var err error
				if pods, err = m.east.Sandbox.Client().CoreV1().Pods(ns).List(m.ctx, metav1.ListOptions{}); err != nil {
					return err
				}
				if len(pods.Items) == 0 || slices.ContainsFunc(pods.Items, func(p corev1.Pod) bool { return p.Status.Phase != corev1.PodRunning }) {
					return fmt.Errorf("%d Pods, not all running", len(pods.Items))
				}
				return nil
			})
			for _, p := range pods.Items {
				init := p.Spec.InitContainers
				if p.Annotations[inject.AnnotationInjected] != inject.ProxyProxyless || len(init) != 1 || init[0].Name != inject.AgentContainer ||
					init[0].RestartPolicy == nil || *init[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
					t.Errorf("Pod %s/%s: want the proxyless data plane injected (annotation, %s as a native sidecar), got annotations %v, init containers %d", ns, p.Name, inject.AgentContainer, p.Annotations, len(init))
				}
			}
		}
		// The agents the local kubelet ran wrote the SVIDs where the
		// injected volume is: the Pods' traffic below is mTLS with them.
		// (The kubelet stand-in marks a Pod running once its sidecar's
		// startup probe passed and its app started.)
		certs, _ := filepath.Glob(filepath.Join(m.h.PodsDir(), cluster, "bookbuyer", "*", "volumes", "meshfed", "certs", "certificate.pem"))
		if len(certs) == 0 {
			t.Errorf("no SVID written by bookbuyer's injected agent under %s", m.h.PodsDir())
		}
	})

	t.Run("no TrafficTarget: bookbuyer and bookthief are denied", func(t *testing.T) {
		m.wait(t, converge, "bookbuyer BuyBook denied", func() error { return m.allCode(fromTheStart, "bookbuyer", buyBook, 20, denied) })
		m.wait(t, converge, "bookthief BuyBook denied", func() error { return m.allCode(fromTheStart, "bookthief", buyBook, 20, denied) })
	})
	if t.Failed() {
		return
	}

	t.Run("TrafficTarget + HTTPRouteGroup: bookbuyer may buy, not list; bookthief is denied", func(t *testing.T) {
		m.apply(t, "access")
		m.wait(t, converge, "bookbuyer BuyBook allowed", func() error { return m.allCode(fromTheStart, "bookbuyer", buyBook, 20, ok) })
		mark := time.Now()
		m.wait(t, converge, "more bookbuyer RPCs", func() error { _, err := m.lastN(mark, "bookbuyer", buyBook, 100); return err })
		checkAll(t, m.calls(mark, "bookbuyer", buyBook), "bookbuyer", buyBook, ok)
		checkAll(t, m.calls(mark, "bookbuyer", listBooks), "bookbuyer", listBooks, denied)
		checkAll(t, m.calls(mark, "bookthief", buyBook), "bookthief", buyBook, denied)
		backends := map[string]int{}
		for _, c := range m.calls(mark, "bookbuyer", buyBook) {
			backends[c.Outcome.Version]++
		}
		t.Logf("bookbuyer BuyBook answered by versions %v", backends)
	})
	if t.Failed() {
		return
	}

	t.Run("permissive mode lets both through without restarts", func(t *testing.T) {
		m.setPermissive(t, true)
		m.wait(t, converge, "bookthief BuyBook allowed", func() error { return m.allCode(fromTheStart, "bookthief", buyBook, 20, ok) })
		m.wait(t, converge, "bookbuyer ListBooks allowed", func() error { return m.allCode(fromTheStart, "bookbuyer", listBooks, 20, ok) })
	})
	if t.Failed() {
		return
	}

	t.Run("back to deny by default", func(t *testing.T) {
		m.setPermissive(t, false)
		m.wait(t, converge, "bookthief BuyBook denied again", func() error { return m.allCode(fromTheStart, "bookthief", buyBook, 20, denied) })
		mark := time.Now()
		m.wait(t, converge, "more bookbuyer RPCs", func() error { _, err := m.lastN(mark, "bookbuyer", buyBook, 50); return err })
		checkAll(t, m.calls(mark, "bookbuyer", buyBook), "bookbuyer", buyBook, ok)
	})

	t.Run("the controller measured changes reaching proxies", func(t *testing.T) {
		if n := scrape(t, m.metricsURL(), "meshfed_controller_change_to_ack_seconds_count"); n < 1 {
			t.Errorf("change-to-ACK observations = %v, want ≥ 1", n)
		}
		if n := scrape(t, m.metricsURL(), "meshfed_xds_connected_proxies"); n < 4 {
			t.Errorf("connected proxies = %v, want ≥ 4 (two bookstores, bookbuyer, bookthief)", n)
		}
	})
}

// checkAll fails the test unless every one of app's calls of method ended
// with code.
func checkAll(t *testing.T, cs []localmesh.Call, app, method, code string) {
	t.Helper()
	bad := 0
	var first localmesh.Call
	for _, c := range cs {
		if codeOf(c) != code {
			if bad == 0 {
				first = c
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d %s %s results are not %s; first: %s %q", bad, len(cs), app, method, code, codeOf(first), first.Error)
	}
}

func TestBookstoreTrafficSplitFollowsWeightsAndShiftsWithoutFailures(t *testing.T) {
	m := startBookstoreMesh(t)
	split := func(name string) { m.apply(t, "split/"+name) }
	m.apply(t, "access")

	// Start from 0/100: once only v2 answers, the split is in force; then
	// 80/20, and the first v1 answer marks the new weights.
	split("bookstore-0-100.yaml")
	m.wait(t, converge, "only v2 answers under 0/100", func() error { return m.allVersion(fromTheStart, 100, "v2") })
	mark := time.Now()
	split("bookstore-80-20.yaml")
	m.wait(t, converge, "v1 answers under 80/20", func() error {
		for _, c := range m.calls(mark, "bookbuyer", buyBook) {
			if c.Outcome.OK && c.Outcome.Version == "v1" {
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
		start := time.Now()
		m.wait(t, 3*time.Minute, "1200 RPCs", func() error { _, err := m.lastN(start, "bookbuyer", buyBook, n); return err })
		cs := m.calls(start, "bookbuyer", buyBook)[:n]
		counts := map[string]int{}
		for _, c := range cs {
			if !c.Outcome.OK {
				t.Fatalf("RPC failed under 80/20: %s %s", c.Outcome.Code, c.Error)
			}
			counts[c.Outcome.Version]++
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
		start := time.Now()
		split("bookstore-0-100.yaml")
		m.wait(t, converge, "only v2 answers", func() error { return m.allVersion(start, 200, "v2") })
		cs := m.calls(start, "bookbuyer", buyBook)
		versions := map[string]int{}
		for _, c := range cs {
			versions[c.Outcome.Version]++
		}
		t.Logf("during the shift: %d BuyBook RPCs by version %v", len(cs), versions)
		checkAll(t, cs, "bookbuyer", buyBook, ok)
	})
}

// allVersion checks that the last n bookbuyer BuyBook RPCs from from on
// succeeded and were answered by version.
func (m *bookstoreMesh) allVersion(from time.Time, n int, version string) error {
	cs, err := m.lastN(from, "bookbuyer", buyBook, n)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if !c.Outcome.OK || c.Outcome.Version != version {
			return fmt.Errorf("got %s from %q, want OK from %s", codeOf(c), c.Outcome.Version, version)
		}
	}
	return nil
}

func TestBookstoreBadObjectsGetEventsAndTheRestKeepsServing(t *testing.T) {
	m := startBookstoreMesh(t)
	m.apply(t, "access")
	m.wait(t, converge, "bookbuyer BuyBook allowed", func() error { return m.allCode(fromTheStart, "bookbuyer", buyBook, 20, ok) })

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
		m.applyObject(t, map[string]any{
			"apiVersion": b.apiVersion, "kind": b.kind,
			"metadata": map[string]any{"name": b.name, "namespace": "bookstore"},
			"spec":     b.spec,
		})
	}
	for _, b := range bad {
		t.Run(b.kind+" "+b.name+" gets an Event", func(t *testing.T) {
			m.wait(t, converge, "event", func() error {
				evs, err := m.east.Sandbox.Client().CoreV1().Events("bookstore").List(m.ctx, metav1.ListOptions{
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
		mark := time.Now()
		m.wait(t, converge, "more RPCs", func() error {
			if _, err := m.lastN(mark, "bookbuyer", buyBook, 100); err != nil {
				return err
			}
			_, err := m.lastN(mark, "bookthief", buyBook, 50)
			return err
		})
		checkAll(t, m.calls(mark, "bookbuyer", buyBook), "bookbuyer", buyBook, ok)
		checkAll(t, m.calls(mark, "bookthief", buyBook), "bookthief", buyBook, denied)
	})
	t.Run("rejected objects are counted", func(t *testing.T) {
		if n := scrape(t, m.metricsURL(), "meshfed_controller_rejected_objects"); n != float64(len(bad)) {
			t.Errorf("meshfed_controller_rejected_objects = %v, want %d", n, len(bad))
		}
	})
}
