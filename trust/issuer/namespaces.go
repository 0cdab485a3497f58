package issuer

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/deploy"
)

// ErrNotMeshed marks a caller whose namespace is not part of the mesh.
var ErrNotMeshed = errors.New("namespace is not part of the mesh")

// NamespacePolicy decides whether the issuer may sign for a namespace. It
// returns nil for a meshed namespace, an error wrapping ErrNotMeshed for
// any other, and any other error when it could not decide. Called
// concurrently from request goroutines; may block on the network.
type NamespacePolicy interface {
	Meshed(ctx context.Context, namespace string) error
}

// MeshNamespaces is the NamespacePolicy of a mesh: a namespace is meshed
// when it carries meshfed.io/monitored-by=<MeshName> (what `meshfed
// namespace add` sets) and is not being deleted. It reads the namespace
// from the API server on every request, so a namespace removed from the
// mesh gets no further SVIDs. The controller's ServiceAccount needs "get"
// on namespaces.
type MeshNamespaces struct {
	Client   kubernetes.Interface
	MeshName string
}

// Meshed implements NamespacePolicy.
func (m MeshNamespaces) Meshed(ctx context.Context, namespace string) error {
	ns, err := m.Client.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: namespace %q does not exist", ErrNotMeshed, namespace)
	case err != nil:
		return fmt.Errorf("namespace %q: %w", namespace, err)
	case ns.DeletionTimestamp != nil:
		return fmt.Errorf("%w: namespace %q is being deleted", ErrNotMeshed, namespace)
	case ns.Labels[deploy.LabelMonitoredBy] != m.MeshName:
		return fmt.Errorf("%w: namespace %q is not part of mesh %q; meshfed issues certificates only in the mesh's namespaces (add it with: meshfed namespace add %s --mesh-name %s)",
			ErrNotMeshed, namespace, m.MeshName, namespace, m.MeshName)
	}
	return nil
}
