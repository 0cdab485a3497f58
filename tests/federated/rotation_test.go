package federated_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/localmesh"
	"github.com/meshfed/meshfed/tests/internal/suite"
	"github.com/meshfed/meshfed/trust/ca"
)

// rotationSVIDTTL is the workloads' SVID lifetime in the rotation test, the
// shortest the CA accepts: agents renew every 30 s, and a phase settles
// (SVID lifetime plus grpc-go's one-minute file refresh) in two minutes.
const rotationSVIDTTL = time.Minute

// TestRootRotationAcrossClustersFailsNoRPC rotates the federation root of
// two sandbox clusters as a user would, with `meshfed certificate rotate`
// run as a process for each phase, while bookbuyer in east calls the
// bookstore under a 50/50 split between bookstore-v1 in east and
// bookstore-v2 in west over mTLS without pause. Right after the reissue
// phase east's bookbuyer is restarted, so a client holding an SVID under
// the new root handshakes with a server in west still holding one under the
// old root. No RPC may fail; at the end every workload's certificate files
// chain to the new root and trust it alone.
func TestRootRotationAcrossClustersFailsNoRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	h := suite.Start(ctx, t, localmesh.Config{
		Clusters: []string{"east", "west"}, Interval: 25 * time.Millisecond,
		Namespaces: []string{"bookstore", "bookbuyer", "bookthief"}, SVIDTTL: rotationSVIDTTL, Keep: 30 * time.Minute,
	})
	if err := h.ApplyAll(ctx, []localmesh.Step{
		{Cluster: "east", Manifest: "apps/bookstore.yaml"}, {Cluster: "east", Manifest: "apps/bookstore-v1.yaml"},
		{Cluster: "east", Manifest: "apps/bookbuyer.yaml"}, {Cluster: "east", Manifest: "access"},
		{Cluster: "west", Manifest: "apps/bookstore.yaml"}, {Cluster: "west", Manifest: "apps/bookstore-v2.yaml"},
		{Cluster: "west", Manifest: "access"}, {Cluster: "west", Manifest: "export/bookstore-v2.yaml"},
		{Cluster: "east", Manifest: "split/bookstore-50-50.yaml"},
	}); err != nil {
		t.Fatal(err)
	}
	st := h.Stats()
	if err := localmesh.WaitUntil(ctx, 3*time.Minute, "bookbuyer in east is answered by both clusters", func(now time.Time) (bool, string) {
		r := st.Recent(now, 2*time.Second, buyerEast, "BuyBook")
		return r.By[v1East] > 0 && r.By[v2West] > 0, fmt.Sprint(r.By)
	}); err != nil {
		t.Fatal(err)
	}

	td := spiffeid.RequireTrustDomainFromString(deploy.DefaultTrustDomain)
	rootOf := func(cluster string) *ca.Root {
		t.Helper()
		r, err := ca.LoadRoot(ctx, h.Cluster(cluster).Sandbox.Client(), deploy.DefaultNamespace, installer.RootSecretName, td)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// West holds no root key (cluster join signed its intermediate): the
	// root it signs with is its intermediate's issuer.
	signingRoot := func(cluster string) *x509.Certificate {
		t.Helper()
		inter, err := ca.LoadIntermediate(ctx, h.Cluster(cluster).Sandbox.Client(), deploy.DefaultNamespace, installer.IntermediateSecretName, td)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ca.IssuerRoot(inter, inter.Bundle())
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if _, err := h.Cluster("west").Sandbox.Client().CoreV1().Secrets(deploy.DefaultNamespace).Get(ctx, installer.RootSecretName, metav1.GetOptions{}); err == nil {
		t.Fatal("west holds a copy of the root key after cluster join")
	}
	oldRoot := rootOf("east")
	kubeconfigs := "--kubeconfigs=" + h.Cluster("east").Kubeconfig + "," + h.Cluster("west").Kubeconfig
	rotate := func(args ...string) (string, error) {
		out, err := h.Meshfed(ctx, "east", append([]string{"certificate", "rotate", kubeconfigs}, args...)...)
		t.Logf("meshfed certificate rotate %s:\n%s", strings.Join(args, " "), out)
		return out, err
	}

	from := time.Now()
	if _, err := rotate("--phase=finish"); err == nil || !strings.Contains(err.Error(), "start with --phase=add") {
		t.Fatalf("finish before add: want a refusal naming --phase=add, got %v", err)
	}
	if _, err := rotate("--phase=add"); err != nil {
		t.Fatal(err)
	}
	if _, err := rotate("--phase=add"); err != nil { // idempotent
		t.Fatalf("add again: %v", err)
	}
	if _, err := rotate("--phase=finish"); err == nil || !strings.Contains(err.Error(), "--phase=reissue first") {
		t.Fatalf("finish before reissue: want a refusal naming --phase=reissue, got %v", err)
	}
	if _, err := rotate("--phase=reissue"); err == nil || !strings.Contains(err.Error(), "too early") {
		t.Fatalf("reissue before the workloads renewed: want a refusal, got %v", err)
	}
	if _, err := rotate("--phase=reissue", "--wait"); err != nil {
		t.Fatal(err)
	}
	newRoot := rootOf("east")
	if newRoot.Certificate.Equal(oldRoot.Certificate) || !signingRoot("west").Equal(newRoot.Certificate) || !signingRoot("east").Equal(newRoot.Certificate) {
		t.Fatal("after reissue east and west should both sign with one new root")
	}

	// A fresh client under the new root against west's servers, some of
	// them still under the old root: its Pod's agent verifies the issuer
	// with the bundle ConfigMap as now published (mounted at its start).
	restarted := time.Now()
	if err := h.Kubectl(ctx, "east", "delete", "pods", "--all", "-n", "bookbuyer", "--wait=false"); err != nil {
		t.Fatal(err)
	}
	if err := localmesh.WaitUntil(ctx, 2*time.Minute, "the restarted bookbuyer is answered by both clusters", func(now time.Time) (bool, string) {
		r := st.Tally(buyerEast, "BuyBook", restarted.Add(5*time.Second), now)
		return r.By[v1East] > 0 && r.By[v2West] > 0, fmt.Sprint(r.By)
	}); err != nil {
		t.Fatal(err)
	}

	if _, err := rotate("--phase=finish", "--wait"); err != nil {
		t.Fatal(err)
	}
	if _, err := rotate("--phase=finish"); err != nil { // idempotent
		t.Fatalf("finish again: %v", err)
	}

	// Every workload's files: the certificate chains to the new root, and
	// the bundle holds the new root alone (at the agents' next renewal).
	newOnly := x509bundle.FromX509Authorities(td, []*x509.Certificate{newRoot.Certificate})
	oldOnly := oldRoot.Bundle()
	if err := localmesh.WaitUntil(ctx, 2*time.Minute, "every workload's certificate chains to the new root only", func(time.Time) (bool, string) {
		n, bad := checkCertDirs(h.PodsDir(), newOnly, oldOnly)
		return n > 0 && bad == "", fmt.Sprintf("%d workloads; %s", n, bad)
	}); err != nil {
		t.Fatal(err)
	}
	if err := localmesh.WaitUntil(ctx, time.Minute, "traffic after the rotation", func(now time.Time) (bool, string) {
		r := st.Recent(now, 2*time.Second, buyerEast, "BuyBook")
		return r.By[v1East] > 0 && r.By[v2West] > 0, fmt.Sprint(r.By)
	}); err != nil {
		t.Fatal(err)
	}

	all := st.Tally(buyerEast, "BuyBook", from, time.Now())
	if all.Failed > 0 || all.Denied > 0 {
		t.Fatalf("%d failed and %d denied of %d BuyBook RPCs during the rotation: %v", all.Failed, all.Denied, all.Total, all.By)
	}
	if all.By[v2West] == 0 || all.By[v1East] == 0 {
		t.Fatalf("the rotation should have been watched over both clusters: %v", all.By)
	}
	t.Logf("root %s → %s in %v: %d BuyBook RPCs from east's bookbuyer (%d answered in east, %d in west), 0 failed",
		ca.Fingerprint(oldRoot.Certificate), ca.Fingerprint(newRoot.Certificate), time.Since(from).Round(time.Second),
		all.Total, all.By[v1East], all.By[v2West])
}

// checkCertDirs reads every running workload's agent files under dir and
// returns how many there are and what is wrong with them, if anything:
// each certificate must verify against newOnly and not against oldOnly, and
// each bundle file must equal newOnly.
func checkCertDirs(dir string, newOnly, oldOnly *x509bundle.Bundle) (int, string) {
	// <cluster>/<namespace>/<pod>/volumes/…/certificate.pem, wherever the
	// Pod's agent writes it.
	var certs []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "certificate.pem" {
			certs = append(certs, path)
		}
		return nil
	})
	var bad []string
	for _, f := range certs {
		pod, _, _ := strings.Cut(strings.TrimPrefix(f, dir+string(filepath.Separator)), string(filepath.Separator)+"volumes")
		chainPEM, err1 := os.ReadFile(f)
		bundlePEM, err2 := os.ReadFile(filepath.Join(filepath.Dir(f), "ca_certificate.pem"))
		if err1 != nil || err2 != nil {
			bad = append(bad, fmt.Sprintf("%s: %v %v", pod, err1, err2))
			continue
		}
		chain, err := ca.ParseCertificatesPEM(chainPEM)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", pod, err))
			continue
		}
		if chain[0].NotAfter.Before(time.Now()) {
			continue // a stopped Pod's leftover files
		}
		if _, _, err := x509svid.Verify(chain, newOnly); err != nil {
			bad = append(bad, fmt.Sprintf("%s: certificate does not chain to the new root: %v", pod, err))
		}
		if _, _, err := x509svid.Verify(chain, oldOnly); err == nil {
			bad = append(bad, pod+": certificate still chains to the old root")
		}
		roots, err := ca.ParseCertificatesPEM(bundlePEM)
		if err != nil || len(roots) != 1 || !newOnly.HasX509Authority(roots[0]) {
			bad = append(bad, fmt.Sprintf("%s: bundle holds %d roots, want the new root alone", pod, len(roots)))
		}
	}
	return len(certs), strings.Join(bad, "; ")
}
