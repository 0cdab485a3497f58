package kube

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
)

// states records every State a Watcher sends.
type states struct {
	mu   sync.Mutex
	all  []mesh.State
	at   []time.Time
	wake chan struct{}
}

func (s *states) Update(st mesh.State) ([]mesh.Problem, error) {
	s.mu.Lock()
	s.all, s.at = append(s.all, st), append(s.at, time.Now())
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil, nil
}

// waitFor returns the first State after the first `after` that satisfies
// cond, its index and when it was sent.
func (s *states) waitFor(t *testing.T, after int, what string, cond func(mesh.State) bool) (mesh.State, int, time.Time) {
	t.Helper()
	deadline := time.After(time.Minute) // a bound against hanging, not a latency assertion
	for {
		s.mu.Lock()
		for i := after; i < len(s.all); i++ {
			if cond(s.all[i]) {
				st, at := s.all[i], s.at[i]
				s.mu.Unlock()
				return st, i, at
			}
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no state with %s", what)
		}
	}
}

func (s *states) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.all)
}

func service(st mesh.State, name string) *mesh.Service {
	for i := range st.Services {
		if st.Services[i].Name == name {
			return &st.Services[i]
		}
	}
	return nil
}

func slice(name string, addrs ...string) *discoveryv1.EndpointSlice {
	portName, port := "grpc", int32(8080)
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-x", Labels: map[string]string{
			discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "meshfed-test"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
	}
	for _, a := range addrs {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
	}
	return sl
}

// TestWatcherBuildsIsolatedChangeAtOnceReusingUnchangedServices runs the
// Watcher against a real API server: an isolated EndpointSlice change is
// built long before the (deliberately long) debounce would end, and in the
// State it leads to only that Service's endpoints are new: the others are
// the previous State's, so the xDS server compares them in O(1). A burst
// of changes is coalesced.
func TestWatcherBuildsIsolatedChangeAtOnceReusingUnchangedServices(t *testing.T) {
	sb := sandboxtest.Start(t, "east")
	c := sb.Cluster("east")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	inst, err := installer.New(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	o := deploy.DefaultOptions()
	o.ClusterName = "east"
	if _, err := inst.Install(ctx, o); err != nil {
		t.Fatal(err)
	}
	kc := c.Client()
	const ns, n = "shop", 30
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Labels: map[string]string{LabelMonitoredBy: o.MeshName}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		createService(ctx, t, kc, ns, name, fmt.Sprintf("10.244.0.%d", i+1))
	}

	sink := &states{wake: make(chan struct{}, 1)}
	cfg := DefaultConfig()
	cfg.Client, cfg.Dynamic, cfg.Sink = kc, dynamic.NewForConfigOrDie(c.RESTConfig()), sink
	cfg.MeshName, cfg.Namespace, cfg.ClusterName = o.MeshName, o.Namespace, "east"
	// Long enough that being built before it ends is not a matter of load.
	cfg.Debounce, cfg.MaxDelay = 3*time.Second, 10*time.Second
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	allThere := func(st mesh.State) bool {
		if len(st.Services) != n {
			return false
		}
		for _, s := range st.Services {
			if len(s.Endpoints) != 1 {
				return false
			}
		}
		return true
	}
	before, i, _ := sink.waitFor(t, 0, "every Service with its endpoint", allThere)
	// Permissive mode admits the meshed namespaces only; the state names them.
	if got := before.MeshedNamespaces; len(got) != 1 || got[0] != ns {
		t.Errorf("meshed namespaces = %v, want [%s]", got, ns)
	}
	time.Sleep(cfg.Debounce + 500*time.Millisecond) // quiet

	sl, err := kc.DiscoveryV1().EndpointSlices(ns).Get(ctx, "svc-7-x", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.244.1.1"}})
	changed := time.Now()
	if _, err := kc.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	after, _, at := sink.waitFor(t, i+1, "svc-7's new endpoint", func(st mesh.State) bool {
		s := service(st, "svc-7")
		return s != nil && len(s.Endpoints) == 2
	})
	if d := at.Sub(changed); d >= cfg.Debounce {
		t.Errorf("isolated change built after %v, not before the %v debounce", d, cfg.Debounce)
	}
	for k := range after.Services {
		a, b := &before.Services[k], &after.Services[k]
		shared := &a.Endpoints[0] == &b.Endpoints[0]
		if b.Name == "svc-7" && shared {
			t.Errorf("svc-7 kept its old endpoints slice")
		}
		if b.Name != "svc-7" && !shared {
			t.Errorf("%s: endpoints converted again though nothing of it changed", b.Name)
		}
	}

	// A burst: 10 Services' slices updated back to back are built in a
	// few States (the first change at once, the rest after the debounce),
	// not 10.
	time.Sleep(cfg.Debounce + 500*time.Millisecond)
	from := sink.count()
	for k := 10; k < 20; k++ {
		sl, err := kc.DiscoveryV1().EndpointSlices(ns).Get(ctx, fmt.Sprintf("svc-%d-x", k), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.244.2.%d", k)}})
		if _, err := kc.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sink.waitFor(t, from, "the whole burst", func(st mesh.State) bool {
		for k := 10; k < 20; k++ {
			if s := service(st, fmt.Sprintf("svc-%d", k)); s == nil || len(s.Endpoints) != 2 {
				return false
			}
		}
		return true
	})
	if builds := sink.count() - from; builds > 3 {
		t.Errorf("a burst of 10 changes took %d builds", builds)
	}
}

func createService(ctx context.Context, t *testing.T, kc kubernetes.Interface, ns, name string, addrs ...string) {
	t.Helper()
	if _, err := kc.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone,
			Ports: []corev1.ServicePort{{Name: "grpc", Port: 8080}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(name, addrs...), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
