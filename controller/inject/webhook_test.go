package inject_test

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/controller/inject"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
	"github.com/meshfed/meshfed/trust/ca"
)

// injector is the webhook served over TLS on loopback with a serving
// certificate from a mesh CA, as meshfed-controller serves it.
type injector struct {
	srv  *http.Server
	addr string
	root []byte // PEM of the root the serving certificate chains to
	// reviews counts the reviews served; reviewTime sums their time (ns).
	reviews, reviewTime atomic.Int64
}

func startInjector(t *testing.T, client kubernetes.Interface) *injector {
	return startInjectorFor(t, client)
}

func startInjectorFor(t testing.TB, client kubernetes.Interface) *injector {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("meshfed.local")
	root, err := ca.GenerateRoot(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("east", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := inter.IssueTLS(spiffeid.RequireFromPath(td, "/ns/meshfed-system/sa/meshfed-controller"), time.Hour, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	wh := &inject.Webhook{Config: cfg, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		NamespaceAnnotations: func(ctx context.Context, name string) (map[string]string, error) {
			ns, err := client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return ns.Annotations, nil
		}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inj := &injector{}
	mux := http.NewServeMux()
	mux.Handle(inject.Path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		wh.ServeHTTP(w, r)
		inj.reviews.Add(1)
		inj.reviewTime.Add(int64(time.Since(start)))
	}))
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ServeTLS(lis, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	inj.srv, inj.addr, inj.root = srv, lis.Addr().String(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate.Raw})
	return inj
}

func bookbuyerDeployment() *appsv1.Deployment {
	labels := map[string]string{"app": "bookbuyer"}
	one := int32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "bookbuyer"},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "meshfed/bookapp:v0.1.0"}}}}},
	}
}

func plainPodIn(ns, name string, annotations map[string]string) *corev1.Pod {
	p := plainPod(annotations)
	p.Name, p.Namespace, p.Spec.ServiceAccountName = name, ns, "default"
	return p
}

// The real admission path: the sandbox's kube-apiserver calls the
// injector over TLS for Pods created in meshed namespaces — a
// Deployment's, through its ReplicaSet — and stores them injected; other
// namespaces are not sent; a wrong annotation is refused with a message
// naming it; --dry-run=server returns the injected Pod and stores nothing;
// with the injector down, only meshed namespaces' Pods are refused, saying
// why.
func TestTheAPIServerInjectsThroughTheWebhook(t *testing.T) {
	sb := sandboxtest.Start(t, "east")
	client := sb.Cluster("east").Client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	inj := startInjector(t, client)

	o := deploy.DefaultOptions()
	wh := deploy.InjectorWebhook(o, inj.root)
	// The local API server reaches the injector at its loopback address
	// (in a cluster: the controller's Service, as InjectorWebhook says).
	url := "https://localhost:" + strings.Split(inj.addr, ":")[1] + deploy.InjectorPath
	wh.Webhooks[0].ClientConfig.Service, wh.Webhooks[0].ClientConfig.URL = nil, &url
	if _, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, wh, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "bookbuyer", Labels: map[string]string{deploy.LabelMonitoredBy: o.MeshName},
			Annotations: map[string]string{deploy.AnnotationInjection: "enabled"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The API server may take a moment to see a new webhook.
	var created *corev1.Pod
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, err := client.CoreV1().Pods("bookbuyer").Create(ctx, plainPodIn("bookbuyer", "probe", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		if p.Annotations[inject.AnnotationInjected] != "" || time.Now().After(deadline) {
			created = p
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Run("DryRunReturnsTheInjectedPodAndStoresNothing", func(t *testing.T) {
		if len(created.Spec.InitContainers) != 1 || created.Spec.InitContainers[0].Name != inject.AgentContainer {
			t.Fatalf("dry-run Pod not injected: %+v", created.Spec)
		}
		if _, err := client.CoreV1().Pods("bookbuyer").Get(ctx, "probe", metav1.GetOptions{}); err == nil {
			t.Error("the dry-run Pod was stored")
		}
	})
	t.Run("ADeploymentsPodIsStoredInjected", func(t *testing.T) {
		if _, err := client.AppsV1().Deployments("bookbuyer").Create(ctx, bookbuyerDeployment(), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var pod corev1.Pod
		for deadline := time.Now().Add(time.Minute); ; {
			l, err := client.CoreV1().Pods("bookbuyer").List(ctx, metav1.ListOptions{LabelSelector: "app=bookbuyer"})
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Items) > 0 {
				pod = l.Items[0]
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the Deployment made no Pod within a minute")
			}
			time.Sleep(200 * time.Millisecond)
		}
		if len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Name != inject.AgentContainer || len(pod.Spec.Containers) != 1 {
			t.Fatalf("the ReplicaSet's Pod was stored without its data plane: init %v, containers %v", pod.Spec.InitContainers, pod.Spec.Containers)
		}
		if pod.OwnerReferences[0].Kind != "ReplicaSet" {
			t.Errorf("owner %v", pod.OwnerReferences)
		}
	})
	t.Run("AnEnvoyPodGetsCaptureAgentAndEnvoy", func(t *testing.T) {
		p, err := client.CoreV1().Pods("bookbuyer").Create(ctx, plainPodIn("bookbuyer", "envoy-app", map[string]string{
			inject.AnnotationProxy: inject.ProxyEnvoy, "meshfed.io/outbound-port-exclusion-list": "5432"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range p.Spec.InitContainers {
			names = append(names, c.Name)
		}
		if strings.Join(names, ",") != "meshfed-capture,meshfed-agent,envoy" || !slices.Contains(p.Spec.InitContainers[0].Args, "--exclude-outbound-port=5432") {
			t.Errorf("an Envoy Pod was stored with init containers %v (%v)", names, p.Spec.InitContainers)
		}
	})
	t.Run("OtherNamespacesAreUntouched", func(t *testing.T) {
		p, err := client.CoreV1().Pods("plain").Create(ctx, plainPodIn("plain", "app", map[string]string{deploy.AnnotationInjection: "enabled"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Spec.InitContainers) != 0 || p.Annotations[inject.AnnotationInjected] != "" {
			t.Errorf("a Pod outside the mesh's namespaces was injected: %+v", p.Spec.InitContainers)
		}
	})
	t.Run("AWrongAnnotationIsRefusedNamingIt", func(t *testing.T) {
		_, err := client.CoreV1().Pods("bookbuyer").Create(ctx, plainPodIn("bookbuyer", "odd", map[string]string{inject.AnnotationProxy: "sidecarless"}), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), inject.AnnotationProxy) {
			t.Errorf("a Pod with %s: sidecarless: %v, want a refusal naming the annotation", inject.AnnotationProxy, err)
		}
	})
	t.Run("InjectorDownRefusesOnlyMeshedPods", func(t *testing.T) {
		if err := inj.srv.Close(); err != nil {
			t.Fatal(err)
		}
		_, err := client.CoreV1().Pods("bookbuyer").Create(ctx, plainPodIn("bookbuyer", "while-down", nil), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "inject.meshfed.io") {
			t.Errorf("with the injector down, a meshed Pod: %v, want a refusal naming the webhook", err)
		} else {
			t.Logf("refused as users see it: %v", err)
		}
		if _, err := client.CoreV1().Pods("plain").Create(ctx, plainPodIn("plain", "while-down", nil), metav1.CreateOptions{}); err != nil {
			t.Errorf("with the injector down, a Pod outside the mesh: %v", err)
		}
	})
}

// BenchmarkPodCreationThroughTheInjector creates 100 Pods in a meshed
// namespace through a real kube-apiserver that calls the injector over
// TLS, and 100 in a namespace outside the mesh (not sent to it), and
// reports each Pod creation's latency as the client sees it (p50, p99) and
// the injector's own time per review.
func BenchmarkPodCreationThroughTheInjector(b *testing.B) {
	sb := sandboxtest.Start(b, "east")
	// No client-side rate limit: the figures are the API server's and the
	// injector's, not client-go's default 5 requests per second.
	rc := sb.Cluster("east").RESTConfig()
	rc.QPS, rc.Burst = 1000, 1000
	client := kubernetes.NewForConfigOrDie(rc)
	ctx := context.Background()
	inj := startInjectorFor(b, client)
	o := deploy.DefaultOptions()
	wh := deploy.InjectorWebhook(o, inj.root)
	url := "https://localhost:" + strings.Split(inj.addr, ":")[1] + deploy.InjectorPath
	wh.Webhooks[0].ClientConfig.Service, wh.Webhooks[0].ClientConfig.URL = nil, &url
	if _, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, wh, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "meshed", Labels: map[string]string{deploy.LabelMonitoredBy: o.MeshName},
			Annotations: map[string]string{deploy.AnnotationInjection: "enabled"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	// Wait until the API server sends Pods to the injector.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		p, err := client.CoreV1().Pods("meshed").Create(ctx, plainPodIn("meshed", "probe", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			b.Fatal(err)
		}
		if p.Annotations[inject.AnnotationInjected] != "" {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the API server does not call the injector")
		}
	}
	const pods = 100
	measure := func(ns string, run int) []time.Duration {
		var out []time.Duration
		for i := range pods {
			start := time.Now()
			p, err := client.CoreV1().Pods(ns).Create(ctx, plainPodIn(ns, fmt.Sprintf("p-%d-%d", run, i), nil), metav1.CreateOptions{})
			if err != nil {
				b.Fatal(err)
			}
			out = append(out, time.Since(start))
			if ns == "meshed" && p.Annotations[inject.AnnotationInjected] == "" {
				b.Fatalf("Pod %s was not injected", p.Name)
			}
		}
		slices.Sort(out)
		return out
	}
	b.ResetTimer()
	var meshed, plain []time.Duration
	for run := range b.N {
		inj.reviews.Store(0)
		inj.reviewTime.Store(0)
		meshed = measure("meshed", run)
		plain = measure("plain", run)
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(meshed[pods/2]), "meshed-p50-ms")
	b.ReportMetric(ms(meshed[pods*99/100]), "meshed-p99-ms")
	b.ReportMetric(ms(plain[pods/2]), "plain-p50-ms")
	b.ReportMetric(ms(plain[pods*99/100]), "plain-p99-ms")
	if n := inj.reviews.Load(); n > 0 {
		b.ReportMetric(float64(inj.reviewTime.Load())/float64(n)/1000, "review-µs")
	}
	b.ReportMetric(0, "ns/op")
}
