package installer_test

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/sandbox"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
	"github.com/meshfed/meshfed/trust/ca"
)

// controllerUser is how the API server sees the controller's ServiceAccount.
func controllerUser(ns string) rest.ImpersonationConfig {
	return rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + deploy.ControllerName,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
}

// TestControllerCannotUpdateForeignConfigMap: with the RBAC `meshfed
// install` applies, the controller's ServiceAccount (impersonated against
// an API server that enforces RBAC) tries to rewrite kube-system's coredns
// ConfigMap and other ConfigMaps it has no business with. Every attempt is
// refused; what the controller does need (updating the trust bundle
// ConfigMap of a meshed namespace, its own ConfigMaps) still works.
func TestControllerCannotUpdateForeignConfigMap(t *testing.T) {
	ic := installEast(t)
	sb, admin, ctx, inst, o := ic.sb, ic.admin, ic.ctx, ic.inst, ic.o
	for _, ns := range []string{"bookstore", "kube-system"} {
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	for _, cm := range []*corev1.ConfigMap{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns"}, Data: map[string]string{"Corefile": ".:53 { forward . /etc/resolv.conf }"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "bookstore", Name: "bookstore-settings"}, Data: map[string]string{"k": "v"}},
	} {
		if _, err := admin.CoreV1().ConfigMaps(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// `meshfed namespace add` creates the trust bundle ConfigMap the
	// controller may then only update.
	if err := inst.AddNamespaces(ctx, o.MeshName, []string{"bookstore"}, installer.InjectionUnchanged); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().ConfigMaps("bookstore").Get(ctx, deploy.BundleConfigMapName, metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace add made no trust bundle ConfigMap: %v", err)
	}

	rc := sb.Cluster("east").RESTConfig()
	rc.Impersonate = controllerUser(o.Namespace)
	ctrl := kubernetes.NewForConfigOrDie(rc)

	// The attack.
	coredns, err := ctrl.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("controller read kube-system/coredns: err = %v, want Forbidden", err)
	}
	evil := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns"}, Data: map[string]string{"Corefile": ".:53 { forward . 203.0.113.1 }"}}
	if _, err := ctrl.CoreV1().ConfigMaps("kube-system").Update(ctx, evil, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("controller updated kube-system/coredns: err = %v, want Forbidden", err)
	}
	patch := []byte(`{"data":{"Corefile":".:53 { forward . 203.0.113.1 }"}}`)
	if _, err := ctrl.CoreV1().ConfigMaps("kube-system").Patch(ctx, "coredns", types.MergePatchType, patch, metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("controller patched kube-system/coredns: err = %v, want Forbidden", err)
	}
	if _, err := ctrl.CoreV1().ConfigMaps("bookstore").Patch(ctx, "bookstore-settings", types.MergePatchType, []byte(`{"data":{"k":"evil"}}`), metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("controller patched a meshed namespace's own ConfigMap: err = %v, want Forbidden", err)
	}
	if _, err := ctrl.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: deploy.BundleConfigMapName}}, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("controller created a ConfigMap in kube-system: err = %v, want Forbidden", err)
	}
	if err := ctrl.CoreV1().ConfigMaps("bookstore").Delete(ctx, deploy.BundleConfigMapName, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("controller deleted bookstore's trust bundle: err = %v, want Forbidden", err)
	}
	if coredns, err = admin.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{}); err != nil || coredns.Data["Corefile"] != ".:53 { forward . /etc/resolv.conf }" {
		t.Fatalf("coredns changed: %v (%v)", coredns.Data, err)
	}

	// What the controller needs still works under the same RBAC.
	td := spiffeid.RequireTrustDomainFromString(o.TrustDomain)
	root, err := ca.GenerateRoot(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.UpdateBundle(ctx, ctrl, "bookstore", deploy.BundleConfigMapName, root.Bundle()); err != nil {
		t.Errorf("controller cannot update bookstore's trust bundle: %v", err)
	}
	if err := ca.PublishBundle(ctx, ctrl, o.Namespace, deploy.BundleConfigMapName, root.Bundle()); err != nil {
		t.Errorf("controller cannot publish the bundle in its own namespace: %v", err)
	}
	epoch := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: "meshfed-catalog-epoch"}}
	if _, err := ctrl.CoreV1().ConfigMaps(o.Namespace).Create(ctx, epoch, metav1.CreateOptions{}); err != nil {
		t.Errorf("controller cannot create its catalog epoch ConfigMap: %v", err)
	}
}

// The controller's ServiceAccount may do what the controller does and no
// more, as the API server's RBAC authorizer decides (SubjectAccessReview).
func TestControllerRBACIsLeastPrivilege(t *testing.T) {
	ic := installEast(t)
	admin, ctx, o := ic.admin, ic.ctx, ic.o
	user := controllerUser(o.Namespace)
	cp := o.Namespace
	type access struct {
		ns, group, resource, sub, name, verb string
	}
	allowed := []access{
		{"", "", "namespaces", "", "", "watch"},
		{"", "", "namespaces", "", "bookstore", "get"},
		{"", "", "pods", "", "", "list"},
		{"", "", "services", "", "", "watch"},
		{"", "", "serviceaccounts", "", "", "list"},
		{"", "discovery.k8s.io", "endpointslices", "", "", "watch"},
		{"", "access.smi-spec.io", "traffictargets", "", "", "list"},
		{"", "specs.smi-spec.io", "httproutegroups", "", "", "watch"},
		{"", "split.smi-spec.io", "trafficsplits", "", "", "list"},
		{"bookstore", "multicluster.x-k8s.io", "serviceexports", "status", "bookstore", "update"},
		{"bookstore", "multicluster.x-k8s.io", "serviceimports", "", "bookstore", "create"},
		{"bookstore", "multicluster.x-k8s.io", "serviceimports", "", "bookstore", "delete"},
		{"bookstore", "", "events", "", "", "create"},
		{"bookstore", "", "configmaps", "", deploy.BundleConfigMapName, "update"},
		{"", "authentication.k8s.io", "tokenreviews", "", "", "create"},
		{cp, "config.meshfed.io", "meshconfigs", "status", deploy.MeshConfigName, "patch"},
		{cp, "", "secrets", "", "meshfed-root-ca", "update"},
		{cp, "", "configmaps", "", "meshfed-catalog-epoch", "create"},
	}
	refused := []access{
		{"kube-system", "", "configmaps", "", "coredns", "update"},
		{"kube-system", "", "configmaps", "", "aws-auth", "patch"},
		{"bookstore", "", "configmaps", "", "", "create"},
		{"bookstore", "", "configmaps", "", "", "list"},
		{"bookstore", "", "configmaps", "", deploy.BundleConfigMapName, "delete"},
		{"bookstore", "", "secrets", "", "", "get"},
		{"kube-system", "", "secrets", "", "", "list"},
		{"", "", "nodes", "", "", "list"},
		{"bookstore", "", "pods", "", "", "create"},
		{"bookstore", "", "services", "", "", "update"},
		{"bookstore", "multicluster.x-k8s.io", "serviceexports", "", "bookstore", "update"},
		{"bookstore", "access.smi-spec.io", "traffictargets", "", "", "update"},
		{"other-system", "config.meshfed.io", "meshconfigs", "", "", "list"},
		{"other-system", "config.meshfed.io", "meshconfigs", "status", "x", "patch"},
		{"", "rbac.authorization.k8s.io", "clusterroles", "", "", "update"},
		{"", "", "serviceaccounts", "token", "", "create"},
		{cp, "", "secrets", "", "meshfed-root-ca", "delete"},
	}
	check := func(a access, want bool) {
		t.Helper()
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: user.UserName, Groups: user.Groups,
			ResourceAttributes: &authzv1.ResourceAttributes{Namespace: a.ns, Group: a.group, Resource: a.resource,
				Subresource: a.sub, Name: a.name, Verb: a.verb},
		}}
		res, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status.Allowed != want {
			t.Errorf("controller %s %s.%s/%s %s/%s: allowed = %v, want %v", a.verb, a.resource, a.group, a.sub, a.ns, a.name, res.Status.Allowed, want)
		}
	}
	for _, a := range allowed {
		check(a, true)
	}
	for _, a := range refused {
		check(a, false)
	}
}

// installedCluster is a sandbox cluster "east" with the mesh installed.
type installedCluster struct {
	sb    *sandbox.Sandbox
	admin kubernetes.Interface
	ctx   context.Context
	inst  *installer.Client
	o     deploy.Options
}

// installEast starts cluster "east" and installs the default mesh in it.
func installEast(t *testing.T) installedCluster {
	t.Helper()
	sb := sandboxtest.Start(t, "east")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	inst, err := installer.New(sb.Cluster("east").RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	o := opts(deploy.DefaultMeshName, deploy.DefaultNamespace, "east")
	if _, err := inst.Install(ctx, o); err != nil {
		t.Fatal(err)
	}
	return installedCluster{sb: sb, admin: sb.Cluster("east").Client(), ctx: ctx, inst: inst, o: o}
}
