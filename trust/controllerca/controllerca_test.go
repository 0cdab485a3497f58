package controllerca_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/controllerca"
	"github.com/meshfed/meshfed/trust/internal/kubetest"
)

const ns = "meshfed-system"

var td = spiffeid.RequireTrustDomainFromString("meshfed.local")

func secrets() controllerca.Secrets {
	return controllerca.Secrets{Namespace: ns, Root: "meshfed-root-ca", Intermediate: "meshfed-intermediate-ca", TrustDomain: td.String()}
}

func caConfig(cluster string) ca.Config {
	c := ca.DefaultConfig()
	c.ClusterName = cluster
	return c
}

func setup(t *testing.T) (kubernetes.Interface, context.Context) {
	t.Helper()
	client := kubetest.StartAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return client, ctx
}

// verifies reports whether leaf chains to a root of inter's bundle.
func verifies(leaf *x509.Certificate, inter *ca.Intermediate) error {
	roots := x509.NewCertPool()
	for _, r := range inter.Bundle().X509Authorities() {
		roots.AddCert(r)
	}
	mid := x509.NewCertPool()
	for _, c := range inter.Chain() {
		mid.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: mid, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// A cluster with no CA gets a root and an intermediate under it, kept in
// its Secrets: loading again gives the same root.
func TestLoadGeneratesARootOnceAndKeepsIt(t *testing.T) {
	client, ctx := setup(t)
	first, err := controllerca.Load(ctx, client, secrets(), caConfig("east"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	again, err := controllerca.Load(ctx, client, secrets(), caConfig("east"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !first.Bundle().Equal(again.Bundle()) || !first.Certificate().Equal(again.Certificate()) {
		t.Fatal("a second load made another root or intermediate")
	}
	if _, err := client.CoreV1().Secrets(ns).Get(ctx, "meshfed-root-ca", metav1.GetOptions{}); err != nil {
		t.Fatalf("root Secret: %v", err)
	}
}

// A cluster that holds only an intermediate signed elsewhere (the root key
// is not in it) uses that intermediate and generates no root beside it.
func TestLoadUsesASignedIntermediateWithoutARootOfItsOwn(t *testing.T) {
	client, ctx := setup(t)
	root, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("west", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.SaveIntermediate(ctx, client, ns, "meshfed-intermediate-ca", inter); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	got, err := controllerca.Load(ctx, client, secrets(), caConfig("west"), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Certificate().Equal(inter.Certificate()) {
		t.Fatal("Load did not use the signed intermediate")
	}
	if _, err := client.CoreV1().Secrets(ns).Get(ctx, "meshfed-root-ca", metav1.GetOptions{}); err == nil {
		t.Fatal("Load generated a root beside a signed intermediate")
	}
	if !strings.Contains(logs.String(), "the root key is not in this cluster") {
		t.Errorf("nothing logged about using a signed intermediate: %s", logs.String())
	}
}

// The serving certificate names the controller's SPIFFE ID and every DNS
// name and IP address clients dial, and verifies against the bundle.
func TestServingSVIDCarriesDNSNamesAndIPAddresses(t *testing.T) {
	root, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("east", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(td, "/ns/meshfed-system/sa/meshfed-controller")
	svid, err := controllerca.ServingSVID(inter, id, time.Hour, []string{"meshfed-controller.meshfed-system.svc", "127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("URI SANs %v, want %s", leaf.URIs, id)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "meshfed-controller.meshfed-system.svc" {
		t.Errorf("DNS names %v", leaf.DNSNames)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !leaf.IPAddresses[1].Equal(net.ParseIP("::1")) {
		t.Errorf("IP addresses %v", leaf.IPAddresses)
	}
	if err := verifies(leaf, inter); err != nil {
		t.Fatalf("serving certificate does not verify: %v", err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("hostname 127.0.0.1: %v", err)
	}
	// A certificate from another root does not verify against this bundle.
	other, _ := ca.GenerateRoot(td, time.Hour)
	otherInter, _ := other.NewIntermediate("x", time.Hour, nil)
	if err := verifies(leaf, otherInter); err == nil {
		t.Error("the serving certificate verified against another root")
	}
}

// The reloader follows the intermediate Secret: a new intermediate is
// installed in the Authority and OnChange runs; a corrupt Secret is logged
// and the CA in use keeps serving.
func TestReloaderFollowsTheIntermediateSecret(t *testing.T) {
	client, ctx := setup(t)
	root, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	first, err := root.NewIntermediate("west", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.SaveIntermediate(ctx, client, ns, "meshfed-intermediate-ca", first); err != nil {
		t.Fatal(err)
	}
	authority := ca.NewAuthority(first)
	var mu sync.Mutex
	var changes []*ca.Intermediate
	var logs syncBuffer
	r, err := controllerca.NewReloader(controllerca.ReloaderConfig{
		Client: client, Secrets: secrets(), CA: caConfig("west"), Authority: authority, Repair: time.Hour,
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
		OnChange: func(_ context.Context, inter *ca.Intermediate) error {
			mu.Lock()
			changes = append(changes, inter)
			mu.Unlock()
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	second, err := root.NewIntermediate("west", 2*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.SaveIntermediate(ctx, client, ns, "meshfed-intermediate-ca", second); err != nil {
		t.Fatal(err)
	}
	eventually("the new intermediate was not installed", func() bool {
		return authority.Current().Certificate().Equal(second.Certificate())
	})
	eventually("OnChange did not run", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(changes) > 0 && changes[len(changes)-1].Certificate().Equal(second.Certificate())
	})

	sec, err := client.CoreV1().Secrets(ns).Get(ctx, "meshfed-intermediate-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k := range sec.Data {
		sec.Data[k] = []byte("not PEM")
	}
	if _, err := client.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("a corrupt Secret was not reported", func() bool {
		return strings.Contains(logs.String(), "CA Secrets not applied; the current CA keeps serving")
	})
	if !authority.Current().Certificate().Equal(second.Certificate()) {
		t.Fatal("a corrupt Secret replaced the CA in use")
	}
}

// syncBuffer is a bytes.Buffer safe for the reloader's goroutine and the
// test's.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
