package rotation_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/controllerca"
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

// controller runs what a cluster's meshfed-controller runs for its CA: the
// CA loaded from the Secrets, its bundle published, and the reloader that
// applies each phase. It returns the Authority the controller signs with.
func controller(t *testing.T, ctx context.Context, client kubernetes.Interface, name, ns string) *ca.Authority {
	t.Helper()
	s := controllerca.Secrets{Namespace: ns, Root: "meshfed-root-ca", Intermediate: "meshfed-intermediate-ca", TrustDomain: td.String()}
	caCfg := ca.DefaultConfig()
	caCfg.ClusterName = name
	log := slog.New(slog.DiscardHandler)
	inter, err := controllerca.Load(ctx, client, s, caCfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.PublishBundle(ctx, client, ns, "meshfed-ca-bundle", inter.Bundle()); err != nil {
		t.Fatal(err)
	}
	authority := ca.NewAuthority(inter)
	r, err := controllerca.NewReloader(controllerca.ReloaderConfig{Client: client, Secrets: s, CA: caCfg, Authority: authority,
		Repair: time.Hour, Log: log, OnChange: func(ctx context.Context, inter *ca.Intermediate) error {
			return ca.PublishBundle(ctx, client, ns, "meshfed-ca-bundle", inter.Bundle())
		}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("%s's reloader: %v", name, err)
		}
	})
	return authority
}

// published is the bundle a cluster's controller published.
func published(t *testing.T, ctx context.Context, client kubernetes.Interface, ns string) *x509bundle.Bundle {
	t.Helper()
	cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, "meshfed-ca-bundle", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.ParseBundle(td, []byte(cm.Data[ca.BundleKey]), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The three phases, run as `meshfed certificate rotate` runs them, move a
// federation of a cluster keeping the root key (east) and a member without
// it (west) to a new root; each phase waits for the controllers (here their
// CA reloaders) to apply it. At every step a workload certificate of either
// cluster verifies against the other's published bundle, until finish drops
// the old root; the root key never reaches the member.
func TestRotationMovesEveryClusterToTheNewRoot(t *testing.T) {
	client := kubetest.StartAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	oldRoot, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"east-system", "west-system"} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ca.SaveRoot(ctx, client, "east-system", "meshfed-root-ca", oldRoot); err != nil {
		t.Fatal(err)
	}
	westInter, err := oldRoot.NewIntermediate("west", 24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.SaveIntermediate(ctx, client, "west-system", "meshfed-intermediate-ca", westInter); err != nil {
		t.Fatal(err)
	}
	authorities := map[string]*ca.Authority{
		"east-system": controller(t, ctx, client, "east", "east-system"),
		"west-system": controller(t, ctx, client, "west", "west-system"),
	}
	// open opens both clusters as one run of the command line does.
	open := func() []*rotation.Cluster {
		t.Helper()
		var out []*rotation.Cluster
		for _, name := range []string{"east", "west"} {
			c, err := rotation.Open(ctx, rotation.ClusterConfig{Name: name, Client: client, Namespace: name + "-system", RootSecret: "meshfed-root-ca",
				IntermediateSecret: "meshfed-intermediate-ca", BundleConfigMap: "meshfed-ca-bundle", TrustDomain: td, SVIDTTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c)
		}
		return out
	}
	run := func(phase string) error {
		t.Helper()
		r, err := rotation.New(open(), rotation.Options{Timeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return r.Run(ctx, phase)
	}
	// settle stands for the SVID lifetime passing: the time each phase was
	// applied, recorded on the Secret the rotation wrote, is moved back.
	settle := func() {
		t.Helper()
		for ns, secret := range map[string]string{"east-system": "meshfed-root-ca", "west-system": "meshfed-intermediate-ca"} {
			s, err := client.CoreV1().Secrets(ns).Get(ctx, secret, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			s.Annotations[ca.RotationTimeAnnotation] = time.Now().Add(-2 * time.Hour).UTC().Format(time.RFC3339)
			if _, err := client.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// svids issues a workload certificate in each cluster, as its
	// controller's CA signs now.
	svids := func() map[string][]*x509.Certificate {
		t.Helper()
		out := map[string][]*x509.Certificate{}
		for ns, a := range authorities {
			svid, err := a.Current().IssueSVID(spiffeid.RequireFromPath(td, "/ns/"+ns+"/sa/app"), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			out[ns] = svid.Certificates
		}
		return out
	}
	// crossVerify checks each certificate against the other cluster's
	// published bundle.
	crossVerify := func(step string, certs map[string][]*x509.Certificate, wantOK bool) {
		t.Helper()
		for ns, chain := range certs {
			other := map[string]string{"east-system": "west-system", "west-system": "east-system"}[ns]
			_, _, err := x509svid.Verify(chain, published(t, ctx, client, other))
			if wantOK && err != nil {
				t.Errorf("%s: a certificate of %s does not verify in %s: %v", step, ns, other, err)
			}
			if !wantOK && err == nil {
				t.Errorf("%s: a certificate of %s under the old root still verifies in %s", step, ns, other)
			}
		}
	}
	issuedUnder := func(step string, root *x509.Certificate) {
		t.Helper()
		for ns, a := range authorities {
			inter := a.Current()
			if r, err := ca.IssuerRoot(inter, inter.Bundle()); err != nil || !r.Equal(root) {
				t.Errorf("%s: %s signs under root %v (err %v), want %s", step, ns, r, err, ca.Fingerprint(root))
			}
		}
	}

	underOld := svids()
	crossVerify("before", underOld, true)

	if err := run(ca.PhaseAdd); err != nil {
		t.Fatalf("add: %v", err)
	}
	issuedUnder("after add", oldRoot.Certificate)
	for ns := range authorities {
		if n := len(published(t, ctx, client, ns).X509Authorities()); n != 2 {
			t.Errorf("after add: %s publishes %d roots, want the old and the new", ns, n)
		}
	}
	newRoot := oldRoot.Certificate
	for _, r := range published(t, ctx, client, "east-system").X509Authorities() {
		if !r.Equal(oldRoot.Certificate) {
			newRoot = r
		}
	}
	if err := run(ca.PhaseReissue); err == nil || !strings.Contains(err.Error(), "too early") {
		t.Fatalf("reissue before the SVID lifetime passed: %v, want it refused as too early", err)
	}
	settle()
	if err := run(ca.PhaseReissue); err != nil {
		t.Fatalf("reissue: %v", err)
	}
	issuedUnder("after reissue", newRoot)
	underNew := svids()
	crossVerify("after reissue, old certificates", underOld, true)
	crossVerify("after reissue, new certificates", underNew, true)

	settle()
	if err := run(ca.PhaseFinish); err != nil {
		t.Fatalf("finish: %v", err)
	}
	for ns := range authorities {
		if b := published(t, ctx, client, ns); len(b.X509Authorities()) != 1 || !b.HasX509Authority(newRoot) {
			t.Errorf("after finish: %s publishes %v, want the new root alone", ns, ca.Fingerprints(b))
		}
	}
	crossVerify("after finish, new certificates", underNew, true)
	crossVerify("after finish, old certificates", underOld, false)
	if err := run(ca.PhaseFinish); err != nil {
		t.Errorf("finish again: %v; want it to change nothing", err)
	}
	// The new root's key stayed with east: no Secret of west holds it.
	eastSecret, err := client.CoreV1().Secrets("east-system").Get(ctx, "meshfed-root-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	westSecrets, err := client.CoreV1().Secrets("west-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range westSecrets.Items {
		for k, v := range s.Data {
			if bytes.Contains(v, eastSecret.Data[ca.RootKeyKey]) {
				t.Errorf("west's Secret %s holds the root key in %s", s.Name, k)
			}
		}
	}
}
