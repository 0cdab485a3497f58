package rotation_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/internal/kubetest"
	"github.com/meshfed/meshfed/trust/rotation"
)

var td = spiffeid.RequireTrustDomainFromString("meshfed.local")

// cluster opens the CA kept in namespace ns of client as cluster name (one
// API server stands for several clusters, one namespace each).
func cluster(t *testing.T, ctx context.Context, client kubernetes.Interface, name, ns string, root *ca.Root) (*rotation.Cluster, error) {
	t.Helper()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if root != nil {
		if err := ca.SaveRoot(ctx, client, ns, "meshfed-root-ca", root); err != nil {
			t.Fatal(err)
		}
	}
	return rotation.Open(ctx, rotation.ClusterConfig{Name: name, Client: client, Namespace: ns, RootSecret: "meshfed-root-ca",
		IntermediateSecret: "meshfed-intermediate-ca", BundleConfigMap: "meshfed-ca-bundle", TrustDomain: td, SVIDTTL: time.Hour})
}

// Every phase refuses what would break the federation, before it changes
// anything: clusters of two federations, a phase out of order, an unknown
// phase, a cluster whose CA cannot be found.
func TestRotationRefusesWhatWouldBreakTheFederation(t *testing.T) {
	client := kubetest.StartAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rootA, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rootB, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	east, err := cluster(t, ctx, client, "east", "east-system", rootA)
	if err != nil {
		t.Fatal(err)
	}
	west, err := cluster(t, ctx, client, "west", "west-system", rootB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cluster(t, ctx, client, "north", "north-system", nil); err == nil || !strings.Contains(err.Error(), "neither root Secret") {
		t.Errorf("a cluster without CA Secrets: %v", err)
	}
	if _, err := rotation.New(nil, rotation.Options{}); err == nil {
		t.Error("a rotation of no clusters was accepted")
	}
	for _, tc := range []struct {
		name     string
		clusters []*rotation.Cluster
		phase    string
		want     string
	}{
		{"two federations", []*rotation.Cluster{east, west}, ca.PhaseAdd, "are they one federation?"},
		{"reissue before add", []*rotation.Cluster{east}, ca.PhaseReissue, "run --phase=add first"},
		{"finish before add", []*rotation.Cluster{east}, ca.PhaseFinish, "start with --phase=add"},
		{"unknown phase", []*rotation.Cluster{east}, "rollback", "want add, reissue or finish"},
	} {
		r, err := rotation.New(tc.clusters, rotation.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		err = r.Run(ctx, tc.phase)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	// Nothing was written: each root Secret is as it was.
	for ns, root := range map[string]*ca.Root{"east-system": rootA, "west-system": rootB} {
		s, err := client.CoreV1().Secrets(ns).Get(ctx, "meshfed-root-ca", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if string(s.Data[ca.RootCertKey]) != string(root.CertificatePEM()) || s.Data[ca.NextRootCertKey] != nil || len(s.Annotations[ca.RotationPhaseAnnotation]) != 0 {
			t.Errorf("%s: the refused phases changed the root Secret", ns)
		}
	}
}
