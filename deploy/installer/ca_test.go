package installer_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
	"github.com/meshfed/meshfed/trust/ca"
)

// Two clusters installed so that they share one root: the first generates
// it, the second gets an intermediate signed by it through the first
// cluster's API server (never the root key). A signed
// intermediate keeps the root key out of a third install, and bad inputs
// are refused before anything is written.
func TestInstallSharesTheFederationRoot(t *testing.T) {
	sb := sandboxtest.Start(t, "east", "west")
	east, err := installer.New(sb.Cluster("east").RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	west, err := installer.New(sb.Cluster("west").RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("meshfed.local")

	res, err := east.Install(ctx(t), opts("meshfed", "meshfed-system", "east"))
	if err != nil {
		t.Fatal(err)
	}
	if res.CA != "new federation root generated" {
		t.Errorf("first install: CA %q", res.CA)
	}
	eastRoot, err := ca.LoadRoot(ctx(t), east.Kube(), "meshfed-system", installer.RootSecretName, td)
	if err != nil {
		t.Fatal(err)
	}
	again, err := east.Install(ctx(t), opts("meshfed", "meshfed-system", "east"))
	if err != nil || again.CA != "existing root kept" {
		t.Fatalf("re-install: CA %q, err %v", again.CA, err)
	}

	// With the sidecar injector: its webhook trusts the federation root,
	// which west holds only inside its intermediate Secret's bundle.
	westOpts := opts("meshfed", "meshfed-system", "west")
	westOpts.Injector = true
	res, err = west.InstallWithCA(ctx(t), westOpts, installer.CASource{RootFrom: east.Kube()})
	if err != nil {
		t.Fatal(err)
	}
	wh, err := west.Kube().AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx(t), deploy.InjectorWebhookName(westOpts), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ca.ParseCertificatesPEM(wh.Webhooks[0].ClientConfig.CABundle); err != nil || len(got) != 1 || !got[0].Equal(eastRoot.Certificate) {
		t.Errorf("west's injector webhook caBundle should be east's root alone: %d certificates, %v", len(got), err)
	}
	// West got an intermediate signed by east's root, not the root key.
	if _, err := ca.LoadRoot(ctx(t), west.Kube(), "meshfed-system", installer.RootSecretName, td); !apierrors.IsNotFound(err) {
		t.Fatalf("west holds a root Secret after --root-from-kubeconfig (err %v)", err)
	}
	westCA, err := ca.LoadIntermediate(ctx(t), west.Kube(), "meshfed-system", installer.IntermediateSecretName, td)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := ca.IssuerRoot(westCA, eastRoot.Bundle()); err != nil || !r.Equal(eastRoot.Certificate) {
		t.Fatalf("west's intermediate does not chain to east's root: %v", err)
	}
	if again, err := west.InstallCA(ctx(t), opts("meshfed", "meshfed-system", "west"), installer.CASource{RootFrom: east.Kube()}); err != nil || !strings.Contains(again, "already signed") {
		t.Errorf("second install from east's root: %q, %v; want the intermediate kept", again, err)
	}
	westRoot := eastRoot // the one root of the federation

	// Taking a root from where none is kept, or over a different one, is
	// refused with errors a caller can tell apart.
	if _, err := west.InstallCA(ctx(t), opts("meshfed", "meshfed-system", "west"), installer.CASource{RootFrom: east.Kube(), RootFromNamespace: "no-such-namespace"}); !errors.Is(err, installer.ErrNoPeerRoot) {
		t.Errorf("root from a namespace without one: err = %v, want ErrNoPeerRoot", err)
	}
	mustNamespace(t, east, "other-root")
	if err := ca.SaveRoot(ctx(t), east.Kube(), "other-root", installer.RootSecretName, mustRoot(t, td)); err != nil {
		t.Fatal(err)
	}
	if _, err := west.InstallCA(ctx(t), opts("meshfed", "meshfed-system", "west"), installer.CASource{RootFrom: east.Kube(), RootFromNamespace: "other-root"}); !errors.Is(err, installer.ErrDifferentRoot) {
		t.Errorf("a second, different root: err = %v, want ErrDifferentRoot", err)
	}

	// A cluster installed with a root of its own is refused the
	// federation's unless it asks to replace its own; then its root and
	// intermediate are dropped and its new intermediate chains to the
	// federation root. Asking again changes nothing.
	mustNamespace(t, west, "own-root")
	ownRoot := mustRoot(t, td)
	if err := ca.SaveRoot(ctx(t), west.Kube(), "own-root", installer.RootSecretName, ownRoot); err != nil {
		t.Fatal(err)
	}
	ownInter, err := ownRoot.NewIntermediate("west", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.SaveIntermediate(ctx(t), west.Kube(), "own-root", installer.IntermediateSecretName, ownInter); err != nil {
		t.Fatal(err)
	}
	ownOpts := opts("own", "own-root", "west")
	if _, err := west.InstallCA(ctx(t), ownOpts, installer.CASource{RootFrom: east.Kube()}); !errors.Is(err, installer.ErrDifferentRoot) {
		t.Errorf("the federation root over west's own: err = %v, want ErrDifferentRoot", err)
	}
	replaced, err := west.InstallCA(ctx(t), ownOpts, installer.CASource{RootFrom: east.Kube(), ReplaceRoot: true})
	if err != nil || !strings.Contains(replaced, "dropped west's own root") {
		t.Fatalf("replace west's own root: %q, %v", replaced, err)
	}
	if _, err := ca.LoadRoot(ctx(t), west.Kube(), "own-root", installer.RootSecretName, td); !apierrors.IsNotFound(err) {
		t.Errorf("west still holds a root Secret after replacing its root (err %v)", err)
	}
	newInter, err := ca.LoadIntermediate(ctx(t), west.Kube(), "own-root", installer.IntermediateSecretName, td)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := ca.IssuerRoot(newInter, eastRoot.Bundle()); err != nil || !r.Equal(eastRoot.Certificate) {
		t.Errorf("west's new intermediate does not chain to the federation root: %v", err)
	}
	if again, err := west.InstallCA(ctx(t), ownOpts, installer.CASource{RootFrom: east.Kube(), ReplaceRoot: true}); err != nil || strings.Contains(again, "dropped") {
		t.Errorf("replacing again: %q, %v; want the intermediate kept", again, err)
	}

	// An intermediate for west made from the shared root verifies an SVID
	// issued in east: one trust domain across both clusters.
	eastInter, err := eastRoot.NewIntermediate("east", time.Hour, eastRoot.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	svid, err := eastInter.IssueSVID(spiffeid.RequireFromString("spiffe://meshfed.local/ns/bookbuyer/sa/bookbuyer"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	westInter, err := westRoot.NewIntermediate("west", time.Hour, westRoot.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, westInter.Bundle()); err != nil {
		t.Fatalf("east's SVID does not verify against west's bundle: %v", err)
	}

	// A signed intermediate (made where the root is, handed over as
	// files): the root key never reaches the cluster.
	keyPEM, err := eastInter.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name string
		src  installer.CASource
		want string
	}{
		{"both root and intermediate", installer.CASource{RootFrom: east.Kube(), IntermediateChain: eastInter.ChainPEM(), IntermediateKey: keyPEM, TrustBundle: eastInter.BundlePEM()}, "not both"},
		{"replacing the root without one to take", installer.CASource{ReplaceRoot: true}, "other cluster's root"},
		{"intermediate without key", installer.CASource{IntermediateChain: eastInter.ChainPEM(), TrustBundle: eastInter.BundlePEM()}, "its key"},
		{"not a certificate", installer.CASource{IntermediateChain: []byte("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"), IntermediateKey: keyPEM, TrustBundle: eastInter.BundlePEM()}, "signed intermediate"},
		{"bundle of another root", installer.CASource{IntermediateChain: eastInter.ChainPEM(), IntermediateKey: keyPEM, TrustBundle: mustOtherRoot(t, td)}, "signed intermediate"},
	}
	for _, b := range bad {
		t.Run("refuses "+b.name, func(t *testing.T) {
			_, err := west.InstallWithCA(ctx(t), opts("other", "other-system", "north"), b.src)
			if err == nil || !strings.Contains(err.Error(), b.want) {
				t.Fatalf("err = %v; want it to mention %q", err, b.want)
			}
		})
	}
	res, err = west.InstallWithCA(ctx(t), opts("offline", "offline-system", "west"), installer.CASource{
		IntermediateChain: eastInter.ChainPEM(), IntermediateKey: keyPEM, TrustBundle: eastInter.BundlePEM(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.CA, "root key is not in this cluster") {
		t.Errorf("signed intermediate install: CA %q", res.CA)
	}
	if _, err := ca.LoadRoot(ctx(t), west.Kube(), "offline-system", installer.RootSecretName, td); err == nil {
		t.Error("a root Secret exists in the namespace installed with a signed intermediate")
	}
	if _, err := ca.LoadIntermediate(ctx(t), west.Kube(), "offline-system", installer.IntermediateSecretName, td); err != nil {
		t.Errorf("signed intermediate not loadable by the controller: %v", err)
	}
}

func mustOtherRoot(t *testing.T, td spiffeid.TrustDomain) []byte {
	t.Helper()
	return mustRoot(t, td).CertificatePEM()
}

func mustRoot(t *testing.T, td spiffeid.TrustDomain) *ca.Root {
	t.Helper()
	r, err := ca.GenerateRoot(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
