// Package installer applies meshfed's manifests to a cluster and manages
// which namespaces belong to a mesh: what `meshfed install`, `uninstall`,
// `mesh list` and `namespace add|remove|list` do. Every write is a
// server-side apply or a targeted patch, so running a command twice changes
// nothing the second time.
package installer

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/meshfed/meshfed/controller/meshconfig"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/trust/ca"
)

// FieldManager is the server-side apply field manager for what install
// writes.
const FieldManager = "meshfed-install"

// MeshConfigGVR is the resource of meshfed's MeshConfig.
var MeshConfigGVR = meshConfigGVR

var (
	meshConfigGVR = deploy.MeshConfigGVR
	crdGVR        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// Client talks to one cluster.
type Client struct {
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	disc   discovery.CachedDiscoveryInterface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// New makes a Client for the cluster cfg points at.
func New(cfg *rest.Config) (*Client, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	disc := memory.NewMemCacheClient(kube.Discovery())
	return &Client{kube: kube, dyn: dyn, disc: disc, mapper: restmapper.NewDeferredDiscoveryRESTMapper(disc)}, nil
}

// Kube returns the typed client.
func (c *Client) Kube() kubernetes.Interface { return c.kube }

// Dynamic returns the dynamic client.
func (c *Client) Dynamic() dynamic.Interface { return c.dyn }

// Result lists what Install applied.
type Result struct {
	// Applied names every object, as kind/namespace/name.
	Applied []string
	// CA says what happened to the certificate authority.
	CA string
}

// Install applies the CRDs, waits for them to be served, then applies the
// control plane, with a newly generated federation root unless the
// namespace holds one already. It refuses a mesh whose name is already
// installed in another namespace.
func (c *Client) Install(ctx context.Context, o deploy.Options) (*Result, error) {
	return c.InstallWithCA(ctx, o, CASource{})
}

// InstallWithCA is Install with the certificate authority taken from src.
func (c *Client) InstallWithCA(ctx context.Context, o deploy.Options, src CASource) (*Result, error) {
	if err := errors.Join(o.Validate(), src.validate()); err != nil {
		return nil, err
	}
	meshes, err := c.ListMeshes(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range meshes {
		if m.Name == o.MeshName && m.Namespace != o.Namespace {
			return nil, fmt.Errorf("mesh %q is already installed in namespace %q: one mesh name per cluster (choose another --mesh-name, or uninstall it first with `meshfed uninstall --mesh-name %s --namespace %s`)",
				o.MeshName, m.Namespace, m.Name, m.Namespace)
		}
		if m.Namespace == o.Namespace && m.Name != o.MeshName {
			return nil, fmt.Errorf("namespace %q already runs mesh %q: one mesh per control plane namespace", o.Namespace, m.Name)
		}
	}
	crds, err := deploy.CRDs()
	if err != nil {
		return nil, err
	}
	res := &Result{}
	for _, crd := range crds {
		if err := c.apply(ctx, crd); err != nil {
			return res, err
		}
		res.Applied = append(res.Applied, describe(crd))
	}
	if err := c.waitEstablished(ctx, crds); err != nil {
		return res, err
	}
	objs, err := deploy.Manifests(o)
	if err != nil {
		return res, err
	}
	for _, obj := range objs {
		if err := c.apply(ctx, obj); err != nil {
			return res, err
		}
		res.Applied = append(res.Applied, describe(obj))
	}
	if res.CA, err = c.InstallCA(ctx, o, src); err != nil {
		return res, err
	}
	if o.Injector {
		wh, err := c.installInjector(ctx, o)
		if err != nil {
			return res, err
		}
		res.Applied = append(res.Applied, wh)
	}
	return res, nil
}

// installInjector writes the injector's MutatingWebhookConfiguration, its
// caBundle the roots the mesh trusts (the controller's serving certificate
// chains to one). The controller keeps the caBundle current.
func (c *Client) installInjector(ctx context.Context, o deploy.Options) (string, error) {
	root, err := c.trustedRoots(ctx, o.Namespace)
	if err != nil {
		return "", fmt.Errorf("sidecar injector: %w", err)
	}
	u, err := deploy.InjectorWebhookObject(o, root)
	if err != nil {
		return "", err
	}
	if err := c.apply(ctx, u); err != nil {
		return "", err
	}
	return describe(u), nil
}

// trustedRoots reads the roots the mesh trusts (PEM) where the cluster
// keeps them: its intermediate Secret's bundle — a cluster that joined a
// federation holds no root Secret, the root's key staying in one place —
// or, in the cluster that keeps the root before its controller made the
// intermediate, the root Secret's bundle (during a rotation) or root.
func (c *Client) trustedRoots(ctx context.Context, ns string) ([]byte, error) {
	secrets := c.kube.CoreV1().Secrets(ns)
	inter, err := secrets.Get(ctx, deploy.IntermediateSecretName, metav1.GetOptions{})
	if err == nil && len(inter.Data[ca.BundleKey]) > 0 {
		return inter.Data[ca.BundleKey], nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("the roots the mesh trusts: %w", err)
	}
	root, err := secrets.Get(ctx, deploy.RootSecretName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("the roots the mesh trusts: neither Secret %s/%s nor %s/%s: %w", ns, deploy.IntermediateSecretName, ns, deploy.RootSecretName, err)
	}
	for _, key := range []string{ca.RootBundleKey, ca.RootCertKey} {
		if len(root.Data[key]) > 0 {
			return root.Data[key], nil
		}
	}
	return nil, fmt.Errorf("the roots the mesh trusts: Secret %s/%s holds no %s", ns, deploy.RootSecretName, ca.RootCertKey)
}

func describe(u *unstructured.Unstructured) string {
	if u.GetNamespace() != "" {
		return fmt.Sprintf("%s/%s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
	}
	return u.GetKind() + "/" + u.GetName()
}

// apply server-side applies one object.
func (c *Client) apply(ctx context.Context, u *unstructured.Unstructured) error {
	ri, err := c.resource(u)
	if err != nil {
		return err
	}
	_, err = ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil {
		return fmt.Errorf("apply %s: %w", describe(u), err)
	}
	return nil
}

func (c *Client) resource(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", describe(u), err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource).Namespace(u.GetNamespace()), nil
	}
	return c.dyn.Resource(m.Resource), nil
}

// waitEstablished waits until every CRD is Established and served.
func (c *Client) waitEstablished(ctx context.Context, crds []*unstructured.Unstructured) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, crd := range crds {
		for {
			got, err := c.dyn.Resource(crdGVR).Get(ctx, crd.GetName(), metav1.GetOptions{})
			if err == nil && Established(got) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("CRD %s not established: %w", crd.GetName(), ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	c.mapper.Reset()
	return nil
}

// Established says whether a CustomResourceDefinition (as unstructured)
// has condition Established true: the API server serves its kinds.
func Established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// Mesh is one installed mesh, as `meshfed mesh list` shows it.
type Mesh struct {
	Name        string
	Namespace   string
	ClusterName string
	TrustDomain string
	Version     string
	Permissive  bool
}

// ListMeshes returns every mesh installed in the cluster, found by their
// MeshConfigs. A cluster without meshfed's CRDs has none.
func (c *Client) ListMeshes(ctx context.Context) ([]Mesh, error) {
	list, err := c.dyn.Resource(meshConfigGVR).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list MeshConfigs: %w", err)
	}
	var out []Mesh
	for _, mc := range list.Items {
		// A wrong field does not hide the mesh: what could be read is listed.
		spec, _ := meshconfig.Parse(&mc)
		name := spec.MeshName
		if _, set, _ := unstructured.NestedString(mc.Object, "spec", "meshName"); !set {
			if l := mc.GetLabels()[deploy.LabelMeshName]; l != "" {
				name = l
			}
		}
		out = append(out, Mesh{
			Name: name, Namespace: mc.GetNamespace(), ClusterName: spec.ClusterName, TrustDomain: spec.TrustDomain,
			Version: mc.GetLabels()[deploy.LabelVersion], Permissive: spec.Traffic.EnablePermissiveTrafficPolicyMode,
		})
	}
	return out, nil
}

// FindMesh returns the mesh with the given name, or an error saying that
// none is installed.
func (c *Client) FindMesh(ctx context.Context, name string) (*Mesh, error) {
	meshes, err := c.ListMeshes(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range meshes {
		if m.Name == name {
			return &m, nil
		}
	}
	return nil, fmt.Errorf("no mesh named %q is installed in this cluster (see `meshfed mesh list`, or `meshfed install`)", name)
}

// UninstallOptions say what to remove.
type UninstallOptions struct {
	MeshName  string
	Namespace string
	// DeleteNamespace removes the control plane's namespace too.
	DeleteNamespace bool
	// DeleteCRDs removes the CRDs, and with them every SMI, MCS and
	// MeshConfig object in the cluster. Only when no other mesh remains.
	DeleteCRDs bool
}

// Uninstall removes what Install made for one mesh and takes the mesh's
// labels off the namespaces it managed.
func (c *Client) Uninstall(ctx context.Context, o UninstallOptions) error {
	mesh, err := c.FindMesh(ctx, o.MeshName)
	if err != nil {
		return err
	}
	if o.Namespace != "" && mesh.Namespace != o.Namespace {
		return fmt.Errorf("mesh %q runs in namespace %q, not %q", o.MeshName, mesh.Namespace, o.Namespace)
	}
	opts := deploy.DefaultOptions()
	// With a network, the list holds the east-west gateway's objects
	// too; those that were never made are not found, which is fine.
	opts.MeshName, opts.Namespace, opts.ClusterName, opts.Network = mesh.Name, mesh.Namespace, "uninstall", "uninstall"
	objs, err := deploy.Manifests(opts)
	if err != nil {
		return err
	}
	if _, err := c.RemoveNamespaces(ctx, mesh.Name, nil); err != nil {
		return err
	}
	var errs []error
	whName := deploy.InjectorWebhookName(opts)
	if err := c.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, whName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete the sidecar injector's MutatingWebhookConfiguration %s: %w", whName, err))
	}
	for i := len(objs) - 1; i >= 0; i-- {
		obj := objs[i]
		if obj.GetKind() == "Namespace" && !o.DeleteNamespace {
			continue
		}
		if err := c.delete(ctx, obj); err != nil {
			errs = append(errs, err)
		}
	}
	// Secrets and ConfigMaps meshfed made in the control plane namespace
	// (CA, trust bundle, gossip keys) carry its managed-by label; the
	// namespace belongs to this mesh alone.
	sel := metav1.ListOptions{LabelSelector: deploy.LabelManagedBy + "=" + deploy.ManagedByMeshfed}
	if err := c.kube.CoreV1().Secrets(mesh.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete secrets: %w", err))
	}
	if err := c.kube.CoreV1().ConfigMaps(mesh.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete configmaps: %w", err))
	}
	if o.DeleteCRDs {
		rest, err := c.ListMeshes(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		var others []string
		for _, m := range rest {
			if m.Name != mesh.Name {
				others = append(others, m.Name)
			}
		}
		if len(others) > 0 {
			errs = append(errs, fmt.Errorf("CRDs kept: meshes %v still use them", others))
		} else {
			crds, err := deploy.CRDs()
			if err != nil {
				return err
			}
			for _, crd := range crds {
				if err := c.delete(ctx, crd); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func (c *Client) delete(ctx context.Context, u *unstructured.Unstructured) error {
	ri, err := c.resource(u)
	if meta.IsNoMatchError(errors.Unwrap(err)) || meta.IsNoMatchError(err) {
		return nil
	}
	if err != nil {
		return err
	}
	bg := metav1.DeletePropagationBackground
	err = ri.Delete(ctx, u.GetName(), metav1.DeleteOptions{PropagationPolicy: &bg})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s: %w", describe(u), err)
	}
	return nil
}
