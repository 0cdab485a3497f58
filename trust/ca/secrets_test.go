package ca_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/internal/kubetest"
)

const ns = "meshfed-system"

func TestSecretsShareOneRootAcrossClustersAndRotateIt(t *testing.T) {
	kube := kubetest.StartAPIServer(t)
	ctx := context.Background()
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := ca.DefaultConfig()
	cfg.ClusterName = "east"

	root, created, err := ca.LoadOrCreateRoot(ctx, kube, ns, "meshfed-root-ca", cfg)
	if err != nil || !created {
		t.Fatalf("first install: created=%v err=%v", created, err)
	}
	again, created, err := ca.LoadOrCreateRoot(ctx, kube, ns, "meshfed-root-ca", cfg)
	if err != nil || created || !again.Certificate.Equal(root.Certificate) {
		t.Fatalf("second install must reuse the root: created=%v err=%v", created, err)
	}

	east, err := ca.EnsureIntermediate(ctx, kube, ns, "meshfed-ca", root, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	same, err := ca.EnsureIntermediate(ctx, kube, ns, "meshfed-ca", root, nil, cfg)
	if err != nil || !same.Certificate().Equal(east.Certificate()) {
		t.Fatalf("EnsureIntermediate is not idempotent: %v", err)
	}
	sec, err := kube.CoreV1().Secrets(ns).Get(ctx, "meshfed-ca", metav1.GetOptions{})
	if err != nil || sec.Type != corev1.SecretTypeTLS || len(sec.Data["tls.crt"]) == 0 || len(sec.Data["tls.key"]) == 0 || len(sec.Data["ca.crt"]) == 0 {
		t.Fatalf("intermediate secret layout: %v %v", sec.Type, err)
	}
	// A second cluster reads the first cluster's root (as `meshfed install
	// --root-from-kubeconfig` would) and signs its own intermediate: here the
	// second cluster is a second secret name in the same API server.
	shared, err := ca.LoadRoot(ctx, kube, ns, "meshfed-root-ca", td)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClusterName = "west"
	west, err := ca.EnsureIntermediate(ctx, kube, ns, "meshfed-ca-west", shared, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := east.IssueSVID(workloadID(t, td, "bookbuyer", "bookbuyer"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, west.Bundle()); err != nil {
		t.Fatalf("east SVID against west bundle: %v", err)
	}
	// The signed-intermediate path reads the same Secret without the root key.
	if _, err := ca.LoadIntermediate(ctx, kube, ns, "meshfed-ca-west", td); err != nil {
		t.Fatal(err)
	}

	// Rotation through the Secrets: union, reissue under the new root, drop the old.
	newRoot, err := ca.GenerateRoot(td, cfg.RootTTL)
	if err != nil {
		t.Fatal(err)
	}
	union, _ := ca.Union(root.Bundle(), newRoot.Bundle())
	cfg.ClusterName = "east"
	step1, err := ca.EnsureIntermediate(ctx, kube, ns, "meshfed-ca", root, union, cfg)
	if err != nil || !step1.Certificate().Equal(east.Certificate()) || len(step1.Bundle().X509Authorities()) != 2 {
		t.Fatalf("step 1 must keep the intermediate and widen the bundle: %v", err)
	}
	step2, err := ca.EnsureIntermediate(ctx, kube, ns, "meshfed-ca", newRoot, union, cfg)
	if err != nil || step2.Certificate().CheckSignatureFrom(newRoot.Certificate) != nil {
		t.Fatalf("step 2 must reissue under the new root: %v", err)
	}
	step3, err := ca.EnsureIntermediate(ctx, kube, ns, "meshfed-ca", newRoot, newRoot.Bundle(), cfg)
	if err != nil || !step3.Certificate().Equal(step2.Certificate()) || step3.Bundle().HasX509Authority(root.Certificate) {
		t.Fatalf("step 3 must keep the new intermediate and drop the old root: %v", err)
	}
	stored, err := ca.LoadIntermediate(ctx, kube, ns, "meshfed-ca", td)
	if err != nil || !stored.Bundle().Equal(newRoot.Bundle()) {
		t.Fatalf("stored bundle after rotation: %v", err)
	}
	if err := ca.PublishBundle(ctx, kube, ns, "meshfed-ca-bundle", stored.Bundle()); err != nil {
		t.Fatal(err)
	}

	// A root Secret holding something that is not a CA is refused and left alone.
	bad := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "broken-root"}, Data: map[string][]byte{
		"ca.crt": svid.Certificates[0].Raw, "ca.key": []byte("x"),
	}}
	if _, err := kube.CoreV1().Secrets(ns).Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, _, err = ca.LoadOrCreateRoot(ctx, kube, ns, "broken-root", cfg)
	if err == nil || !strings.Contains(err.Error(), "root secret meshfed-system/broken-root") {
		t.Fatalf("broken root secret: err = %v", err)
	}
}
