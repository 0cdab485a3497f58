package kube

import (
	"fmt"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/mesh"
)

// world is an in-memory cluster of Services with one EndpointSlice each,
// the inputs a serviceCache reads.
type world struct {
	svcs   []*corev1.Service
	slices map[string][]*discoveryv1.EndpointSlice // "ns/name"
	pods   map[string]string                       // "ns/name" → ServiceAccount
	rv     int
}

func newWorld(n int) *world {
	w := &world{slices: map[string][]*discoveryv1.EndpointSlice{}, pods: map[string]string{}}
	for i := range n {
		ns, name := fmt.Sprintf("ns-%d", i%10), fmt.Sprintf("svc-%d", i)
		w.svcs = append(w.svcs, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: w.next()},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "grpc", Port: 8080}}},
		})
		pod := name + "-pod"
		w.pods[ns+"/"+pod] = "sa-" + name
		w.setEndpoints(ns, name, pod, fmt.Sprintf("10.244.%d.%d", i/250, i%250))
	}
	return w
}

func (w *world) next() string { w.rv++; return strconv.Itoa(w.rv) }

// setEndpoints replaces the slice of Service ns/name (a new resourceVersion).
func (w *world) setEndpoints(ns, name, pod string, addrs ...string) {
	portName, port := "grpc", int32(8080)
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-x", ResourceVersion: w.next(),
			Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
	}
	for _, a := range addrs {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: pod}})
	}
	w.slices[ns+"/"+name] = []*discoveryv1.EndpointSlice{sl}
}

func (w *world) inputs() serviceInputs {
	return serviceInputs{
		slices: func(ns, name string) []*discoveryv1.EndpointSlice { return w.slices[ns+"/"+name] },
		pods: func(ns, name string) (PodInfo, bool) {
			sa, ok := w.pods[ns+"/"+name]
			return PodInfo{ServiceAccount: sa}, ok
		},
	}
}

var testSettings = mesh.Settings{ClusterName: "east", TrustDomain: "meshfed.local", Network: "default"}

func sameSlice[T any](a, b []T) bool { return len(a) > 0 && len(a) == len(b) && &a[0] == &b[0] }

func TestOneSliceChangeConvertsOnlyItsService(t *testing.T) {
	w := newWorld(1000)
	c := newServiceCache()
	before, problems := c.build(testSettings, w.svcs, w.inputs(), changes{all: true})
	if len(before) != 1000 || len(problems) != 0 {
		t.Fatalf("first build: %d services, problems %v", len(before), problems)
	}

	w.setEndpoints("ns-7", "svc-7", "svc-7-pod", "10.244.0.7", "10.244.99.1")
	var ch changes
	ch.markService("ns-7/svc-7")
	after, _ := c.build(testSettings, w.svcs, w.inputs(), ch)

	for i := range after {
		a, b := &before[i], &after[i]
		if a.Key() != b.Key() {
			t.Fatalf("service %d: %v then %v", i, a.Key(), b.Key())
		}
		if a.Name == "svc-7" {
			if sameSlice(a.Endpoints, b.Endpoints) || len(b.Endpoints) != 2 || b.Endpoints[1].Address != "10.244.99.1" {
				t.Fatalf("changed service: endpoints %+v", b.Endpoints)
			}
			continue
		}
		if !sameSlice(a.Endpoints, b.Endpoints) || !sameSlice(a.Ports, b.Ports) {
			t.Fatalf("unchanged service %v was converted again", b.Key())
		}
	}
}

func TestPodServiceAccountChangeConvertsOnlyServicesNamingIt(t *testing.T) {
	w := newWorld(20)
	c := newServiceCache()
	before, _ := c.build(testSettings, w.svcs, w.inputs(), changes{all: true})

	w.pods["ns-3/svc-3-pod"] = "other"
	after, _ := c.build(testSettings, w.svcs, w.inputs(), changes{pods: []string{"ns-3/svc-3-pod"}})
	for i := range after {
		a, b := &before[i], &after[i]
		if b.Name == "svc-3" {
			if b.Endpoints[0].Identity != "spiffe://meshfed.local/ns/ns-3/sa/other" {
				t.Fatalf("identity %q after the Pod's ServiceAccount changed", b.Endpoints[0].Identity)
			}
			continue
		}
		if !sameSlice(a.Endpoints, b.Endpoints) {
			t.Fatalf("%v converted again for another Service's Pod", b.Key())
		}
	}
}

func TestCacheFollowsServicesAddedRemovedAndSettings(t *testing.T) {
	w := newWorld(5)
	c := newServiceCache()
	c.build(testSettings, w.svcs, w.inputs(), changes{all: true})

	// svc-2 removed, its entry forgotten.
	svcs := append(append([]*corev1.Service(nil), w.svcs[:2]...), w.svcs[3:]...)
	got, _ := c.build(testSettings, svcs, w.inputs(), changes{})
	if len(got) != 4 || len(c.entries) != 4 {
		t.Fatalf("after removal: %d services, %d entries", len(got), len(c.entries))
	}
	if _, ok := c.byPod["ns-2/svc-2-pod"]; ok {
		t.Fatal("removed service's Pod still indexed")
	}

	// A new Service without ports is a problem, reported on every build.
	bad := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns-0", Name: "bad", ResourceVersion: w.next()}}
	svcs = append(svcs, bad)
	for range 2 {
		_, problems := c.build(testSettings, svcs, w.inputs(), changes{})
		if len(problems) != 1 || problems[0].Name != "bad" {
			t.Fatalf("problems %v", problems)
		}
	}

	// Another cluster name converts everything again.
	other := testSettings
	other.ClusterName = "west"
	got, _ = c.build(other, svcs, w.inputs(), changes{})
	for _, s := range got {
		if s.Cluster != "west" || s.Endpoints[0].Cluster != "west" {
			t.Fatalf("%v kept cluster %q", s.Key(), s.Cluster)
		}
	}
}

// BenchmarkBuildAfterOneSliceChange is the per-change cost of the services
// part of a build at 10,000 Services.
func BenchmarkBuildAfterOneSliceChange(b *testing.B) {
	w := newWorld(10000)
	c := newServiceCache()
	c.build(testSettings, w.svcs, w.inputs(), changes{all: true})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w.setEndpoints("ns-0", "svc-0", "svc-0-pod", fmt.Sprintf("10.1.%d.%d", i/250%250, i%250))
		var ch changes
		ch.markService("ns-0/svc-0")
		c.build(testSettings, w.svcs, w.inputs(), ch)
	}
}

func TestResyncRepairsAChangeTheHandlersDidNotName(t *testing.T) {
	w := newWorld(3)
	c := newServiceCache()
	c.build(testSettings, w.svcs, w.inputs(), changes{all: true})

	w.setEndpoints("ns-1", "svc-1", "svc-1-pod", "10.9.9.9")
	got, _ := c.build(testSettings, w.svcs, w.inputs(), changes{})
	if got[1].Endpoints[0].Address == "10.9.9.9" {
		t.Fatal("an unnamed Service was looked at; the test no longer tests the repair")
	}
	got, _ = c.build(testSettings, w.svcs, w.inputs(), changes{all: true})
	if got[1].Endpoints[0].Address != "10.9.9.9" {
		t.Fatalf("resync kept %v", got[1].Endpoints)
	}
}
