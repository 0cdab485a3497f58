package federate_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
)

// East is on network "flat". West (its own process) is on net-west and
// its signed catalog lists no gateway; south is on net-south behind the
// gateway 192.0.2.10:15443. Over real gossip, east's bridge hands out
// south's service at the gateway's address and port, and west's with no
// endpoints; east's MeshConfig status says why west is unreachable, an
// Event on it too, and cluster list shows it.
func TestClustersOnOtherNetworksAreReachedThroughTheirGateways(t *testing.T) {
	sb := sandboxtest.Start(t, "east")
	root, gossipKey := newFederationKeys(t)
	east := startMember(t, sb.Cluster("east"), root, gossipKey)
	ensureNamespace(t, east, "bookstore")
	startChildMemberOn(t, "west", "net-west", nil, root, gossipKey, east.fed.Addr(), exportOf("bookstore-w", "10.245.1.5", "10.245.1.6"))
	startChildMemberOn(t, "south", "net-south", []string{"192.0.2.10:15443"}, root, gossipKey, east.fed.Addr(), exportOf("bookstore-s", "10.246.1.5", "10.246.1.6"))

	eventually(t, time.Minute, func() (bool, string) {
		rs := east.bridge.Remote()
		west, south := rs.Remote["west"], rs.Remote["south"]
		if len(west.Services) != 1 || len(south.Services) != 1 {
			return false, fmt.Sprintf("east's remote view: west %d services, south %d", len(west.Services), len(south.Services))
		}
		w, s := west.Services[0], south.Services[0]
		if len(w.Endpoints) != 0 {
			return false, fmt.Sprintf("west, on another network with no gateway, has endpoints %+v", w.Endpoints)
		}
		if len(s.Endpoints) != 1 || s.Endpoints[0].Address != "192.0.2.10" || s.Endpoints[0].TargetPort(s.Ports[0]) != 15443 || s.Endpoints[0].Weight() != 2 {
			return false, fmt.Sprintf("south's endpoints %+v; want its gateway, standing for its 2 ready pods", s.Endpoints)
		}
		return true, ""
	})

	eventually(t, time.Minute, func() (bool, string) {
		u, err := east.dyn.Resource(federate.MeshConfigGVR).Namespace(deploy.DefaultNamespace).Get(testContext(t), deploy.MeshConfigName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		members, _, _ := unstructured.NestedSlice(u.Object, "status", "federation", "members")
		for _, m := range members {
			m := m.(map[string]any)
			if m["name"] == "west" {
				why := fmt.Sprint(m["unreachable"])
				return strings.Contains(why, "no east-west gateway") && m["network"] == "net-west", fmt.Sprintf("west in east's status: %v", m)
			}
		}
		return false, "west is not in east's status"
	})
	eventually(t, time.Minute, func() (bool, string) {
		evs, err := east.kube.CoreV1().Events(deploy.DefaultNamespace).List(testContext(t), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if e.Reason == federate.ReasonClusterUnreachable && e.InvolvedObject.Kind == "MeshConfig" && strings.Contains(e.Message, "west") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("no %s Event on the MeshConfig among %d", federate.ReasonClusterUnreachable, len(evs.Items))
	})
}

// A cluster installed with --network and no --gateway-address publishes
// the addresses its gateway Service's load balancer gives (IPs, at the
// Service's port) as they come and go; a load balancer that gives only a
// host name, which a catalog cannot carry, is reported in the log.
func TestGatewayAddressesComeFromTheLoadBalancer(t *testing.T) {
	sb := sandboxtest.Start(t, "east")
	root, gossipKey := newFederationKeys(t)
	east := startMember(t, sb.Cluster("east"), root, gossipKey)
	ctx := testContext(t)
	svcs := east.kube.CoreV1().Services(deploy.DefaultNamespace)
	svc, err := svcs.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: deploy.GatewayName},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "gw"},
			Ports: []corev1.ServicePort{{Name: "gateway", Port: 15443}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ownGateways := func() string {
		u, err := east.dyn.Resource(federate.MeshConfigGVR).Namespace(deploy.DefaultNamespace).Get(ctx, deploy.MeshConfigName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		members, _, _ := unstructured.NestedSlice(u.Object, "status", "federation", "members")
		for _, m := range members {
			if m := m.(map[string]any); m["name"] == "east" {
				return fmt.Sprint(m["gateways"])
			}
		}
		return "east not in its own status"
	}
	setIngress := func(in ...corev1.LoadBalancerIngress) {
		t.Helper()
		svc.Status.LoadBalancer.Ingress = in
		if svc, err = svcs.UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	setIngress(corev1.LoadBalancerIngress{IP: "192.0.2.21"}, corev1.LoadBalancerIngress{IP: "192.0.2.20"}, corev1.LoadBalancerIngress{Hostname: "gw.example"})
	eventually(t, time.Minute, func() (bool, string) {
		got := ownGateways()
		return got == "[192.0.2.20:15443 192.0.2.21:15443]", "east's own gateways in its status: " + got
	})
	eventually(t, 10*time.Second, func() (bool, string) {
		for _, r := range east.logs.find(map[string]string{"unusable": "gw.example"}) {
			if strings.Contains(r.Msg, "--gateway-address") {
				return true, ""
			}
		}
		return false, "the host name ingress point was not reported"
	})

	setIngress()
	eventually(t, time.Minute, func() (bool, string) {
		got := ownGateways()
		return got == "<nil>" || got == "[]", "east's own gateways once the load balancer has none: " + got
	})
}
