package kube

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshfed/meshfed/mesh"
)

func obj(kind, ns, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"kind": kind, "metadata": map[string]any{"namespace": ns, "name": name}, "spec": spec,
	}}
}

func TestTrafficTargetFromReadsOSMBookstorePolicy(t *testing.T) {
	tt, err := TrafficTargetFrom("meshfed.local", obj("TrafficTarget", "bookstore", "bookbuyer-access-bookstore", map[string]any{
		"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": "bookstore"},
		"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"}},
		"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "bookstore-service-routes", "matches": []any{"buy-a-book"}}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if tt.Destination != "spiffe://meshfed.local/ns/bookstore/sa/bookstore" ||
		len(tt.Sources) != 1 || tt.Sources[0] != "spiffe://meshfed.local/ns/bookbuyer/sa/bookbuyer" ||
		len(tt.Rules) != 1 || tt.Rules[0].Kind != mesh.KindHTTPRouteGroup || tt.Rules[0].Matches[0] != "buy-a-book" {
		t.Fatalf("got %+v", tt)
	}
}

func TestTrafficTargetFromRefusesNonServiceAccountSources(t *testing.T) {
	_, err := TrafficTargetFrom("meshfed.local", obj("TrafficTarget", "bookstore", "t", map[string]any{
		"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore"},
		"sources":     []any{map[string]any{"kind": "Group", "name": "everyone"}},
	}))
	if !errors.Is(err, ErrConversion) {
		t.Fatalf("err = %v, want ErrConversion", err)
	}
}

func TestTrafficSplitFromAcceptsFQDNRootService(t *testing.T) {
	ts, err := TrafficSplitFrom(obj("TrafficSplit", "bookstore", "bookstore-split", map[string]any{
		"service":  "bookstore.bookstore.svc.cluster.local",
		"backends": []any{map[string]any{"service": "bookstore-v1", "weight": int64(80)}, map[string]any{"service": "bookstore-v2", "weight": int64(20)}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if ts.Service != "bookstore" || len(ts.Backends) != 2 || ts.Backends[0].Weight != 80 || ts.Backends[1].Service != "bookstore-v2" {
		t.Fatalf("got %+v", ts)
	}
}

func TestTCPRouteFromRefusesOutOfRangePorts(t *testing.T) {
	_, err := TCPRouteFrom(obj("TCPRoute", "ns", "r", map[string]any{"matches": map[string]any{"ports": []any{int64(70000)}}}))
	if !errors.Is(err, ErrConversion) {
		t.Fatalf("err = %v, want ErrConversion", err)
	}
}

func TestServiceFromTakesIdentityFromPodsAndPortsFromSlices(t *testing.T) {
	ready, notReady := true, false
	name, port, zone := "grpc", int32(14001), "z1"
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "bookstore", Name: "bookstore"}, Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Name: "grpc", Port: 14001, TargetPort: intstr.FromString("grpc")}},
	}}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "bookstore", Name: "bookstore-abc"},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.1.11"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, Zone: &zone,
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "bookstore-v1-x"}},
			{Addresses: []string{"10.244.1.10"}, Conditions: discoveryv1.EndpointConditions{Ready: &notReady}},
		},
	}
	settings := mesh.Settings{ClusterName: "east", TrustDomain: "meshfed.local", Network: "default"}
	got, err := ServiceFrom(settings, svc, []*discoveryv1.EndpointSlice{slice}, func(ns, n string) (PodInfo, bool) {
		return PodInfo{ServiceAccount: "bookstore"}, ns == "bookstore" && n == "bookstore-v1-x"
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Ports) != 1 || got.Ports[0].Protocol != mesh.ProtocolGRPC || got.Ports[0].TargetPort != 0 {
		t.Fatalf("ports %+v", got.Ports)
	}
	if len(got.Endpoints) != 2 || got.Endpoints[0].Address != "10.244.1.10" || got.Endpoints[0].Ready {
		t.Fatalf("endpoints not sorted or readiness lost: %+v", got.Endpoints)
	}
	e := got.Endpoints[1]
	if !e.Ready || e.Identity != "spiffe://meshfed.local/ns/bookstore/sa/bookstore" || e.TargetPort(got.Ports[0]) != 14001 || e.Locality.Zone != "z1" || e.Cluster != "east" {
		t.Fatalf("endpoint %+v", e)
	}
}

func TestSettingsFromMeshConfigTurnsOnPermissiveMode(t *testing.T) {
	s, err := settingsFrom(mesh.Settings{MeshName: "meshfed", TrustDomain: "meshfed.local"}, obj("MeshConfig", "meshfed-system", "meshfed-mesh-config", map[string]any{
		"clusterName": "east", "trustDomain": "example.org",
		"traffic": map[string]any{"enablePermissiveTrafficPolicyMode": true},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !s.PermissiveTrafficPolicy || s.ClusterName != "east" || s.TrustDomain != "example.org" || s.MeshName != "meshfed" {
		t.Fatalf("got %+v", s)
	}
}
