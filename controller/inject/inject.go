// Package inject decides whether a Pod joins the mesh's data plane and adds
// what it needs, as meshfed-controller's mutating admission webhook does at
// Pod creation (webhook.go): the user's manifests stay plain, an app
// container and a ServiceAccount.
//
// The decision follows Open Service Mesh's rules: the namespace's
// meshfed.io/sidecar-injection annotation, a Pod annotation of the same
// name overriding it either way, hostNetwork Pods never. A Pod that already
// carries meshfed agent is left as it is, so injecting twice changes
// nothing. The data plane is chosen per Pod by meshfed.io/proxy.
//
// Decide and Mutate are pure: no I/O, no clock.
package inject

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshfed/meshfed/capture"
	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/mesh"
)

// Annotations and names a Pod carries.
const (
	// AnnotationProxy chooses the data plane: ProxyProxyless (default) or
	// ProxyEnvoy.
	AnnotationProxy = "meshfed.io/proxy"
	// AnnotationInjected records, on an injected Pod, what was injected.
	AnnotationInjected = "meshfed.io/injected"
	ProxyProxyless     = "proxyless"
	ProxyEnvoy         = "envoy"
	// AgentContainer is meshfed agent's container (a native sidecar).
	AgentContainer = "meshfed-agent"
)

// Paths inside an injected Pod.
const (
	sharedDir  = "/var/run/meshfed"
	certDir    = sharedDir + "/certs"
	bootstrap  = sharedDir + "/bootstrap.json"
	tokenDir   = "/var/run/secrets/meshfed"
	bundleDir  = "/var/run/meshfed-bundle"
	volShared  = "meshfed"
	volToken   = "meshfed-token"
	volBundle  = "meshfed-bundle"
	bundleConf = "meshfed-ca-bundle"
)

// Config is what the injected agent is told.
type Config struct {
	// Namespace is the control plane's; the controller's Service there
	// serves issuing and xDS.
	Namespace   string
	TrustDomain string
	// AgentImage runs meshfed agent (the meshfed image).
	AgentImage string
}

// Decision says whether a Pod is injected, and why.
type Decision struct {
	Inject bool
	Proxy  string // ProxyProxyless or ProxyEnvoy (Inject only)
	Reason string
}

// Decide applies the injection rules to a Pod being created in a namespace
// with nsAnnotations. An error names the annotation that is wrong: the Pod
// is refused with it.
func Decide(nsAnnotations map[string]string, pod *corev1.Pod) (Decision, error) {
	on, why := false, "its namespace does not enable injection"
	switch v := nsAnnotations[deploy.AnnotationInjection]; v {
	case "enabled":
		on, why = true, "its namespace enables injection"
	case "", "disabled":
	default:
		return Decision{}, fmt.Errorf("namespace annotation %s: %q is neither enabled nor disabled", deploy.AnnotationInjection, v)
	}
	switch v := pod.Annotations[deploy.AnnotationInjection]; v {
	case "enabled":
		on, why = true, "the Pod's annotation enables injection"
	case "disabled":
		on, why = false, "the Pod's annotation disables injection"
	case "":
	default:
		return Decision{}, fmt.Errorf("annotation %s: %q is neither enabled nor disabled", deploy.AnnotationInjection, v)
	}
	proxy := pod.Annotations[AnnotationProxy]
	switch proxy {
	case "", ProxyProxyless:
		proxy = ProxyProxyless
	case ProxyEnvoy:
	default:
		return Decision{}, fmt.Errorf("annotation %s: %q is not a data plane: want %s or %s", AnnotationProxy, proxy, ProxyProxyless, ProxyEnvoy)
	}
	if _, err := capture.FromAnnotations(capture.DefaultConfig(), pod.Annotations); err != nil {
		return Decision{}, err
	}
	switch {
	case !on:
		return Decision{Reason: why}, nil
	case pod.Spec.HostNetwork:
		return Decision{Reason: "hostNetwork Pods are never injected"}, nil
	case hasAgent(pod):
		return Decision{Reason: "the Pod already carries " + AgentContainer}, nil
	}
	return Decision{Inject: true, Proxy: proxy, Reason: why}, nil
}

func hasAgent(pod *corev1.Pod) bool {
	named := func(c corev1.Container) bool { return c.Name == AgentContainer }
	return slices.ContainsFunc(pod.Spec.InitContainers, named) || slices.ContainsFunc(pod.Spec.Containers, named)
}

// Mutate returns a copy of pod with the proxyless data plane: meshfed agent
// as a native sidecar (it has the Pod's SVID and the gRPC xDS bootstrap
// before the app starts, and renews the SVID while it runs), the projected
// token it trades for the SVID, the trust bundle, the shared directory,
// and on every app container the environment grpc-go needs.
func Mutate(pod *corev1.Pod, cfg Config) *corev1.Pod {
	out := pod.DeepCopy()
	// The node ID names the Pod to the controller's operators (informational).
	agent := agentContainer(cfg, bootstrap, "--bootstrap="+bootstrap, "--node-id=$(POD_NAMESPACE)/$(POD_NAME)", "--xds-sni")
	out.Spec.InitContainers = append([]corev1.Container{agent}, out.Spec.InitContainers...)
	for i := range out.Spec.Containers {
		c := &out.Spec.Containers[i]
		for _, e := range []corev1.EnvVar{
			{Name: "GRPC_XDS_BOOTSTRAP", Value: bootstrap},
			// grpc-go sends the server names east-west gateways route by
			// only with this set at start (docs/gateway.md).
			{Name: "GRPC_EXPERIMENTAL_XDS_SNI", Value: "true"},
			{Name: "MESHFED_CERT_DIR", Value: certDir},
		} {
			if !slices.ContainsFunc(c.Env, func(x corev1.EnvVar) bool { return x.Name == e.Name }) {
				c.Env = append(c.Env, e)
			}
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == sharedDir }) {
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volShared, MountPath: sharedDir, ReadOnly: true})
		}
	}
	addVolumes(out)
	annotate(out, ProxyProxyless)
	return out
}

// Names and users of the Envoy data plane.
const (
	CaptureContainer = "meshfed-capture"
	EnvoyContainer   = "envoy"
	sdsDir           = sharedDir + "/sds"
)

// MutateEnvoy returns a copy of pod with the Envoy data plane: an init
// container that installs the traffic-capture rules cc (meshfed capture,
// NET_ADMIN), meshfed agent as a native sidecar that keeps the Pod's SVID
// and writes the SDS files Envoy's bootstrap reads it from, and Envoy as a
// native sidecar whose bootstrap (generate.SidecarBootstrap, passed inline)
// points at the controller's ADS over mTLS with that SVID. The agent and
// Envoy run as cc.ProxyUID, so their own connections are not captured.
// The app containers are not changed.
func MutateEnvoy(pod *corev1.Pod, cfg Config, cc capture.Config) (*corev1.Pod, error) {
	if err := cc.Validate(); err != nil {
		return nil, err
	}
	out := pod.DeepCopy()
	controller := fmt.Sprintf("%s.%s.svc", deploy.ControllerName, cfg.Namespace)
	boot, err := generate.StableJSON(generate.SidecarBootstrap(generate.GatewayBootstrapOptions{
		ControllerHost: controller, XDSPort: deploy.PortXDS,
		ControllerID: mesh.NewIdentity(cfg.TrustDomain, cfg.Namespace, deploy.ControllerName),
		CertDir:      certDir, SDSDir: sdsDir,
	}), "")
	if err != nil {
		return nil, err
	}
	args := []string{"capture", fmt.Sprintf("--proxy-uid=%d", cc.ProxyUID),
		fmt.Sprintf("--outbound-port=%d", cc.OutboundPort), fmt.Sprintf("--inbound-port=%d", cc.InboundPort)}
	for _, p := range cc.ExcludeOutboundPorts {
		args = append(args, fmt.Sprintf("--exclude-outbound-port=%d", p))
	}
	for _, p := range cc.ExcludeOutboundCIDRs {
		args = append(args, "--exclude-outbound-cidr="+p.String())
	}
	for _, p := range cc.ExcludeInboundPorts {
		args = append(args, fmt.Sprintf("--exclude-inbound-port=%d", p))
	}
	root, no, proxyUID := int64(0), false, int64(cc.ProxyUID)
	captureC := corev1.Container{
		Name: CaptureContainer, Image: cfg.AgentImage, Args: args,
		SecurityContext: &corev1.SecurityContext{RunAsUser: &root, RunAsNonRoot: &no, Capabilities: &corev1.Capabilities{
			Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}}},
	}
	agent := agentContainer(cfg, sdsDir+"/"+generate.GatewaySVIDFile, "--envoy-sds-dir="+sdsDir)
	agent.SecurityContext = &corev1.SecurityContext{RunAsUser: &proxyUID}
	always := corev1.ContainerRestartPolicyAlways
	envoy := corev1.Container{
		Name: EnvoyContainer, Image: deploy.DefaultEnvoyImage, RestartPolicy: &always,
		Args:            []string{"--config-yaml", string(boot), "--log-level", "warn"},
		SecurityContext: &corev1.SecurityContext{RunAsUser: &proxyUID},
		VolumeMounts:    []corev1.VolumeMount{{Name: volShared, MountPath: sharedDir, ReadOnly: true}},
	}
	out.Spec.InitContainers = append([]corev1.Container{captureC, agent, envoy}, out.Spec.InitContainers...)
	addVolumes(out)
	annotate(out, ProxyEnvoy)
	return out, nil
}

// agentContainer is meshfed agent as a native sidecar whose startup probe
// waits for the SVID and ready (a file it writes), with extra arguments.
func agentContainer(cfg Config, ready string, extra ...string) corev1.Container {
	always := corev1.ContainerRestartPolicyAlways
	controller := fmt.Sprintf("%s.%s.svc", deploy.ControllerName, cfg.Namespace)
	return corev1.Container{
		Name: AgentContainer, Image: cfg.AgentImage, RestartPolicy: &always,
		Args: append([]string{"agent",
			fmt.Sprintf("--issuer-address=%s:%d", controller, deploy.PortIssuer),
			"--issuer-id=" + string(mesh.NewIdentity(cfg.TrustDomain, cfg.Namespace, deploy.ControllerName)),
			"--trust-domain=" + cfg.TrustDomain,
			fmt.Sprintf("--xds-address=%s:%d", controller, deploy.PortXDS),
			"--token-file=" + tokenDir + "/token",
			"--bundle-file=" + bundleDir + "/ca.crt",
			"--out-dir=" + certDir,
		}, extra...),
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		},
		// The next containers start once the SVID (and ready) are written.
		StartupProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"meshfed", "agent", "ready", "--out-dir=" + certDir, "--bootstrap=" + ready}}},
			PeriodSeconds: 1, FailureThreshold: 60,
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: volShared, MountPath: sharedDir},
			{Name: volToken, MountPath: tokenDir, ReadOnly: true},
			{Name: volBundle, MountPath: bundleDir, ReadOnly: true},
		},
	}
}

// addVolumes adds the shared directory, the token and the trust bundle,
// keeping volumes of those names the Pod has.
func addVolumes(out *corev1.Pod) {
	expire, optional := int64(3600), true
	for _, v := range []corev1.Volume{
		{Name: volShared, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: volToken, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{
			ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "meshfed", ExpirationSeconds: &expire, Path: "token"}}}}}},
		// The public roots meshfed-controller keeps in every meshed namespace.
		{Name: volBundle, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: bundleConf}, Optional: &optional}}},
	} {
		if !slices.ContainsFunc(out.Spec.Volumes, func(x corev1.Volume) bool { return x.Name == v.Name }) {
			out.Spec.Volumes = append(out.Spec.Volumes, v)
		}
	}
}

func annotate(out *corev1.Pod, proxy string) {
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[AnnotationInjected] = proxy
}
