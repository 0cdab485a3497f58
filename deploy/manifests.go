package deploy

import (
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshfed/meshfed/mesh"
)

// Options are the choices `meshfed install` offers.
type Options struct {
	// MeshName names the mesh; several meshes may share a cluster, each
	// in its own namespace. Default "meshfed".
	MeshName string
	// Namespace is the control plane's namespace. Default "meshfed-system".
	Namespace string
	// ClusterName is this cluster's name in the federation. Required.
	ClusterName string
	// TrustDomain is the SPIFFE trust domain shared by the federation.
	// Default "meshfed.local".
	TrustDomain string
	// Injector writes the MutatingWebhookConfiguration that sends Pod
	// creations in the mesh's namespaces to meshfed-controller's sidecar
	// injector (InjectorWebhook). `meshfed install` sets it unless
	// --sidecar-injector=false; the default here is off.
	Injector bool
	// Permissive allows all meshed traffic (still mTLS) instead of only
	// what TrafficTargets allow.
	Permissive bool
	// Image is the controller's container image. Default
	// meshfed/meshfed-controller:<Version>.
	Image string
	// Replicas of the controller Deployment. Default 1.
	Replicas int32
	// Network names the network this cluster's pod addresses are on
	// (MeshConfig spec.federation.network; empty: the default network).
	// Clusters on one network reach each other's pods directly; others go
	// through the east-west gateway at GatewayAddresses (IP:port each).
	Network          string
	GatewayAddresses []string
	// GatewayServiceType is how the gateway's Service is exposed to the
	// other networks (LoadBalancer, NodePort; ClusterIP when something
	// else routes to it). Default LoadBalancer.
	GatewayServiceType corev1.ServiceType
}

// DefaultOptions returns the defaults with ClusterName still to be set.
func DefaultOptions() Options {
	return Options{
		MeshName:    DefaultMeshName,
		Namespace:   DefaultNamespace,
		TrustDomain: DefaultTrustDomain,
		Image:       DefaultImageRepo + ":" + Version,
		Replicas:    1,

		GatewayServiceType: DefaultGatewayServiceType,
	}
}

// Validate reports every problem with the options at once.
func (o Options) Validate() error {
	var errs []error
	if o.ClusterName == "" {
		errs = append(errs, errors.New("--cluster-name is required: every cluster in a federation needs a unique name"))
	} else if !mesh.IsDNS1123Label(o.ClusterName) {
		errs = append(errs, fmt.Errorf("cluster name %q is not a DNS label (lower-case letters, digits, '-')", o.ClusterName))
	}
	if !mesh.IsDNS1123Label(o.MeshName) {
		errs = append(errs, fmt.Errorf("mesh name %q is not a DNS label", o.MeshName))
	}
	if !mesh.IsDNS1123Label(o.Namespace) {
		errs = append(errs, fmt.Errorf("namespace %q is not a DNS label", o.Namespace))
	}
	if !trustDomainRE.MatchString(o.TrustDomain) {
		errs = append(errs, fmt.Errorf("trust domain %q may hold only lower-case letters, digits, '.', '_' and '-'", o.TrustDomain))
	}
	if o.Image == "" {
		errs = append(errs, errors.New("controller image is empty"))
	}
	if o.Replicas < 1 {
		errs = append(errs, fmt.Errorf("replicas %d: need at least 1", o.Replicas))
	}
	if o.Network != "" && !mesh.IsLabelValue(o.Network) {
		errs = append(errs, fmt.Errorf("network %q is not a Kubernetes label value", o.Network))
	}
	if len(o.GatewayAddresses) > 0 && o.Network == "" {
		errs = append(errs, errors.New("--gateway-address needs --network: a gateway is how clusters on other networks reach this one"))
	}
	switch o.GatewayServiceType {
	case corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeNodePort, corev1.ServiceTypeClusterIP:
	default:
		errs = append(errs, fmt.Errorf("gateway service type %q: want LoadBalancer, NodePort or ClusterIP", o.GatewayServiceType))
	}
	for _, g := range o.GatewayAddresses {
		if err := mesh.CheckGatewayAddress(g); err != nil {
			errs = append(errs, fmt.Errorf("gateway address %q: %v", g, err))
		}
	}
	return errors.Join(errs...)
}

// ClusterRoleName is the name of the mesh's ClusterRole and binding, unique
// per mesh and namespace.
func (o Options) ClusterRoleName() string { return "meshfed-" + o.MeshName + "-" + o.Namespace }

// Labels are put on every object install makes.
func (o Options) Labels() map[string]string {
	return map[string]string{
		LabelManagedBy: ManagedByMeshfed,
		LabelPartOf:    "meshfed",
		LabelMeshName:  o.MeshName,
		LabelVersion:   Version,
	}
}

// Manifests renders the control plane's objects, in the order they should be
// applied: namespace, RBAC, ServiceAccount, MeshConfig, Service, Deployment,
// and with a network, the east-west gateway (gateway.go).
// CRDs come separately from CRDs.
func Manifests(o Options) ([]*unstructured.Unstructured, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	labels := o.Labels()
	meta := func(name, ns string) metav1.ObjectMeta {
		l := map[string]string{}
		for k, v := range labels {
			l[k] = v
		}
		return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: l}
	}
	podLabels := map[string]string{LabelName: ControllerName, LabelMeshName: o.MeshName}

	ns := &corev1.Namespace{TypeMeta: tm("v1", "Namespace"), ObjectMeta: meta(o.Namespace, "")}
	sa := &corev1.ServiceAccount{TypeMeta: tm("v1", "ServiceAccount"), ObjectMeta: meta(ControllerName, o.Namespace)}
	cr := &rbacv1.ClusterRole{
		TypeMeta:   tm("rbac.authorization.k8s.io/v1", "ClusterRole"),
		ObjectMeta: meta(o.ClusterRoleName(), ""),
		Rules:      ClusterRules(o),
	}
	crb := &rbacv1.ClusterRoleBinding{
		TypeMeta:   tm("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
		ObjectMeta: meta(o.ClusterRoleName(), ""),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: o.ClusterRoleName()},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: ControllerName, Namespace: o.Namespace}},
	}
	// Secrets (the CA keys, the gossip keyring) are readable only in the
	// control plane's own namespace.
	role := &rbacv1.Role{
		TypeMeta:   tm("rbac.authorization.k8s.io/v1", "Role"),
		ObjectMeta: meta(ControllerName, o.Namespace),
		Rules:      NamespaceRules(),
	}
	rb := &rbacv1.RoleBinding{
		TypeMeta:   tm("rbac.authorization.k8s.io/v1", "RoleBinding"),
		ObjectMeta: meta(ControllerName, o.Namespace),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: ControllerName},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: ControllerName, Namespace: o.Namespace}},
	}
	svcPorts := []corev1.ServicePort{
		{Name: "xds", Port: PortXDS, TargetPort: intstr.FromString("xds")},
		{Name: "issuer", Port: PortIssuer, TargetPort: intstr.FromString("issuer")},
		{Name: "webhook", Port: PortWebhook, TargetPort: intstr.FromString("webhook")},
		{Name: "metrics", Port: PortMetrics, TargetPort: intstr.FromString("metrics")},
		{Name: "gossip-tcp", Port: PortGossip, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("gossip-tcp")},
		{Name: "gossip-udp", Port: PortGossip, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromString("gossip-udp")},
	}
	svc := &corev1.Service{
		TypeMeta:   tm("v1", "Service"),
		ObjectMeta: meta(ControllerName, o.Namespace),
		Spec:       corev1.ServiceSpec{Selector: podLabels, Ports: svcPorts},
	}
	replicas := o.Replicas
	nonRoot := true
	dep := &appsv1.Deployment{
		TypeMeta:   tm("apps/v1", "Deployment"),
		ObjectMeta: meta(ControllerName, o.Namespace),
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: podLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: mergeLabels(podLabels, labels)},
				Spec: corev1.PodSpec{
					ServiceAccountName: ControllerName,
					SecurityContext:    &corev1.PodSecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: ptr(int64(65532))},
					Containers: []corev1.Container{{
						Name:  "controller",
						Image: o.Image,
						Args: []string{
							"--mesh-name=" + o.MeshName,
							"--namespace=" + o.Namespace,
							"--mesh-config=" + MeshConfigName,
						},
						Ports: []corev1.ContainerPort{
							{Name: "xds", ContainerPort: PortXDS},
							{Name: "issuer", ContainerPort: PortIssuer},
							{Name: "webhook", ContainerPort: PortWebhook},
							{Name: "metrics", ContainerPort: PortMetrics},
							{Name: "gossip-tcp", ContainerPort: PortGossip, Protocol: corev1.ProtocolTCP},
							{Name: "gossip-udp", ContainerPort: PortGossip, Protocol: corev1.ProtocolUDP},
						},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
							Path: "/readyz", Port: intstr.FromString("metrics")}}},
						// The controller sets its Go memory limit to 90 % of
						// the container's (--memory-limit=auto): ~120 MiB
						// serve 1,000 services, ~300 MiB 10,000
						// (docs/benchmarks.md).
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
							Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
						},
					}},
				},
			},
		},
	}
	mc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": MeshConfigAPIVersion,
		"kind":       "MeshConfig",
		"metadata": map[string]any{
			"name": MeshConfigName, "namespace": o.Namespace, "labels": toAny(labels),
		},
		"spec": map[string]any{
			"clusterName": o.ClusterName,
			"meshName":    o.MeshName,
			"trustDomain": o.TrustDomain,
			"traffic": map[string]any{
				"enablePermissiveTrafficPolicyMode": o.Permissive,
			},
		},
	}}
	if o.Network != "" {
		fed := map[string]any{"network": o.Network}
		if len(o.GatewayAddresses) > 0 {
			gws := make([]any, len(o.GatewayAddresses))
			for i, g := range o.GatewayAddresses {
				gws[i] = g
			}
			fed["gatewayAddresses"] = gws
		}
		mc.Object["spec"].(map[string]any)["federation"] = fed
	}
	var out []*unstructured.Unstructured
	for _, obj := range []runtime.Object{ns, cr, crb, sa, role, rb} {
		u, err := toUnstructured(obj)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	out = append(out, mc)
	objs := []runtime.Object{svc, dep}
	if o.Network != "" {
		gw, err := gatewayObjects(o, meta, labels)
		if err != nil {
			return nil, err
		}
		objs = append(objs, gw...)
	}
	for _, obj := range objs {
		u, err := toUnstructured(obj)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// ClusterRules is the controller's ClusterRole: what it needs in every
// namespace, and no more. SECURITY.md lists each rule and why; keep the two
// in step.
func ClusterRules(o Options) []rbacv1.PolicyRule {
	watch := []string{"list", "watch"}
	return []rbacv1.PolicyRule{
		// Meshed namespaces (label meshfed.io/monitored-by); the issuer
		// reads a caller's namespace before it signs.
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
		// Services, their endpoints, the Pods behind them (identity,
		// readiness, zone) and ServiceAccounts (identities).
		{APIGroups: []string{""}, Resources: []string{"services", "pods", "serviceaccounts"}, Verbs: watch},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: watch},
		// SMI policy, read only.
		{APIGroups: []string{"access.smi-spec.io"}, Resources: []string{"traffictargets"}, Verbs: watch},
		{APIGroups: []string{"specs.smi-spec.io"}, Resources: []string{"httproutegroups", "tcproutes"}, Verbs: watch},
		{APIGroups: []string{"split.smi-spec.io"}, Resources: []string{"trafficsplits"}, Verbs: watch},
		// MCS: users' ServiceExports are read and given a status; the
		// ServiceImports are the controller's own (create, keep, delete).
		{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceexports"}, Verbs: watch},
		{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceexports/status"}, Verbs: []string{"update"}},
		{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceimports"}, Verbs: []string{"get", "list", "watch", "create", "update", "delete"}},
		{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceimports/status"}, Verbs: []string{"update"}},
		// Problems with users' objects are reported where they look.
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		// The trust bundle ConfigMap of each meshed namespace, by name only.
		// Create cannot be limited by name: `meshfed namespace add` creates
		// it, the controller only updates it.
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{BundleConfigMapName}, Verbs: []string{"get", "update", "patch"}},
		// The issuer checks workload tokens.
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
		// The injector's webhook, by name: its caBundle follows the
		// mesh's trusted roots through a rotation.
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
			ResourceNames: []string{InjectorWebhookName(o)}, Verbs: []string{"get", "update"}},
	}
}

// NamespaceRules is the controller's Role in its own namespace: its
// MeshConfig (and status), the CA and gossip-key Secrets, and its own
// ConfigMaps (the trust bundle, the federation's catalog epoch).
func NamespaceRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"config.meshfed.io"}, Resources: []string{"meshconfigs"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"config.meshfed.io"}, Resources: []string{"meshconfigs/status"}, Verbs: []string{"patch"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch", "create", "update"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch"}},
	}
}

func tm(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func toUnstructured(obj runtime.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	// Typed objects carry empty status and creationTimestamp fields that
	// server-side apply would otherwise claim ownership of.
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "creationTimestamp")
	return u, nil
}

func mergeLabels(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range b {
		out[k] = v
	}
	for k, v := range a {
		out[k] = v
	}
	return out
}

func toAny(m map[string]string) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func ptr[T any](v T) *T { return &v }
