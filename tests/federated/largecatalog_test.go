package federated_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/controller/debug"
	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/localmesh"
	"github.com/meshfed/meshfed/tests/internal/suite"
)

// largeNamespaces spread the large catalog's services.
const largeNamespaces = 10

var serviceExports = schema.GroupVersionResource{Group: "multicluster.x-k8s.io", Version: "v1alpha1", Resource: "serviceexports"}

// TestEndpointChangeWithALargeCatalog is a benchmark harness, not a timed
// test: the end-to-end figure of docs/benchmarks.md ("Federation end to
// end") measured while west exports MESHFED_SCALE_SERVICES (default
// 10,000) services besides bookstore-v2, so that each endpoint change is a
// change inside a large catalog. It runs only with MESHFED_SCALE=1 (it
// creates 3 objects per service in west's API server: minutes):
//
//	MESHFED_SCALE=1 go test ./tests/federated -run TestEndpointChangeWithALargeCatalog -v -timeout 40m
func TestEndpointChangeWithALargeCatalog(t *testing.T) {
	if os.Getenv("MESHFED_SCALE") == "" {
		t.Skip("needs MESHFED_SCALE=1: a benchmark harness (creates 30,000 objects, ~15 min) that prints figures and asserts none; the same endpoint-change measurement runs in TestThreeClusterFederation (docs/benchmarks.md)")
	}
	n := 10000
	if s := os.Getenv("MESHFED_SCALE_SERVICES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("MESHFED_SCALE_SERVICES=%q: want a positive number", s)
		}
		n = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()
	namespaces := []string{"bookstore", "bookbuyer", "bookthief"}
	for i := range largeNamespaces {
		namespaces = append(namespaces, largeNamespace(i))
	}
	h := suite.Start(ctx, t, localmesh.Config{
		Clusters: []string{"east", "west"}, Interval: 25 * time.Millisecond,
		WithdrawAfter: withdrawAfter, Namespaces: namespaces,
	})
	var twoClusters []localmesh.Step
	for _, s := range placement {
		if s.Cluster != "north" {
			twoClusters = append(twoClusters, s)
		}
	}
	if err := h.ApplyAll(ctx, twoClusters); err != nil {
		t.Fatal(err)
	}

	// A client that may create as fast as the API server takes it.
	rc := h.Cluster("west").Sandbox.RESTConfig()
	rc.QPS, rc.Burst = 1000, 2000
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := exportMany(ctx, kc, dyn, n); err != nil {
		t.Fatal(err)
	}
	t.Logf("created %d exported services in west in %s", n, time.Since(start).Round(time.Second))

	dc, err := debug.Dial(ctx, h.Cluster("east").Sandbox.RESTConfig(), deploy.DefaultNamespace)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	err = localmesh.WaitUntil(ctx, 15*time.Minute, fmt.Sprintf("east holds west's catalog of %d services", n+1), func(time.Time) (bool, string) {
		f, err := dc.Federation(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, m := range f.Status.Members {
			if m.Name == "west" {
				return m.ServiceCount >= n+1, fmt.Sprintf("west's catalog: %d services", m.ServiceCount)
			}
		}
		return false, "west not seen"
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("east holds west's %d-service catalog %s after the first create", n+1, time.Since(start).Round(time.Second))
	// Each controller writes a ServiceImport for each exported service
	// (west for its own too) and west the status of each ServiceExport,
	// a few at a time (federate.Config.WriteBudget): the figures below
	// are taken once those writes are done, as in a federation that has
	// settled.
	for _, cluster := range h.Clusters() {
		cdyn, err := dynamic.NewForConfig(h.Cluster(cluster).Sandbox.RESTConfig())
		if err != nil {
			t.Fatal(err)
		}
		err = localmesh.WaitUntil(ctx, 20*time.Minute, fmt.Sprintf("%s has written %d ServiceImports", cluster, n+1), func(time.Time) (bool, string) {
			l, err := cdyn.Resource(federate.ServiceImportGVR).List(ctx, metav1.ListOptions{LabelSelector: federate.LabelManagedBy + "=" + federate.ManagedBy})
			if err != nil {
				return false, err.Error()
			}
			return len(l.Items) >= n+1, fmt.Sprintf("%d ServiceImports", len(l.Items))
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s has written the ServiceImports %s after the first create", cluster, time.Since(start).Round(time.Second))
	}
	st := h.Stats()
	if err := localmesh.WaitUntil(ctx, 3*time.Minute, "bookbuyer in east reaches west", func(now time.Time) (bool, string) {
		r := st.Recent(now, 2*time.Second, buyerEast, "BuyBook")
		return r.By[v2West] > 0, fmt.Sprint(r.By)
	}); err != nil {
		t.Fatal(err)
	}
	stop := profileControllers(t, ctx, h, os.Getenv("MESHFED_PROFILE_DIR"))
	testEndpointChangeLatency(t, ctx, h)
	stop()
}

// profileControllers, when dir is set, takes a 60 s CPU profile of each
// controller from now, and writes it to dir/<cluster>-cpu.pprof (read
// with go tool pprof); stop waits for them.
func profileControllers(t *testing.T, ctx context.Context, h *localmesh.Harness, dir string) (stop func()) {
	if dir == "" {
		return func() {}
	}
	var wg sync.WaitGroup
	for _, cluster := range h.Clusters() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.DebugURL(cluster)+debug.PathProfiles+"profile?seconds=60", nil)
			if err != nil {
				t.Error(err)
				return
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("profile %s: %v", cluster, err)
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			path := filepath.Join(dir, cluster+"-cpu.pprof")
			if err == nil {
				err = os.WriteFile(path, b, 0o644)
			}
			if err != nil {
				t.Errorf("profile %s: %v", cluster, err)
				return
			}
			t.Logf("CPU profile of %s's controller: %s", cluster, path)
		}()
	}
	return wg.Wait
}

func largeNamespace(i int) string { return fmt.Sprintf("large-%d", i%largeNamespaces) }

// exportMany creates n headless Services in west, each with an
// EndpointSlice of one ready address and a ServiceExport, 16 at a time.
func exportMany(ctx context.Context, kc kubernetes.Interface, dyn dynamic.Interface, n int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := exportOne(ctx, kc, dyn, largeNamespace(i), fmt.Sprintf("svc-%d", i), fmt.Sprintf("10.250.%d.%d", i/250, 1+i%250)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func exportOne(ctx context.Context, kc kubernetes.Interface, dyn dynamic.Interface, ns, name, addr string) error {
	ready := true
	port, portName, proto := int32(8080), "grpc", corev1.ProtocolTCP
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone,
			Ports: []corev1.ServicePort{{Name: portName, Port: port, Protocol: proto}}},
	}
	if _, err := kc.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Service %s/%s: %w", ns, name, err)
	}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "meshfed-large-catalog"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
	}
	if _, err := kc.DiscoveryV1().EndpointSlices(ns).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create EndpointSlice %s/%s: %w", ns, name, err)
	}
	se := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
		"metadata": map[string]any{"name": name, "namespace": ns},
	}}
	if _, err := dyn.Resource(serviceExports).Namespace(ns).Create(ctx, se, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create ServiceExport %s/%s: %w", ns, name, err)
	}
	return nil
}
