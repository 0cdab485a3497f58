package federate

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/mesh"
)

// serviceImportFor returns the ServiceImport spec and status clusters for
// one desired import.
func serviceImportFor(imp importSpec) (mcsv1beta1.ServiceImportSpec, []mcsv1beta1.ClusterStatus) {
	spec := mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, Ports: []mcsv1beta1.ServicePort{}}
	if imp.Headless {
		spec.Type = mcsv1beta1.Headless
	}
	for _, p := range imp.Ports {
		sp := mcsv1beta1.ServicePort{Name: p.Name, Protocol: corev1.ProtocolTCP, Port: int32(p.Port)}
		if ap := appProtocol(p.Protocol); ap != "" {
			sp.AppProtocol = &ap
		}
		spec.Ports = append(spec.Ports, sp)
	}
	var clusters []mcsv1beta1.ClusterStatus
	for _, c := range imp.Clusters {
		clusters = append(clusters, mcsv1beta1.ClusterStatus{Cluster: c})
	}
	return spec, clusters
}

// appProtocol maps a mesh protocol to a Kubernetes appProtocol (as
// controller/kube reads it back).
func appProtocol(p string) string {
	switch protocolFromCatalog(p) {
	case mesh.ProtocolGRPC:
		return "grpc"
	case mesh.ProtocolHTTP2:
		return "kubernetes.io/h2c"
	case mesh.ProtocolTCP:
		return "tcp"
	}
	return "http"
}

// applyImports makes the ServiceImports the bridge manages match want:
// creates missing ones, updates changed ones, deletes those no cluster
// exports any more. A ServiceImport of the same name that meshfed did not
// create is left alone (and reported).
func (b *Bridge) applyImports(ctx context.Context, want []importSpec) error {
	var errs []error
	wanted := make(map[string]bool, len(want))
	inSync := make(map[string]importInSync, len(want))
	defer func() { b.importsInSync = inSync }()
	client := b.cfg.Dynamic.Resource(ServiceImportGVR)
	for _, imp := range want {
		key := imp.Namespace + "/" + imp.Name
		wanted[key] = true
		obj, err := b.imports.ByNamespace(imp.Namespace).Get(imp.Name)
		if err == nil {
			rv := obj.(*unstructured.Unstructured).GetResourceVersion()
			if m, ok := b.importsInSync[key]; ok && m.resourceVersion == rv && rv != "" && m.want.equal(&imp) {
				inSync[key] = m
				continue
			}
		}
		spec, clusters := serviceImportFor(imp)
		if apierrors.IsNotFound(err) {
			if !b.spend() {
				continue
			}
			si := &mcsv1beta1.ServiceImport{
				ObjectMeta: metav1.ObjectMeta{Namespace: imp.Namespace, Name: imp.Name, Labels: map[string]string{
					LabelManagedBy: ManagedBy, mcsv1beta1.LabelServiceName: imp.Name,
				}},
				Spec: spec,
			}
			u, err := toUnstructured(si)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			created, err := client.Namespace(imp.Namespace).Create(ctx, u, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue // created by an earlier pass, not yet in the cache: the next pass compares it
			}
			if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) && strings.Contains(err.Error(), "being terminated") {
				b.log.Debug("federate: no namespace for ServiceImport", "serviceimport", key, "err", err)
				continue // namespace sameness: the namespace does not exist here
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("serviceimport %s: create: %w", key, err))
				continue
			}
			if err := unstructured.SetNestedField(created.Object, clustersField(clusters), "status", "clusters"); err != nil {
				errs = append(errs, err)
				continue
			}
			if _, err := client.Namespace(imp.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
				errs = append(errs, fmt.Errorf("serviceimport %s: status: %w", key, err))
			}
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("serviceimport %s: %w", key, err))
			continue
		}
		u := obj.(*unstructured.Unstructured)
		if u.GetLabels()[LabelManagedBy] != ManagedBy {
			b.log.Warn("federate: ServiceImport not managed by meshfed, left alone", "serviceimport", key)
			continue
		}
		var cur mcsv1beta1.ServiceImport
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cur); err != nil {
			errs = append(errs, fmt.Errorf("serviceimport %s: %w", key, err))
			continue
		}
		specChanged, statusChanged := !reflect.DeepEqual(normalizeSpec(cur.Spec), normalizeSpec(spec)), !reflect.DeepEqual(cur.Status.Clusters, clusters)
		if !specChanged && !statusChanged {
			inSync[key] = importInSync{resourceVersion: u.GetResourceVersion(), want: imp}
			continue
		}
		if !b.spend() {
			continue
		}
		if specChanged {
			upd := u.DeepCopy()
			specObj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&spec)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			upd.Object["spec"] = specObj
			if u, err = client.Namespace(imp.Namespace).Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
				errs = append(errs, fmt.Errorf("serviceimport %s: update: %w", key, err))
				continue
			}
		}
		if statusChanged {
			upd := u.DeepCopy()
			if err := unstructured.SetNestedField(upd.Object, clustersField(clusters), "status", "clusters"); err != nil {
				errs = append(errs, err)
				continue
			}
			if _, err := client.Namespace(imp.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{}); err != nil {
				errs = append(errs, fmt.Errorf("serviceimport %s: status: %w", key, err))
			}
		}
	}
	// Every ServiceImport no longer wanted goes; the keys are read first,
	// so that the thousands that stay cost a map lookup each.
	for _, key := range b.importKeys() {
		if wanted[key] {
			continue
		}
		ns, name, _ := strings.Cut(key, "/")
		obj, err := b.imports.ByNamespace(ns).Get(name)
		if err != nil {
			continue // gone meanwhile
		}
		u := obj.(*unstructured.Unstructured)
		if u.GetLabels()[LabelManagedBy] != ManagedBy || u.GetDeletionTimestamp() != nil || !b.spend() {
			continue
		}
		err = client.Namespace(u.GetNamespace()).Delete(ctx, u.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: ptr(u.GetUID())}})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("serviceimport %s: delete: %w", key, err))
		} else {
			b.log.Info("federate: ServiceImport removed, no cluster exports it", "serviceimport", key)
		}
	}
	b.metrics.imports.Set(float64(len(wanted)))
	return errors.Join(errs...)
}

// importInSync is a ServiceImport found as wanted: its resourceVersion
// then, and what was wanted.
type importInSync struct {
	resourceVersion string
	want            importSpec
}

func (s *importSpec) equal(o *importSpec) bool {
	return s.Namespace == o.Namespace && s.Name == o.Name && s.Headless == o.Headless &&
		slices.Equal(s.Ports, o.Ports) && slices.Equal(s.Clusters, o.Clusters)
}

// importKeys returns the "namespace/name" of every ServiceImport in the
// informer's cache.
func (b *Bridge) importKeys() []string { return b.importStore.ListKeys() }

// importedBefore is a priorImport from the ServiceImports the bridge
// wrote: a cluster listed in ServiceImport key's status was imported since
// (at latest) the ServiceImport's creation. Only meshfed's own
// ServiceImports count.
func (b *Bridge) importedBefore(cluster, key string) (time.Time, bool) {
	if !b.cfg.WriteImports {
		return time.Time{}, false
	}
	ns, name, _ := strings.Cut(key, "/")
	obj, err := b.imports.ByNamespace(ns).Get(name)
	if err != nil {
		return time.Time{}, false
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || u.GetLabels()[LabelManagedBy] != ManagedBy {
		return time.Time{}, false
	}
	clusters, _, _ := unstructured.NestedSlice(u.Object, "status", "clusters")
	for _, c := range clusters {
		if m, ok := c.(map[string]any); ok && m["cluster"] == cluster {
			return u.GetCreationTimestamp().Time, true
		}
	}
	return time.Time{}, false
}

func ptr[T any](v T) *T { return &v }

func clustersField(cs []mcsv1beta1.ClusterStatus) []any {
	out := make([]any, 0, len(cs))
	for _, c := range cs {
		out = append(out, map[string]any{"cluster": c.Cluster})
	}
	return out
}

// normalizeSpec drops what the API server defaults, so that a spec read
// back compares equal to the one written.
func normalizeSpec(s mcsv1beta1.ServiceImportSpec) mcsv1beta1.ServiceImportSpec {
	s.SessionAffinity = ""
	s.SessionAffinityConfig = nil
	s.IPFamilies = nil
	s.IPs = nil
	if len(s.Ports) == 0 {
		s.Ports = nil
	}
	return s
}

func toUnstructured(si *mcsv1beta1.ServiceImport) (*unstructured.Unstructured, error) {
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(si)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: obj}
	u.SetAPIVersion(mcsv1beta1.GroupVersion.String())
	u.SetKind("ServiceImport")
	delete(u.Object, "status")
	return u, nil
}

// RemoveImports deletes every ServiceImport the bridge wrote, in every
// namespace: what a cluster that leaves the federation does after its
// bridge has stopped.
func RemoveImports(ctx context.Context, dyn dynamic.Interface) error {
	list, err := dyn.Resource(ServiceImportGVR).List(ctx, metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedBy})
	if err != nil {
		return fmt.Errorf("list ServiceImports: %w", err)
	}
	var errs []error
	for _, u := range list.Items {
		if err := dyn.Resource(ServiceImportGVR).Namespace(u.GetNamespace()).Delete(ctx, u.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("serviceimport %s/%s: delete: %w", u.GetNamespace(), u.GetName(), err))
		}
	}
	return errors.Join(errs...)
}
