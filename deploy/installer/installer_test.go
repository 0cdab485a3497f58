package installer_test

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
)

var (
	splitGVR  = schema.GroupVersionResource{Group: "split.smi-spec.io", Version: "v1alpha2", Resource: "trafficsplits"}
	targetGVR = schema.GroupVersionResource{Group: "access.smi-spec.io", Version: "v1alpha3", Resource: "traffictargets"}
	mcGVR     = schema.GroupVersionResource{Group: "config.meshfed.io", Version: "v1alpha1", Resource: "meshconfigs"}
	crdGVR    = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// One API server serves every test in this file; each test uses its own
// mesh names and namespaces.
func TestInstaller(t *testing.T) {
	sb := sandboxtest.Start(t, "east")
	cfg := sb.Cluster("east").RESTConfig()
	c, err := installer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(cfg)

	t.Run("InstallCreatesEverythingAndIsIdempotent", func(t *testing.T) { testInstallIdempotent(t, c, dyn) })
	t.Run("APIServerRejectsMalformedSMIObjects", func(t *testing.T) { testRejectsMalformed(t, c, dyn) })
	t.Run("SecondMeshOfSameNameRefused", func(t *testing.T) { testSecondMeshRefused(t, c) })
	t.Run("NamespaceAddRemoveList", func(t *testing.T) { testNamespaces(t, c) })
	t.Run("UninstallRemovesWhatInstallMade", func(t *testing.T) { testUninstall(t, c, dyn) })
}

func opts(mesh, ns, cluster string) deploy.Options {
	o := deploy.DefaultOptions()
	o.MeshName, o.Namespace, o.ClusterName = mesh, ns, cluster
	return o
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// resourceVersions reads back every object install applies.
func resourceVersions(t *testing.T, c *installer.Client, dyn dynamic.Interface, o deploy.Options) map[string]string {
	t.Helper()
	ctx := ctx(t)
	crds, err := deploy.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := deploy.Manifests(o)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, obj := range append(crds, objs...) {
		gvr := gvrFor(obj)
		var got *unstructured.Unstructured
		if obj.GetNamespace() != "" {
			got, err = dyn.Resource(gvr).Namespace(obj.GetNamespace()).Get(ctx, obj.GetName(), metav1.GetOptions{})
		} else {
			got, err = dyn.Resource(gvr).Get(ctx, obj.GetName(), metav1.GetOptions{})
		}
		if err != nil {
			t.Fatalf("%s %s/%s not installed: %v", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
		}
		out[obj.GetKind()+"/"+obj.GetNamespace()+"/"+obj.GetName()] = got.GetResourceVersion()
	}
	return out
}

func gvrFor(u *unstructured.Unstructured) schema.GroupVersionResource {
	gv, _ := schema.ParseGroupVersion(u.GetAPIVersion())
	plural := strings.ToLower(u.GetKind()) + "s"
	if u.GetKind() == "CustomResourceDefinition" {
		return crdGVR
	}
	return gv.WithResource(plural)
}

func testInstallIdempotent(t *testing.T, c *installer.Client, dyn dynamic.Interface) {
	o := opts("mesh-a", "mesh-a-system", "east")
	o.Permissive = true
	res, err := c.Install(ctx(t), o)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, a := range res.Applied {
		kinds[strings.SplitN(a, "/", 2)[0]] = true
	}
	for _, k := range []string{"CustomResourceDefinition", "Namespace", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "Role", "RoleBinding", "MeshConfig", "Service", "Deployment"} {
		if !kinds[k] {
			t.Errorf("install applied no %s; applied %v", k, res.Applied)
		}
	}
	before := resourceVersions(t, c, dyn, o)

	// The MeshConfig says what was asked, with the CRD's defaults filled in.
	mc, err := dyn.Resource(mcGVR).Namespace("mesh-a-system").Get(ctx(t), deploy.MeshConfigName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	perm, _, _ := unstructured.NestedBool(mc.Object, "spec", "traffic", "enablePermissiveTrafficPolicyMode")
	withdraw, _, _ := unstructured.NestedString(mc.Object, "spec", "federation", "withdrawAfter")
	if cluster, _, _ := unstructured.NestedString(mc.Object, "spec", "clusterName"); cluster != "east" || !perm || withdraw != "30s" {
		t.Errorf("MeshConfig spec = %v; want clusterName east, permissive true, defaulted withdrawAfter 30s", mc.Object["spec"])
	}

	if _, err := c.Install(ctx(t), o); err != nil {
		t.Fatalf("second install: %v", err)
	}
	after := resourceVersions(t, c, dyn, o)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("re-running install changed %s (resourceVersion %s → %s)", k, v, after[k])
		}
	}
}

func testRejectsMalformed(t *testing.T, c *installer.Client, dyn dynamic.Interface) {
	if _, err := c.Install(ctx(t), opts("mesh-a", "mesh-a-system", "east")); err != nil {
		t.Fatal(err)
	}
	mustNamespace(t, c, "smi-bad")
	cases := []struct {
		name string
		gvr  schema.GroupVersionResource
		obj  map[string]any
		want string
	}{
		{"split with non-numeric weight", splitGVR, map[string]any{
			"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
			"metadata": map[string]any{"name": "bad-weight", "namespace": "smi-bad"},
			"spec": map[string]any{"service": "bookstore", "backends": []any{
				map[string]any{"service": "bookstore-v1", "weight": "eighty"},
			}},
		}, "spec.backends[0].weight"},
		{"split with negative weight", splitGVR, map[string]any{
			"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
			"metadata": map[string]any{"name": "negative", "namespace": "smi-bad"},
			"spec": map[string]any{"service": "bookstore", "backends": []any{
				map[string]any{"service": "bookstore-v1", "weight": -1},
			}},
		}, "spec.backends[0].weight"},
		{"target without destination", targetGVR, map[string]any{
			"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
			"metadata": map[string]any{"name": "no-dest", "namespace": "smi-bad"},
			"spec": map[string]any{"sources": []any{
				map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"},
			}},
		}, "spec.destination"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dyn.Resource(tc.gvr).Namespace("smi-bad").Create(ctx(t), &unstructured.Unstructured{Object: tc.obj}, metav1.CreateOptions{})
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("API server answered %v; want Invalid naming %s", err, tc.want)
			}
		})
	}
	// A well-formed split is accepted, so the rejections above are about
	// the malformed fields.
	good := map[string]any{
		"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
		"metadata": map[string]any{"name": "good", "namespace": "smi-bad"},
		"spec": map[string]any{"service": "bookstore", "backends": []any{
			map[string]any{"service": "bookstore-v1", "weight": 80},
			map[string]any{"service": "bookstore-v2", "weight": 20},
		}},
	}
	if _, err := dyn.Resource(splitGVR).Namespace("smi-bad").Create(ctx(t), &unstructured.Unstructured{Object: good}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("well-formed TrafficSplit refused: %v", err)
	}
}

func testSecondMeshRefused(t *testing.T, c *installer.Client) {
	if _, err := c.Install(ctx(t), opts("mesh-a", "mesh-a-system", "east")); err != nil {
		t.Fatal(err)
	}
	_, err := c.Install(ctx(t), opts("mesh-a", "elsewhere", "east"))
	if err == nil || !strings.Contains(err.Error(), `already installed in namespace "mesh-a-system"`) {
		t.Fatalf("second mesh-a in another namespace: err = %v; want a refusal naming mesh-a-system", err)
	}
	if _, err := c.Kube().CoreV1().Namespaces().Get(ctx(t), "elsewhere", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("refused install still created namespace elsewhere (err=%v)", err)
	}
}

func mustNamespace(t *testing.T, c *installer.Client, name string) {
	t.Helper()
	_, err := c.Kube().CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func testNamespaces(t *testing.T, c *installer.Client) {
	for _, m := range []struct{ mesh, ns string }{{"mesh-a", "mesh-a-system"}, {"mesh-b", "mesh-b-system"}} {
		if _, err := c.Install(ctx(t), opts(m.mesh, m.ns, "east")); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"bookstore", "bookbuyer", "owned-by-b"} {
		mustNamespace(t, c, n)
	}
	if err := c.AddNamespaces(ctx(t), "mesh-b", []string{"owned-by-b"}, installer.InjectionUnchanged); err != nil {
		t.Fatal(err)
	}

	refusals := []struct {
		name string
		ns   []string
		want string
	}{
		{"control plane namespace", []string{"mesh-a-system"}, "control plane namespace"},
		{"another mesh's control plane namespace", []string{"mesh-b-system"}, "control plane namespace"},
		{"missing namespace", []string{"no-such-ns"}, "does not exist"},
		{"namespace of another mesh", []string{"owned-by-b"}, `already belongs to mesh "mesh-b"`},
		{"one bad among good", []string{"bookstore", "no-such-ns"}, "does not exist"},
	}
	for _, r := range refusals {
		t.Run("refuses "+r.name, func(t *testing.T) {
			err := c.AddNamespaces(ctx(t), "mesh-a", r.ns, installer.InjectionEnabled)
			if err == nil || !strings.Contains(err.Error(), r.want) {
				t.Fatalf("add %v: err = %v; want it to say %q", r.ns, err, r.want)
			}
		})
	}
	// A refused add changes nothing, not even the good namespaces in it.
	if list, _ := c.ListNamespaces(ctx(t), "mesh-a"); len(list) != 0 {
		t.Fatalf("refused adds left namespaces in mesh-a: %v", list)
	}
	if err := c.AddNamespaces(ctx(t), "no-such-mesh", []string{"bookstore"}, installer.InjectionEnabled); err == nil || !strings.Contains(err.Error(), "no mesh named") {
		t.Fatalf("add to a mesh that is not installed: err = %v", err)
	}

	if err := c.AddNamespaces(ctx(t), "mesh-a", []string{"bookstore", "bookbuyer"}, installer.InjectionEnabled); err != nil {
		t.Fatal(err)
	}
	// The trust bundle ConfigMap the controller may only update.
	for _, ns := range []string{"bookstore", "bookbuyer"} {
		if _, err := c.Kube().CoreV1().ConfigMaps(ns).Get(ctx(t), deploy.BundleConfigMapName, metav1.GetOptions{}); err != nil {
			t.Errorf("namespace add made no trust bundle ConfigMap in %s: %v", ns, err)
		}
	}
	if err := c.AddNamespaces(ctx(t), "mesh-a", []string{"bookbuyer"}, installer.InjectionDisabled); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListNamespaces(ctx(t), "mesh-a")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, n := range list {
		got[n.Name] = n.Mesh + ":" + n.Injection
	}
	want := map[string]string{"bookstore": "mesh-a:enabled", "bookbuyer": "mesh-a:disabled"}
	if len(got) != len(want) || got["bookstore"] != want["bookstore"] || got["bookbuyer"] != want["bookbuyer"] {
		t.Fatalf("namespace list = %v; want %v", got, want)
	}
	all, err := c.ListNamespaces(ctx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range all {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "bookbuyer,bookstore,owned-by-b" {
		t.Errorf("all meshes' namespaces = %v", names)
	}

	if _, err := c.RemoveNamespaces(ctx(t), "mesh-a", []string{"owned-by-b"}); err == nil || !strings.Contains(err.Error(), `belongs to mesh "mesh-b"`) {
		t.Errorf("removing another mesh's namespace: err = %v", err)
	}
	if _, err := c.RemoveNamespaces(ctx(t), "mesh-a", []string{"no-such-ns"}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("removing a missing namespace: err = %v", err)
	}
	if _, err := c.RemoveNamespaces(ctx(t), "mesh-a", []string{"bookstore"}); err != nil {
		t.Fatal(err)
	}
	ns, err := c.Kube().CoreV1().Namespaces().Get(ctx(t), "bookstore", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ns.Labels[deploy.LabelMonitoredBy]; ok {
		t.Errorf("removed namespace still labelled: %v", ns.Labels)
	}
	if _, ok := ns.Annotations[deploy.AnnotationInjection]; ok {
		t.Errorf("removed namespace still annotated: %v", ns.Annotations)
	}
	if _, err := c.RemoveNamespaces(ctx(t), "mesh-a", []string{"bookstore"}); err == nil || !strings.Contains(err.Error(), "not part of any mesh") {
		t.Errorf("removing a namespace twice: err = %v", err)
	}
}

func testUninstall(t *testing.T, c *installer.Client, dyn dynamic.Interface) {
	// With a network: the API server takes the east-west gateway's
	// objects, and uninstall removes them too.
	o := opts("mesh-u", "mesh-u-system", "east")
	o.Network, o.Injector = "net-east", true
	if _, err := c.Install(ctx(t), o); err != nil {
		t.Fatal(err)
	}
	// The injector's webhook trusts the mesh's root, and only for the
	// mesh's namespaces.
	wh, err := c.Kube().AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx(t), deploy.InjectorWebhookName(o), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("install with the injector made no MutatingWebhookConfiguration: %v", err)
	}
	root, err := c.Kube().CoreV1().Secrets("mesh-u-system").Get(ctx(t), deploy.RootSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if w := wh.Webhooks[0]; string(w.ClientConfig.CABundle) != string(root.Data["ca.crt"]) || w.NamespaceSelector.MatchLabels[deploy.LabelMonitoredBy] != "mesh-u" ||
		*w.FailurePolicy != "Fail" || *w.SideEffects != "None" || w.ClientConfig.Service.Namespace != "mesh-u-system" {
		t.Errorf("injector webhook %+v", w)
	}
	if _, err := c.Kube().PolicyV1().PodDisruptionBudgets("mesh-u-system").Get(ctx(t), deploy.GatewayName, metav1.GetOptions{}); err != nil {
		t.Fatalf("install with a network made no gateway PodDisruptionBudget: %v", err)
	}
	mustNamespace(t, c, "uninstall-app")
	if err := c.AddNamespaces(ctx(t), "mesh-u", []string{"uninstall-app"}, installer.InjectionEnabled); err != nil {
		t.Fatal(err)
	}
	if err := c.Uninstall(ctx(t), installer.UninstallOptions{MeshName: "mesh-u", DeleteNamespace: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.FindMesh(ctx(t), "mesh-u"); err == nil {
		t.Error("mesh-u still listed after uninstall")
	}
	kube := c.Kube()
	checks := map[string]error{}
	_, checks["Deployment"] = kube.AppsV1().Deployments("mesh-u-system").Get(ctx(t), deploy.ControllerName, metav1.GetOptions{})
	_, checks["Service"] = kube.CoreV1().Services("mesh-u-system").Get(ctx(t), deploy.ControllerName, metav1.GetOptions{})
	_, checks["ServiceAccount"] = kube.CoreV1().ServiceAccounts("mesh-u-system").Get(ctx(t), deploy.ControllerName, metav1.GetOptions{})
	_, checks["ClusterRole"] = kube.RbacV1().ClusterRoles().Get(ctx(t), o.ClusterRoleName(), metav1.GetOptions{})
	_, checks["ClusterRoleBinding"] = kube.RbacV1().ClusterRoleBindings().Get(ctx(t), o.ClusterRoleName(), metav1.GetOptions{})
	_, checks["gateway Deployment"] = kube.AppsV1().Deployments("mesh-u-system").Get(ctx(t), deploy.GatewayName, metav1.GetOptions{})
	_, checks["gateway Service"] = kube.CoreV1().Services("mesh-u-system").Get(ctx(t), deploy.GatewayName, metav1.GetOptions{})
	_, checks["gateway PodDisruptionBudget"] = kube.PolicyV1().PodDisruptionBudgets("mesh-u-system").Get(ctx(t), deploy.GatewayName, metav1.GetOptions{})
	_, checks["MutatingWebhookConfiguration"] = kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx(t), deploy.InjectorWebhookName(o), metav1.GetOptions{})
	for kind, err := range checks {
		if !apierrors.IsNotFound(err) {
			t.Errorf("%s still present after uninstall (err=%v)", kind, err)
		}
	}
	// The namespace is deleted by the real namespace controller.
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := kube.CoreV1().Namespaces().Get(ctx(t), "mesh-u-system", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace mesh-u-system not deleted: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	app, err := kube.CoreV1().Namespaces().Get(ctx(t), "uninstall-app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if app.Labels[deploy.LabelMonitoredBy] != "" {
		t.Errorf("uninstall left namespace uninstall-app in the mesh: %v", app.Labels)
	}
	if _, err := kube.CoreV1().ConfigMaps("uninstall-app").Get(ctx(t), deploy.BundleConfigMapName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("uninstall left the trust bundle ConfigMap namespace add made in uninstall-app (err %v)", err)
	}
	// CRDs stay unless asked for, and are refused while other meshes
	// still use them.
	if _, err := dyn.Resource(crdGVR).Get(ctx(t), "trafficsplits.split.smi-spec.io", metav1.GetOptions{}); err != nil {
		t.Errorf("CRD removed without --delete-cluster-wide-resources: %v", err)
	}
	meshes, err := c.ListMeshes(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range meshes {
		del := installer.UninstallOptions{MeshName: m.Name, DeleteCRDs: true}
		err := c.Uninstall(ctx(t), del)
		last := i == len(meshes)-1
		if !last && (err == nil || !strings.Contains(err.Error(), "CRDs kept")) {
			t.Errorf("uninstall %s with CRDs while other meshes remain: err = %v", m.Name, err)
		}
		if last && err != nil {
			t.Errorf("uninstall last mesh %s with CRDs: %v", m.Name, err)
		}
	}
	deadline = time.Now().Add(time.Minute)
	for {
		_, err := dyn.Resource(crdGVR).Get(ctx(t), "trafficsplits.split.smi-spec.io", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CRDs not removed by --delete-cluster-wide-resources: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
