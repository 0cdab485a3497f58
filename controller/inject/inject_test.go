package inject_test

import (
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/capture"
	"github.com/meshfed/meshfed/controller/inject"
	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/deploy"
)

var cfg = inject.Config{Namespace: "meshfed-system", TrustDomain: "meshfed.local", AgentImage: "meshfed/meshfed:v0.1.0"}

func plainPod(annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "bookbuyer-1", Namespace: "bookbuyer", Annotations: annotations},
		Spec:       corev1.PodSpec{ServiceAccountName: "bookbuyer", Containers: []corev1.Container{{Name: "app", Image: "meshfed/bookapp:v0.1.0"}}},
	}
}

var enabled = map[string]string{deploy.AnnotationInjection: "enabled"}

// OSM's rules: the namespace decides, the Pod's annotation overrides it
// either way, hostNetwork never; wrong values are refused naming the
// annotation.
func TestDecide(t *testing.T) {
	host := plainPod(nil)
	host.Spec.HostNetwork = true
	for _, tc := range []struct {
		name    string
		ns      map[string]string
		pod     *corev1.Pod
		inject  bool
		wantErr string
	}{
		{"namespace enables", enabled, plainPod(nil), true, ""},
		{"namespace silent", nil, plainPod(nil), false, ""},
		{"namespace disables", map[string]string{deploy.AnnotationInjection: "disabled"}, plainPod(nil), false, ""},
		{"pod enables in a silent namespace", nil, plainPod(map[string]string{deploy.AnnotationInjection: "enabled"}), true, ""},
		{"pod disables in an enabled namespace", enabled, plainPod(map[string]string{deploy.AnnotationInjection: "disabled"}), false, ""},
		{"hostNetwork", enabled, host, false, ""},
		{"already injected", enabled, inject.Mutate(plainPod(nil), cfg), false, ""},
		{"proxyless asked for", enabled, plainPod(map[string]string{inject.AnnotationProxy: "proxyless"}), true, ""},
		{"unknown data plane", enabled, plainPod(map[string]string{inject.AnnotationProxy: "linkerd"}), false, inject.AnnotationProxy},
		{"envoy asked for", enabled, plainPod(map[string]string{inject.AnnotationProxy: "envoy"}), true, ""},
		{"bad pod annotation", enabled, plainPod(map[string]string{deploy.AnnotationInjection: "yes"}), false, deploy.AnnotationInjection},
		{"bad namespace annotation", map[string]string{deploy.AnnotationInjection: "true"}, plainPod(nil), false, "namespace annotation"},
		{"malformed port exclusion", enabled, plainPod(map[string]string{capture.AnnotationOutboundPortExclusions: "5432,postgres"}), false, capture.AnnotationOutboundPortExclusions},
		{"malformed CIDR exclusion", enabled, plainPod(map[string]string{capture.AnnotationOutboundCIDRExclusions: "10.0.0.0/33"}), false, capture.AnnotationOutboundCIDRExclusions},
	} {
		d, err := inject.Decide(tc.ns, tc.pod)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want one saying %q", tc.name, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case d.Inject != tc.inject:
			t.Errorf("%s: inject %v (%s), want %v", tc.name, d.Inject, d.Reason, tc.inject)
		}
	}
}

// The proxyless data plane: the agent as a native sidecar with the
// issuer's SPIFFE ID, the token, bundle and shared volumes, and grpc-go's
// environment on the app; the input is not changed, and the user's own
// settings are kept.
func TestMutateAddsTheProxylessDataPlane(t *testing.T) {
	pod := plainPod(nil)
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "GRPC_XDS_BOOTSTRAP", Value: "/custom.json"}}
	before := pod.DeepCopy()
	out := inject.Mutate(pod, cfg)
	if !equality.Semantic.DeepEqual(pod, before) {
		t.Error("Mutate changed its input")
	}
	if len(out.Spec.InitContainers) != 1 {
		t.Fatalf("init containers %v", out.Spec.InitContainers)
	}
	agent := out.Spec.InitContainers[0]
	if agent.Name != inject.AgentContainer || agent.RestartPolicy == nil || *agent.RestartPolicy != corev1.ContainerRestartPolicyAlways || agent.StartupProbe == nil {
		t.Errorf("agent is not a native sidecar with a startup probe: %+v", agent)
	}
	args := strings.Join(agent.Args, " ")
	for _, want := range []string{"--issuer-id=spiffe://meshfed.local/ns/meshfed-system/sa/meshfed-controller",
		"--issuer-address=meshfed-controller.meshfed-system.svc:15129", "--xds-address=meshfed-controller.meshfed-system.svc:15128", "--xds-sni"} {
		if !strings.Contains(args, want) {
			t.Errorf("agent args %q lack %s", args, want)
		}
	}
	env := map[string]string{}
	for _, e := range out.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env["GRPC_XDS_BOOTSTRAP"] != "/custom.json" || env["GRPC_EXPERIMENTAL_XDS_SNI"] != "true" || env["MESHFED_CERT_DIR"] == "" {
		t.Errorf("app environment %v", env)
	}
	var token bool
	for _, v := range out.Spec.Volumes {
		if v.Projected != nil && len(v.Projected.Sources) == 1 && v.Projected.Sources[0].ServiceAccountToken != nil {
			token = v.Projected.Sources[0].ServiceAccountToken.Audience == "meshfed"
		}
	}
	if !token || len(out.Spec.Volumes) != 3 {
		t.Errorf("volumes %+v: want the shared dir, the meshfed-audience token and the bundle", out.Spec.Volumes)
	}
	if out.Annotations[inject.AnnotationInjected] != inject.ProxyProxyless {
		t.Errorf("annotations %v", out.Annotations)
	}
}

// The Envoy data plane: the capture init container (NET_ADMIN, the Pod's
// exclusions), the agent writing Envoy's SDS files, Envoy with a valid
// bootstrap, both as the proxy's user so their own traffic passes the
// capture; the app containers unchanged.
func TestMutateEnvoyAddsTheEnvoyDataPlane(t *testing.T) {
	pod := plainPod(map[string]string{inject.AnnotationProxy: "envoy"})
	cc := capture.DefaultConfig()
	cc.ExcludeOutboundPorts = []int{5432}
	out, err := inject.MutateEnvoy(pod, cfg, cc)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range out.Spec.InitContainers {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "meshfed-capture,meshfed-agent,envoy" {
		t.Fatalf("init containers %v", names)
	}
	capt, agent, envoy := out.Spec.InitContainers[0], out.Spec.InitContainers[1], out.Spec.InitContainers[2]
	if capt.RestartPolicy != nil || !slices.Contains(capt.SecurityContext.Capabilities.Add, "NET_ADMIN") || !slices.Contains(capt.Args, "--exclude-outbound-port=5432") {
		t.Errorf("capture container %+v", capt)
	}
	for _, c := range []corev1.Container{agent, envoy} {
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways || *c.SecurityContext.RunAsUser != int64(capture.DefaultProxyUID) {
			t.Errorf("%s is not a native sidecar running as the proxy's user: %+v", c.Name, c)
		}
	}
	if capture.DefaultOutboundPort != generate.SidecarOutboundPort || capture.DefaultInboundPort != generate.SidecarInboundPort {
		t.Error("the capture rules and the sidecar's listeners disagree on ports")
	}
	b := &bootstrapv3.Bootstrap{}
	if len(envoy.Args) < 2 || envoy.Args[0] != "--config-yaml" {
		t.Fatalf("envoy args %v", envoy.Args)
	}
	if err := protojson.Unmarshal([]byte(envoy.Args[1]), b); err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Errorf("envoy's bootstrap: %v", err)
	}
	if !equality.Semantic.DeepEqual(out.Spec.Containers, pod.Spec.Containers) {
		t.Error("the app containers changed")
	}
	if out.Annotations[inject.AnnotationInjected] != inject.ProxyEnvoy {
		t.Errorf("annotations %v", out.Annotations)
	}
}
