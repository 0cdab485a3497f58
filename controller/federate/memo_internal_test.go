package federate

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/mesh"
)

// An export made on one pass is reused only while its ServiceExport,
// Service, EndpointSlices and the Pods its endpoints name are as they
// were: any of them changing, or a Pod appearing that was missing, makes
// it again.
func TestExportMemoFollowsEveryInput(t *testing.T) {
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	b := &Bridge{pods: corelisters.NewPodLister(pods)}
	settings := mesh.Settings{ClusterName: "west", Network: "flat", TrustDomain: "meshfed.local"}
	se := &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "bookstore", Name: "bookstore", ResourceVersion: "1"}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "bookstore", Name: "bookstore", ResourceVersion: "2"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{{Name: "grpc", Port: 14001}}}}
	ready, port, name := true, int32(14001), "grpc"
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "bookstore", Name: "bookstore-1", ResourceVersion: "3",
		Labels: map[string]string{discoveryv1.LabelServiceName: "bookstore"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "bookstore", Name: "bookstore-1"}}}}
	slices := []*discoveryv1.EndpointSlice{slice}

	m := b.exportFrom(settings, se, svc, slices)
	if m.invalid != "" || len(m.exp.Endpoints) != 1 || m.exp.Endpoints[0].Identity != "" {
		t.Fatalf("export before its Pod is known: invalid %q, endpoints %+v", m.invalid, m.exp.Endpoints)
	}
	if !m.current(b, se, svc, slices) {
		t.Fatal("nothing changed, yet the export is made again")
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bookstore", Name: "bookstore-1", ResourceVersion: "4"},
		Spec: corev1.PodSpec{ServiceAccountName: "bookstore"}}
	if err := pods.Add(pod); err != nil {
		t.Fatal(err)
	}
	if m.current(b, se, svc, slices) {
		t.Fatal("the endpoint's Pod appeared, yet the export without its identity is reused")
	}
	m = b.exportFrom(settings, se, svc, slices)
	if id := m.exp.Endpoints[0].Identity; id != "spiffe://meshfed.local/ns/bookstore/sa/bookstore" {
		t.Fatalf("identity %q once the Pod is known", id)
	}
	changed := func(what string, se *mcsv1beta1.ServiceExport, svc *corev1.Service, slices []*discoveryv1.EndpointSlice) {
		t.Helper()
		if m.current(b, se, svc, slices) {
			t.Errorf("%s changed, yet the export is reused", what)
		}
	}
	se2 := se.DeepCopy()
	se2.ResourceVersion = "5"
	changed("the ServiceExport", se2, svc, slices)
	svc2 := svc.DeepCopy()
	svc2.ResourceVersion = "6"
	changed("the Service", se, svc2, slices)
	slice2 := slice.DeepCopy()
	slice2.ResourceVersion = "7"
	changed("an EndpointSlice", se, svc, []*discoveryv1.EndpointSlice{slice2})
	changed("the EndpointSlices (one more)", se, svc, []*discoveryv1.EndpointSlice{slice, slice2})
	pod2 := pod.DeepCopy()
	pod2.Spec.ServiceAccountName = "other"
	if err := pods.Update(pod2); err != nil {
		t.Fatal(err)
	}
	changed("the Pod's ServiceAccount", se, svc, slices)
	var none *exportMemo
	if none.current(b, se, svc, slices) {
		t.Error("no export made yet counts as current")
	}
}
