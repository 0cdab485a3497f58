package deploy

import (
	"fmt"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
)

// The east-west gateway `meshfed install --network` adds: an Envoy
// Deployment (two replicas, a PodDisruptionBudget) under ServiceAccount
// GatewayName, whose bootstrap (a ConfigMap) points at the controller's ADS
// over mTLS with the gateway's own SVID, which meshfed agent keeps fresh
// beside it; and a Service on generate.GatewayPort that exposes it to the
// other networks (docs/gateway.md).

// Gateway defaults.
const (
	DefaultEnvoyImage         = "envoyproxy/envoy:v1.34.1"
	DefaultGatewayServiceType = corev1.ServiceTypeLoadBalancer
	gatewayCertDir            = "/var/run/meshfed/certs"
	gatewayConfigDir          = "/etc/meshfed"
	gatewayBootstrapFile      = "envoy.json"
)

// AgentImage is the image meshfed agent runs from: the meshfed CLI's.
func AgentImage() string { return "meshfed/meshfed:" + Version }

// gatewayObjects returns the gateway's objects for o (o.Network set).
func gatewayObjects(o Options, meta func(name, ns string) metav1.ObjectMeta, labels map[string]string) ([]runtime.Object, error) {
	bo := generate.GatewayBootstrapOptions{
		ControllerHost: ControllerName + "." + o.Namespace + ".svc", XDSPort: PortXDS,
		ControllerID: mesh.NewIdentity(o.TrustDomain, o.Namespace, ControllerName),
		CertDir:      gatewayCertDir, SDSDir: gatewayConfigDir,
	}
	boot, err := generate.StableJSON(generate.GatewayBootstrap(bo), "  ")
	if err != nil {
		return nil, fmt.Errorf("gateway bootstrap: %w", err)
	}
	sds, err := generate.SDSFiles(bo, "certificate.pem", "private_key.pem", "ca_certificate.pem")
	if err != nil {
		return nil, err
	}
	svidJSON, bundleJSON := string(sds[generate.GatewaySVIDFile]), string(sds[generate.GatewayBundleFile])

	podLabels := map[string]string{LabelName: GatewayName, LabelMeshName: o.MeshName}
	sa := &corev1.ServiceAccount{TypeMeta: tm("v1", "ServiceAccount"), ObjectMeta: meta(GatewayName, o.Namespace)}
	cm := &corev1.ConfigMap{TypeMeta: tm("v1", "ConfigMap"), ObjectMeta: meta(GatewayName, o.Namespace), Data: map[string]string{
		gatewayBootstrapFile: string(boot), generate.GatewaySVIDFile: svidJSON, generate.GatewayBundleFile: bundleJSON,
	}}
	replicas, always, nonRoot := int32(2), corev1.ContainerRestartPolicyAlways, true
	expire := int64(3600)
	dep := &appsv1.Deployment{
		TypeMeta:   tm("apps/v1", "Deployment"),
		ObjectMeta: meta(GatewayName, o.Namespace),
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: podLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: mergeLabels(podLabels, labels)},
				Spec: corev1.PodSpec{
					ServiceAccountName: GatewayName,
					SecurityContext:    &corev1.PodSecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: ptr(int64(65532))},
					// meshfed agent, a native sidecar, has the SVID before
					// Envoy starts and renews it while it runs.
					InitContainers: []corev1.Container{{
						Name: "meshfed-agent", Image: AgentImage(), RestartPolicy: &always,
						Args: []string{"agent",
							fmt.Sprintf("--issuer-address=%s.%s.svc:%d", ControllerName, o.Namespace, PortIssuer),
							"--issuer-id=" + string(bo.ControllerID),
							"--token-file=/var/run/secrets/meshfed/token",
							"--bundle-file=/var/run/meshfed-root/ca.crt",
							"--out-dir=" + gatewayCertDir,
						},
						// Envoy starts once the SVID is written.
						StartupProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"meshfed", "agent", "ready", "--out-dir=" + gatewayCertDir}}},
							PeriodSeconds: 1, FailureThreshold: 60,
						},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "certs", MountPath: gatewayCertDir},
							{Name: "token", MountPath: "/var/run/secrets/meshfed", ReadOnly: true},
							{Name: "root", MountPath: "/var/run/meshfed-root", ReadOnly: true},
						},
					}},
					Containers: []corev1.Container{{
						Name: "envoy", Image: DefaultEnvoyImage,
						Args:  []string{"-c", filepath.Join(gatewayConfigDir, gatewayBootstrapFile), "--log-level", "warn"},
						Ports: []corev1.ContainerPort{{Name: "gateway", ContainerPort: generate.GatewayPort}},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "certs", MountPath: gatewayCertDir, ReadOnly: true},
							{Name: "config", MountPath: gatewayConfigDir, ReadOnly: true},
						},
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
							Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "certs", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
						{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: GatewayName}}}},
						{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{
							ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "meshfed", ExpirationSeconds: &expire, Path: "token"}}}}}},
						// The roots the mesh trusts, which meshfed-controller
						// publishes in its namespace (a cluster that joined a
						// federation holds no root Secret; during a rotation
						// the bundle holds both roots).
						{Name: "root", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: BundleConfigMapName}}}},
					},
				},
			},
		},
	}
	minAvailable := intstr.FromInt32(1)
	pdb := &policyv1.PodDisruptionBudget{
		TypeMeta:   tm("policy/v1", "PodDisruptionBudget"),
		ObjectMeta: meta(GatewayName, o.Namespace),
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvailable, Selector: &metav1.LabelSelector{MatchLabels: podLabels}},
	}
	svc := &corev1.Service{
		TypeMeta:   tm("v1", "Service"),
		ObjectMeta: meta(GatewayName, o.Namespace),
		Spec: corev1.ServiceSpec{Type: o.GatewayServiceType, Selector: podLabels, Ports: []corev1.ServicePort{{
			Name: "gateway", Port: generate.GatewayPort, TargetPort: intstr.FromString("gateway")}}},
	}
	return []runtime.Object{sa, cm, dep, pdb, svc}, nil
}
