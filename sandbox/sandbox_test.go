package sandbox_test

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/sandbox/sandboxtest"
)

func TestClustersRunDeploymentsAndPublishEndpointSlices(t *testing.T) {
	sb := sandboxtest.Start(t, "a", "b")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Each cluster is its own API server: an object made in one is not in
	// the other.
	a, b := sb.Cluster("a"), sb.Cluster("b")
	if a.RESTConfig().Host == b.RESTConfig().Host {
		t.Fatalf("clusters share an API server at %s", a.RESTConfig().Host)
	}
	mustCreateNamespace(ctx, t, a.Client(), "only-in-a")
	if _, err := b.Client().CoreV1().Namespaces().Get(ctx, "only-in-a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace made in cluster a is visible in b: err=%v", err)
	}

	for _, c := range sb.Clusters() {
		t.Run(c.Name, func(t *testing.T) {
			cs := c.Client()
			mustCreateNamespace(ctx, t, cs, "bookstore")
			labels := map[string]string{"app": "bookstore"}
			replicas := int32(3)
			dep := &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Name: "bookstore", Namespace: "bookstore"},
				Spec: appsv1.DeploymentSpec{
					Replicas: &replicas,
					Selector: &metav1.LabelSelector{MatchLabels: labels},
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: labels},
						Spec: corev1.PodSpec{Containers: []corev1.Container{{
							Name: "bookstore", Image: "meshfed/bookapp:dev",
							Ports: []corev1.ContainerPort{{Name: "grpc", ContainerPort: 14001}},
						}}},
					},
				},
			}
			if _, err := cs.AppsV1().Deployments("bookstore").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "bookstore", Namespace: "bookstore"},
				Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{
					Name: "grpc", Port: 14001, TargetPort: intstr.FromString("grpc"),
				}}},
			}
			if _, err := cs.CoreV1().Services("bookstore").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}

			// The real ReplicaSet controller makes Pods; the sandbox
			// binds them and marks them Running with addresses from the
			// cluster's pod CIDR.
			podIPs := waitFor(ctx, t, "3 running pods", func() ([]string, bool) {
				pods, err := cs.CoreV1().Pods("bookstore").List(ctx, metav1.ListOptions{LabelSelector: "app=bookstore"})
				if err != nil {
					return nil, false
				}
				var ips []string
				for _, p := range pods.Items {
					if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && p.Spec.NodeName == c.NodeName {
						ips = append(ips, p.Status.PodIP)
					}
				}
				sort.Strings(ips)
				return ips, len(ips) == 3
			})
			prefix := netip.MustParsePrefix(c.PodCIDR)
			for _, ip := range podIPs {
				if !prefix.Contains(netip.MustParseAddr(ip)) {
					t.Errorf("pod address %s is outside the cluster's pod CIDR %s", ip, c.PodCIDR)
				}
			}

			// The real EndpointSlice controller publishes those
			// addresses, ready, with the Node's zone.
			waitFor(ctx, t, "an EndpointSlice with the pods' addresses", func() ([]string, bool) {
				slices, err := cs.DiscoveryV1().EndpointSlices("bookstore").List(ctx, metav1.ListOptions{
					LabelSelector: discoveryv1.LabelServiceName + "=bookstore"})
				if err != nil {
					return nil, false
				}
				var ips []string
				for _, s := range slices.Items {
					if s.Labels[discoveryv1.LabelManagedBy] != "endpointslice-controller.k8s.io" {
						continue
					}
					for _, ep := range s.Endpoints {
						if ep.Conditions.Ready != nil && *ep.Conditions.Ready && ep.Zone != nil && *ep.Zone == c.Zone {
							ips = append(ips, ep.Addresses...)
						}
					}
				}
				sort.Strings(ips)
				return ips, fmt.Sprint(ips) == fmt.Sprint(podIPs)
			})

			// Scaling down: the sandbox finishes the deletion a kubelet
			// would, and the slice follows.
			if _, err := cs.AppsV1().Deployments("bookstore").UpdateScale(ctx, "bookstore", &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "bookstore", Namespace: "bookstore"}, Spec: autoscalingv1.ScaleSpec{Replicas: 1}}, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			waitFor(ctx, t, "one pod left", func() (int, bool) {
				pods, err := cs.CoreV1().Pods("bookstore").List(ctx, metav1.ListOptions{LabelSelector: "app=bookstore"})
				return len(pods.Items), err == nil && len(pods.Items) == 1
			})

			// Namespaces really delete: the namespace controller removes
			// their contents, then the namespace.
			if err := cs.CoreV1().Namespaces().Delete(ctx, "bookstore", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			waitFor(ctx, t, "namespace bookstore deleted", func() (error, bool) {
				_, err := cs.CoreV1().Namespaces().Get(ctx, "bookstore", metav1.GetOptions{})
				return err, apierrors.IsNotFound(err)
			})
		})
	}
}

func mustCreateNamespace(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// waitFor polls check until it reports done or ctx ends, then fails the
// test with the last value seen.
func waitFor[T any](ctx context.Context, t *testing.T, what string, check func() (T, bool)) T {
	t.Helper()
	var last T
	for {
		v, ok := check()
		if ok {
			return v
		}
		last = v
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v; last seen: %v", what, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
