// Package kubetest starts a real kube-apiserver and etcd (through
// controller-runtime's envtest) for trust's tests, and mints ServiceAccount
// tokens with the TokenRequest API. It is test support only.
package kubetest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meshfed/meshfed/sandbox"
)

// assetsDir finds kube-apiserver and etcd: $KUBEBUILDER_ASSETS, else the
// meshfed sandbox's cache (built from the pinned tools modules on first use).
func assetsDir() (string, error) {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d, nil
	}
	return sandbox.EnsureBinaries(sandbox.AssetsOptions{Progress: os.Stderr})
}

// StartAPIServer starts a kube-apiserver and etcd (no controller manager:
// trust needs only TokenRequest and TokenReview) for the test and stops them
// at cleanup.
func StartAPIServer(t testing.TB) kubernetes.Interface {
	t.Helper()
	dir, err := assetsDir()
	if err != nil {
		t.Fatalf("kube-apiserver binaries: %v", err)
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			t.Fatalf("no %s in %s: %v", bin, dir, err)
		}
	}
	env := &envtest.Environment{BinaryAssetsDirectory: dir, ControlPlaneStartTimeout: 2 * time.Minute}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop kube-apiserver: %v", err)
		}
	})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// CreateServiceAccount makes namespace ns (if needed) and ServiceAccount sa.
func CreateServiceAccount(t testing.TB, client kubernetes.Interface, ns, sa string) {
	t.Helper()
	ctx := context.Background()
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !isAlreadyExists(err) {
		t.Fatalf("namespace %s: %v", ns, err)
	}
	_, err = client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil && !isAlreadyExists(err) {
		t.Fatalf("serviceaccount %s/%s: %v", ns, sa, err)
	}
}

// MeshNamespace makes namespace ns (if needed) part of mesh "meshfed", as
// `meshfed namespace add` does, so the issuer signs for it.
func MeshNamespace(t testing.TB, client kubernetes.Interface, ns string) {
	t.Helper()
	ctx := context.Background()
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !isAlreadyExists(err) {
		t.Fatalf("namespace %s: %v", ns, err)
	}
	patch := []byte(`{"metadata":{"labels":{"meshfed.io/monitored-by":"meshfed"}}}`)
	if _, err := client.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("namespace %s: label: %v", ns, err)
	}
}

// Token returns a ServiceAccount token for ns/sa with the given audience,
// as the kubelet would project it into a Pod.
func Token(ctx context.Context, client kubernetes.Interface, ns, sa, audience string) (string, error) {
	exp := int64(600)
	tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// MustToken is Token that fails the test on error.
func MustToken(t testing.TB, client kubernetes.Interface, ns, sa, audience string) string {
	t.Helper()
	tok, err := Token(context.Background(), client, ns, sa, audience)
	if err != nil {
		t.Fatalf("token for %s/%s (audience %q): %v", ns, sa, audience, err)
	}
	return tok
}
