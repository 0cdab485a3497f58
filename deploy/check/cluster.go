package check

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"

	"github.com/meshfed/meshfed/controller/debug"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/deploy/member"
	"github.com/meshfed/meshfed/trust/ca"
)

// Target is one cluster to check.
type Target struct {
	// Name is how results name it; Context its kubeconfig context ("" for
	// the current one), used in fix commands.
	Name     string
	Context  string
	Config   *rest.Config
	MeshName string
	// Now is the CLI's clock (time.Now when nil).
	Now func() time.Time
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// Inspect runs the checks of one cluster and returns what the
// comparisons across clusters need.
func Inspect(ctx context.Context, t Target) (Facts, []Result) {
	now := t.Now
	if now == nil {
		now = time.Now
	}
	f := Facts{Name: t.Name, Context: t.Context, Namespace: deploy.DefaultNamespace}
	cf := f.contextFlag()
	var out []Result
	inst, err := installer.New(t.Config)
	if err != nil {
		return f, append(out, fail(t.Name, "kubernetes-api", err.Error(), "check the kubeconfig: `kubectl"+cf+" cluster-info`"))
	}
	v, err := inst.Kube().Discovery().ServerVersion()
	if err != nil {
		return f, append(out, fail(t.Name, "kubernetes-api", "API server not reachable: "+err.Error(), "check the kubeconfig and the cluster: `kubectl"+cf+" cluster-info`"))
	}
	// meshfed states no minimum Kubernetes version; the version is reported.
	out = append(out, ok(t.Name, "kubernetes-api", "API server reachable, Kubernetes "+v.GitVersion))

	installFix := fmt.Sprintf("`meshfed install%s --cluster-name NAME` (NAME: this cluster's name in the federation)", cf)
	out = append(out, checkCRDs(ctx, inst, t.Name, installFix)...)

	m, err := member.Open(ctx, inst, t.MeshName)
	if err != nil {
		return f, append(out, fail(t.Name, "mesh", err.Error(), installFix))
	}
	f.ClusterName, f.Namespace = m.Spec.ClusterName, m.Mesh.Namespace
	cf = f.contextFlag()
	restartFix := fmt.Sprintf("`kubectl%s -n %s rollout restart deploy/%s`", cf, f.Namespace, deploy.ControllerName)
	out = append(out, ok(t.Name, "mesh", fmt.Sprintf("mesh %q installed in %s as cluster %s", t.MeshName, f.Namespace, f.ClusterName)))
	out = append(out, checkController(ctx, inst, t.Name, f.Namespace, installFix, restartFix))
	out = append(out, checkInjector(ctx, inst, t.Name, t.MeshName, f.Namespace, restartFix))
	r, signing := checkIntermediate(ctx, inst, m, t.Name, now(), restartFix, cf)
	out = append(out, r)
	f.SigningRoot = signing
	f.BundleRoots, f.BundleSource = readBundle(ctx, inst, m)

	fed, sent, received, rs := checkDebug(ctx, t, f.Namespace, restartFix, now)
	out = append(out, rs...)
	f.Federation, f.Sent, f.Received = fed, sent, received
	return f, out
}

func checkCRDs(ctx context.Context, inst *installer.Client, cluster, fix string) []Result {
	const name = "crds"
	crds, err := deploy.CRDs()
	if err != nil {
		return []Result{fail(cluster, name, err.Error(), "")}
	}
	var problems []string
	for _, want := range crds {
		got, err := inst.Dynamic().Resource(crdGVR).Get(ctx, want.GetName(), metav1.GetOptions{})
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", want.GetName(), err))
			continue
		}
		if !installer.Established(got) {
			problems = append(problems, want.GetName()+" not established")
		}
		served := map[string]bool{}
		vs, _, _ := unstructured.NestedSlice(got.Object, "spec", "versions")
		for _, v := range vs {
			vm, _ := v.(map[string]any)
			if s, _ := vm["served"].(bool); s {
				served[fmt.Sprint(vm["name"])] = true
			}
		}
		wvs, _, _ := unstructured.NestedSlice(want.Object, "spec", "versions")
		for _, v := range wvs {
			vm, _ := v.(map[string]any)
			if n := fmt.Sprint(vm["name"]); !served[n] {
				problems = append(problems, fmt.Sprintf("%s does not serve version %s", want.GetName(), n))
			}
		}
	}
	if len(problems) > 0 {
		return []Result{fail(cluster, name, strings.Join(problems, "; "), fix)}
	}
	return []Result{ok(cluster, name, fmt.Sprintf("meshfed's %d CRDs are established at the versions meshfed installs", len(crds)))}
}

func checkController(ctx context.Context, inst *installer.Client, cluster, ns, installFix, restartFix string) Result {
	const name = "controller"
	d, err := inst.Kube().AppsV1().Deployments(ns).Get(ctx, deploy.ControllerName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fail(cluster, name, fmt.Sprintf("no Deployment %s/%s", ns, deploy.ControllerName), installFix)
	}
	if err != nil {
		return fail(cluster, name, err.Error(), "")
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue {
			return ok(cluster, name, fmt.Sprintf("Deployment %s/%s available (%d ready)", ns, deploy.ControllerName, d.Status.ReadyReplicas))
		}
	}
	if d.Status.AvailableReplicas > 0 {
		return ok(cluster, name, fmt.Sprintf("Deployment %s/%s available (%d ready)", ns, deploy.ControllerName, d.Status.ReadyReplicas))
	}
	return fail(cluster, name, fmt.Sprintf("Deployment %s/%s not available (%d of %d ready)", ns, deploy.ControllerName, d.Status.ReadyReplicas, d.Status.Replicas), restartFix)
}

func checkInjector(ctx context.Context, inst *installer.Client, cluster, meshName, ns, restartFix string) Result {
	const name = "injector"
	o := deploy.Options{MeshName: meshName, Namespace: ns}
	wh, err := inst.Kube().AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, deploy.InjectorWebhookName(o), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ok(cluster, name, "no sidecar injector installed (--sidecar-injector=false)")
	}
	if err != nil {
		return fail(cluster, name, err.Error(), "")
	}
	for _, w := range wh.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 {
			return fail(cluster, name, fmt.Sprintf("webhook %s of %s has an empty caBundle: the API server cannot call the injector", w.Name, wh.Name), restartFix)
		}
	}
	return ok(cluster, name, fmt.Sprintf("%s present with a caBundle", wh.Name))
}

func checkIntermediate(ctx context.Context, inst *installer.Client, m *member.Member, cluster string, now time.Time, restartFix, cf string) (Result, string) {
	const name = "intermediate-ca"
	statusFix := "`meshfed certificate status" + cf + "` shows the CA"
	td, err := spiffeid.TrustDomainFromString(m.Spec.TrustDomainOr(""))
	if err != nil {
		return fail(cluster, name, err.Error(), ""), ""
	}
	secret := m.Spec.Certificate.IntermediateSecretName
	if secret == "" {
		secret = deploy.IntermediateSecretName
	}
	s, err := inst.Kube().CoreV1().Secrets(m.Mesh.Namespace).Get(ctx, secret, metav1.GetOptions{})
	if err != nil {
		return fail(cluster, name, fmt.Sprintf("intermediate secret %s/%s: %v", m.Mesh.Namespace, secret, err), statusFix), ""
	}
	// Parsed at the CLI's now so an expired one is named, not just refused.
	certs, err := ca.ParseCertificatesPEM(s.Data[ca.IntermediateCertKey])
	if err != nil || len(certs) == 0 {
		return fail(cluster, name, fmt.Sprintf("intermediate secret %s/%s: no certificate: %v", m.Mesh.Namespace, secret, err), statusFix+"; "+restartFix), ""
	}
	cert := certs[0]
	if now.After(cert.NotAfter) {
		return fail(cluster, name, fmt.Sprintf("intermediate CA expired at %s", cert.NotAfter.UTC().Format(time.RFC3339)), restartFix+" (a controller holding the root key renews it); "+statusFix), ""
	}
	inter, err := ca.ParseIntermediate(td, s.Data[ca.IntermediateCertKey], s.Data[ca.IntermediateKeyKey], s.Data[ca.BundleKey], now)
	if err != nil {
		return fail(cluster, name, fmt.Sprintf("intermediate secret %s/%s: %v", m.Mesh.Namespace, secret, err), statusFix), ""
	}
	signing := ""
	if root, err := ca.IssuerRoot(inter, inter.Bundle()); err == nil {
		signing = ca.Fingerprint(root)
	}
	left := cert.NotAfter.Sub(now)
	if left < IntermediateWarnWithin {
		return warn(cluster, name, fmt.Sprintf("intermediate CA expires in %s (%s)", left.Round(time.Minute), cert.NotAfter.UTC().Format(time.RFC3339)),
			restartFix+" (a controller holding the root key renews it); "+statusFix), signing
	}
	return ok(cluster, name, fmt.Sprintf("intermediate CA valid until %s, signed by root %s", cert.NotAfter.UTC().Format(time.RFC3339), signing)), signing
}

// readBundle reads the cluster's published trust bundle: the bundle
// ConfigMap in the control plane's namespace, else the intermediate
// Secret's ca.crt.
func readBundle(ctx context.Context, inst *installer.Client, m *member.Member) ([]string, string) {
	ns := m.Mesh.Namespace
	var pemBytes []byte
	source := ""
	if cm, err := inst.Kube().CoreV1().ConfigMaps(ns).Get(ctx, deploy.BundleConfigMapName, metav1.GetOptions{}); err == nil && cm.Data[ca.BundleKey] != "" {
		pemBytes, source = []byte(cm.Data[ca.BundleKey]), "ConfigMap "+ns+"/"+deploy.BundleConfigMapName
	} else {
		secret := m.Spec.Certificate.IntermediateSecretName
		if secret == "" {
			secret = deploy.IntermediateSecretName
		}
		s, err := inst.Kube().CoreV1().Secrets(ns).Get(ctx, secret, metav1.GetOptions{})
		if err != nil {
			return nil, ""
		}
		pemBytes, source = s.Data[ca.BundleKey], "Secret "+ns+"/"+secret
	}
	certs, err := ca.ParseCertificatesPEM(pemBytes)
	if err != nil {
		return nil, ""
	}
	roots := []string{}
	for _, c := range certs {
		roots = append(roots, ca.Fingerprint(c))
	}
	return roots, source
}

func checkDebug(ctx context.Context, t Target, ns, restartFix string, now func() time.Time) (*debug.Federation, time.Time, time.Time, []Result) {
	const name = "debug-api"
	cf := ""
	if t.Context != "" {
		cf = " --context " + t.Context
	}
	c, err := debug.Dial(ctx, t.Config, ns)
	if err != nil {
		return nil, time.Time{}, time.Time{}, []Result{fail(t.Name, name, err.Error(), restartFix)}
	}
	defer c.Close()
	sent := now()
	fed, err := c.Federation(ctx)
	received := now()
	if err != nil {
		return nil, sent, received, []Result{fail(t.Name, name, fmt.Sprintf("meshfed-controller (Pod %s/%s) does not answer on its debug API: %v", ns, c.Pod, err), restartFix)}
	}
	out := []Result{ok(t.Name, name, fmt.Sprintf("meshfed-controller's debug API reachable (Pod %s/%s)", ns, c.Pod))}
	ps, err := c.Proxies(ctx)
	if err != nil {
		return &fed, sent, received, append(out, fail(t.Name, "proxies", err.Error(), restartFix))
	}
	out = append(out, proxyNACKs(t.Name, ps, cf))
	return &fed, sent, received, out
}

// proxyNACKs fails when any proxy holds a rejected configuration, listing
// each with its message.
func proxyNACKs(cluster string, ps debug.Proxies, cf string) Result {
	var nacks []string
	for _, p := range ps.Proxies {
		for _, ty := range p.Types {
			if ty.NACK != nil {
				nacks = append(nacks, fmt.Sprintf("%s %s version %s: %s", p.NodeID, ty.Type, ty.NACK.Version, ty.NACK.Message))
			}
		}
	}
	if len(nacks) > 0 {
		return fail(cluster, "proxies", fmt.Sprintf("%d rejected configuration(s): %s", len(nacks), strings.Join(nacks, "; ")), "`meshfed proxy status"+cf+"` shows more")
	}
	return ok(cluster, "proxies", fmt.Sprintf("%d connected proxies, none rejecting its configuration", len(ps.Proxies)))
}
