package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshfed/meshfed/deploy"
)

// Injection says what `namespace add` does to sidecar injection.
type Injection int

// Injection choices: leave the annotation as it is, enable it, disable it.
const (
	InjectionUnchanged Injection = iota
	InjectionEnabled
	InjectionDisabled
)

// AddNamespaces makes each namespace part of the mesh: the
// meshfed.io/monitored-by label, and the sidecar-injection annotation when
// asked. It refuses, without changing any, a namespace that does not exist,
// that is a meshfed control plane's own namespace, or that another mesh
// already monitors.
func (c *Client) AddNamespaces(ctx context.Context, meshName string, namespaces []string, inj Injection) error {
	mesh, err := c.FindMesh(ctx, meshName)
	if err != nil {
		return err
	}
	meshes, err := c.ListMeshes(ctx)
	if err != nil {
		return err
	}
	controlPlane := map[string]string{}
	for _, m := range meshes {
		controlPlane[m.Namespace] = m.Name
	}
	var errs []error
	for _, ns := range namespaces {
		if owner, ok := controlPlane[ns]; ok {
			errs = append(errs, fmt.Errorf("namespace %q is the control plane namespace of mesh %q and cannot be part of a mesh", ns, owner))
			continue
		}
		got, err := c.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("namespace %q does not exist (create it first: kubectl create namespace %s)", ns, ns))
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("namespace %q: %w", ns, err))
			continue
		}
		if owner := got.Labels[deploy.LabelMonitoredBy]; owner != "" && owner != mesh.Name {
			errs = append(errs, fmt.Errorf("namespace %q already belongs to mesh %q (remove it there first: meshfed namespace remove %s --mesh-name %s)", ns, owner, ns, owner))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, ns := range namespaces {
		// The ConfigMap exists before the namespace is meshed, so the
		// controller's first update finds it.
		if err := c.ensureBundleConfigMap(ctx, mesh.Namespace, ns); err != nil {
			return err
		}
		meta := map[string]any{"labels": map[string]any{deploy.LabelMonitoredBy: mesh.Name}}
		switch inj {
		case InjectionEnabled:
			meta["annotations"] = map[string]any{deploy.AnnotationInjection: "enabled"}
		case InjectionDisabled:
			meta["annotations"] = map[string]any{deploy.AnnotationInjection: "disabled"}
		}
		if err := c.patchNamespace(ctx, ns, meta); err != nil {
			return err
		}
	}
	return nil
}

// ensureBundleConfigMap creates the trust bundle ConfigMap in ns, holding
// the bundle the control plane in controlPlane publishes (if it has yet).
// The controller may only update ConfigMaps of that name outside its own
// namespace, never create them, so this is the one place they are made. An
// existing one is kept.
func (c *Client) ensureBundleConfigMap(ctx context.Context, controlPlane, ns string) error {
	cms := c.kube.CoreV1().ConfigMaps(ns)
	if _, err := cms.Get(ctx, deploy.BundleConfigMapName, metav1.GetOptions{}); err == nil {
		return nil
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("namespace %q: trust bundle ConfigMap: %w", ns, err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: deploy.BundleConfigMapName, Namespace: ns,
		Labels: map[string]string{deploy.LabelManagedBy: deploy.ManagedByMeshfed}}}
	if src, err := c.kube.CoreV1().ConfigMaps(controlPlane).Get(ctx, deploy.BundleConfigMapName, metav1.GetOptions{}); err == nil {
		cm.Data = src.Data
	}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{FieldManager: FieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %q: trust bundle ConfigMap: %w", ns, err)
	}
	return nil
}

// deleteBundleConfigMap deletes the trust bundle ConfigMap `namespace add`
// made in ns (one without meshfed's managed-by label is the user's: kept).
func (c *Client) deleteBundleConfigMap(ctx context.Context, ns string) error {
	cms := c.kube.CoreV1().ConfigMaps(ns)
	cm, err := cms.Get(ctx, deploy.BundleConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || err == nil && cm.Labels[deploy.LabelManagedBy] != deploy.ManagedByMeshfed {
		return nil
	}
	if err == nil {
		err = cms.Delete(ctx, cm.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cm.UID}})
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("namespace %q: trust bundle ConfigMap: %w", ns, err)
	}
	return nil
}

// RemoveNamespaces takes namespaces out of the mesh; nil means every
// namespace the mesh monitors. A namespace that belongs to another mesh or
// to none is refused. It returns the namespaces it changed.
func (c *Client) RemoveNamespaces(ctx context.Context, meshName string, namespaces []string) ([]string, error) {
	if namespaces == nil {
		list, err := c.ListNamespaces(ctx, meshName)
		if err != nil {
			return nil, err
		}
		for _, n := range list {
			namespaces = append(namespaces, n.Name)
		}
	}
	var errs []error
	for _, ns := range namespaces {
		got, err := c.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("namespace %q does not exist", ns))
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if owner := got.Labels[deploy.LabelMonitoredBy]; owner != meshName {
			if owner == "" {
				errs = append(errs, fmt.Errorf("namespace %q is not part of any mesh", ns))
			} else {
				errs = append(errs, fmt.Errorf("namespace %q belongs to mesh %q, not %q", ns, owner, meshName))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, ns := range namespaces {
		meta := map[string]any{
			"labels":      map[string]any{deploy.LabelMonitoredBy: nil},
			"annotations": map[string]any{deploy.AnnotationInjection: nil},
		}
		if err := c.patchNamespace(ctx, ns, meta); err != nil {
			return nil, err
		}
		if err := c.deleteBundleConfigMap(ctx, ns); err != nil {
			return nil, err
		}
	}
	return namespaces, nil
}

func (c *Client) patchNamespace(ctx context.Context, ns string, meta map[string]any) error {
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	if _, err := c.kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
		return fmt.Errorf("namespace %q: %w", ns, err)
	}
	return nil
}

// NamespaceInfo is one namespace of a mesh, as `namespace list` shows it.
type NamespaceInfo struct {
	Name      string
	Mesh      string
	Injection string // "enabled", "disabled" or "" (not set)
}

// ListNamespaces lists the namespaces a mesh monitors; an empty meshName
// lists those of every mesh.
func (c *Client) ListNamespaces(ctx context.Context, meshName string) ([]NamespaceInfo, error) {
	sel := deploy.LabelMonitoredBy
	if meshName != "" {
		sel += "=" + meshName
	}
	list, err := c.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var out []NamespaceInfo
	for _, ns := range list.Items {
		out = append(out, NamespaceInfo{
			Name: ns.Name, Mesh: ns.Labels[deploy.LabelMonitoredBy], Injection: ns.Annotations[deploy.AnnotationInjection],
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
