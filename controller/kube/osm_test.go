package kube

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/sandbox"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/osm/*.golden.yaml")

// meshedCluster is one real API server with meshfed's CRDs installed.
type meshedCluster struct {
	sb   *sandbox.Sandbox
	c    *sandbox.Cluster
	kc   kubernetes.Interface
	dyn  dynamic.Interface
	opts deploy.Options
}

func startMeshedCluster(t *testing.T, ctx context.Context, namespaces ...string) *meshedCluster {
	t.Helper()
	sb := sandboxtest.Start(t, "east")
	c := sb.Cluster("east")
	inst, err := installer.New(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	o := deploy.DefaultOptions()
	o.ClusterName = "east"
	if _, err := inst.Install(ctx, o); err != nil {
		t.Fatal(err)
	}
	m := &meshedCluster{sb: sb, c: c, kc: c.Client(), dyn: dynamic.NewForConfigOrDie(c.RESTConfig()), opts: o}
	for _, ns := range namespaces {
		if _, err := m.kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: ns, Labels: map[string]string{LabelMonitoredBy: o.MeshName}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// workload creates what a meshed workload is to the API server: a
// ServiceAccount, a Pod running as it, a Service (a gRPC port) and an
// EndpointSlice with the Pod's address.
func (m *meshedCluster) workload(t *testing.T, ctx context.Context, ns, svc, sa, ip string) {
	t.Helper()
	if _, err := m.kc.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pod := svc + "-0"
	if _, err := m.kc.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pod}, Spec: corev1.PodSpec{
		ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/" + svc}},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.kc.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: svc},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "grpc", Port: 14001}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sl := slice(svc, ip)
	sl.Endpoints[0].TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}
	*sl.Ports[0].Port = 14001
	if _, err := m.kc.DiscoveryV1().EndpointSlices(ns).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// kubectl runs the sandbox's kubectl against the cluster.
func (m *meshedCluster) kubectl(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(m.sb.BinDir(), sandbox.BinKubectl), append([]string{"--kubeconfig", m.c.KubeconfigPath}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// runWatcher runs a Watcher for m with sink until the test ends.
func (m *meshedCluster) runWatcher(t *testing.T, sink Sink, tune func(*Config)) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Client, cfg.Dynamic, cfg.Sink = m.kc, m.dyn, sink
	cfg.MeshName, cfg.Namespace, cfg.ClusterName = m.opts.MeshName, m.opts.Namespace, "east"
	if tune != nil {
		tune(&cfg)
	}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// TestGoldenOSMManifests applies OSM's bookstore access and split
// manifests, unchanged, with kubectl to a real API server with meshfed's
// CRDs, and shows what meshfed serves from them: the header matches of
// the list form in the RBAC policy of bookstore's inbound listener, and the
// 50/50 split (one backend is the root service itself) in bookbuyer's
// route to bookstore.
func TestGoldenOSMManifests(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := startMeshedCluster(t, ctx, "bookstore", "bookbuyer")
	m.workload(t, ctx, "bookstore", "bookstore", "bookstore", "10.244.0.10")
	m.workload(t, ctx, "bookstore", "bookstore-v1", "bookstore", "10.244.0.11")
	m.workload(t, ctx, "bookstore", "bookstore-v2", "bookstore-v2", "10.244.0.12")
	m.workload(t, ctx, "bookbuyer", "bookbuyer", "bookbuyer", "10.244.0.20")

	for _, f := range []string{"traffic-access-v1.yaml", "traffic-split-50-50.yaml"} {
		t.Logf("kubectl apply -f %s: %s", f, strings.TrimSpace(m.kubectl(t, ctx, "apply", "-f", filepath.Join("testdata", "osm", f))))
	}
	// The other published split form is accepted too (it would replace
	// the 50/50 split of the same name, so only on a dry run).
	m.kubectl(t, ctx, "apply", "--dry-run=server", "-f", filepath.Join("testdata", "osm", "traffic-split-v1.yaml"))

	sink := &states{wake: make(chan struct{}, 1)}
	m.runWatcher(t, sink, nil)
	st, _, _ := sink.waitFor(t, 0, "the OSM objects", func(s mesh.State) bool {
		return len(s.TrafficTargets) == 1 && len(s.HTTPRouteGroups) == 1 && len(s.TrafficSplits) == 1 && len(s.Services) == 4 &&
			len(service(s, "bookstore").ServerIdentities()) == 1
	})
	ix := generate.NewIndex(st)
	if len(ix.Problems) > 0 {
		t.Fatalf("meshfed skips OSM's objects: %v", ix.Problems)
	}
	bookstore := mesh.NewIdentity(st.Settings.TrustDomain, "bookstore", "bookstore")
	inbound := generate.SidecarInbound(ix, bookstore)
	var route types.Resource
	for _, r := range generate.ProxylessRoutes(ix) {
		if strings.Contains(resourceJSON(t, r), `"bookstore.bookstore.svc.cluster.local`) {
			route = r
		}
	}
	if len(inbound.Listeners) != 1 || route == nil {
		t.Fatalf("no inbound listener for %s or no route to bookstore", bookstore)
	}
	rbac, routeJSON := resourceJSON(t, inbound.Listeners[0]), resourceJSON(t, route)
	for _, want := range []string{`"name":"user-agent"`, `".*-http-client/*.*"`, `"name":"client-app"`, `"bookbuyer"`, `"/books-bought"`, `".*a-book.*new"`, `"GET"`,
		`spiffe://meshfed.local/ns/bookbuyer/sa/bookbuyer`} {
		if !strings.Contains(rbac, want) {
			t.Errorf("bookstore's inbound RBAC lacks %s", want)
		}
	}
	for _, want := range []string{`"weightedClusters"`, `"bookstore/bookstore:14001"`, `"bookstore/bookstore-v2:14001"`, `"weight":50`} {
		if !strings.Contains(routeJSON, want) {
			t.Errorf("bookbuyer's route to bookstore lacks %s:\n%s", want, routeJSON)
		}
	}
	compareOSMGolden(t, filepath.Join("testdata", "osm", "bookstore.golden.yaml"), map[string]any{
		"bookstoreInboundListener": yamlValue(t, rbac),
		"routeToBookstore":         yamlValue(t, routeJSON),
	})

	t.Run("the map form of headers is the same match", func(t *testing.T) {
		m.createRouteGroup(t, ctx, "map-form", map[string]any{"user-agent": ".*-http-client/*.*", "client-app": "bookbuyer"})
		st, _, _ := sink.waitFor(t, 0, "both route groups", func(s mesh.State) bool { return len(s.HTTPRouteGroups) == 2 })
		var list, mapped mesh.HTTPRouteGroup
		for _, g := range st.HTTPRouteGroups {
			if g.Name == "map-form" {
				mapped = g
			} else {
				list = g
			}
		}
		if !reflect.DeepEqual(list.Matches[0], mapped.Matches[0]) {
			t.Errorf("list form %+v and map form %+v differ", list.Matches[0], mapped.Matches[0])
		}
	})

	t.Run("any other shape is refused with an Event saying what to write", func(t *testing.T) {
		m.createRouteGroup(t, ctx, "string-form", "user-agent: .*-http-client/*.*")
		waitEvent(t, "Warning on string-form", func() []corev1.Event {
			evs, err := m.kc.CoreV1().Events("bookstore").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=HTTPRouteGroup,involvedObject.name=string-form"})
			if err != nil {
				t.Fatal(err)
			}
			return evs.Items
		}, func(ev corev1.Event) bool {
			return ev.Type == corev1.EventTypeWarning && ev.Reason == ReasonRejected && strings.Contains(ev.Message, "write a map of header name to regular expression")
		})
	})
}

// createRouteGroup creates HTTPRouteGroup bookstore/name with OSM's
// books-bought match and the given headers field, as the API server takes
// it (the CRD keeps the field as written).
func (m *meshedCluster) createRouteGroup(t *testing.T, ctx context.Context, name string, headers any) {
	t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
		"metadata": map[string]any{"name": name, "namespace": "bookstore"},
		"spec": map[string]any{"matches": []any{map[string]any{
			"name": "books-bought", "pathRegex": "/books-bought", "methods": []any{"GET"}, "headers": headers,
		}}},
	}}
	if _, err := m.dyn.Resource(HTTPRouteGroupGVR).Namespace("bookstore").Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func resourceJSON(t *testing.T, r types.Resource) string {
	t.Helper()
	b, err := protojson.MarshalOptions{UseProtoNames: false}.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	// protojson's output is deliberately unstable in spacing; normalize.
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func yamlValue(t *testing.T, js string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func compareOSMGolden(t *testing.T, path string, doc any) {
	t.Helper()
	got, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if *updateGolden {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGoldenOSMManifests -update)", err)
	}
	if string(want) != string(got) {
		t.Errorf("%s differs from what meshfed generates (run go test -run TestGoldenOSMManifests -update and review the diff); generated:\n%s", path, got)
	}
}
