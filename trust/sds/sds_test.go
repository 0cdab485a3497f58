package sds_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/sds"
)

func TestProxySecretsCarryOnlyTheProxysOwnIdentity(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("meshfed.local")
	root, _ := ca.GenerateRoot(td, time.Hour)
	inter, _ := root.NewIntermediate("east", time.Hour, nil)
	bookstore := spiffeid.RequireFromString("spiffe://meshfed.local/ns/bookstore/sa/bookstore")
	bookbuyer := spiffeid.RequireFromString("spiffe://meshfed.local/ns/bookbuyer/sa/bookbuyer")
	svid, err := inter.IssueSVID(bookstore, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	secrets, err := sds.ProxySecrets(bookstore, svid, inter.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets) != 2 || secrets[0].Name != bookstore.String() || secrets[1].Name != "bundle:spiffe://meshfed.local" {
		t.Fatalf("secrets = %v", secrets)
	}
	tc := secrets[0].GetTlsCertificate()
	pair, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("identity secret is not a usable key pair: %v", err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if id, _ := x509svid.IDFromCert(leaf); id != bookstore {
		t.Fatalf("identity secret is for %s", id)
	}
	roots, err := ca.ParseCertificatesPEM(secrets[1].GetValidationContext().GetTrustedCa().GetInlineBytes())
	if err != nil || len(roots) != 1 || !roots[0].Equal(root.Certificate) {
		t.Fatalf("validation context roots = %v, %v", roots, err)
	}

	if _, err := sds.ProxySecrets(bookbuyer, svid, inter.Bundle()); !errors.Is(err, sds.ErrForeignSecret) {
		t.Fatalf("bookbuyer proxy got bookstore's key: err = %v", err)
	}
	if _, err := sds.ProxySecrets(bookstore, svid, inter.Bundle(), sds.IdentitySecretName(bookbuyer)); !errors.Is(err, sds.ErrForeignSecret) {
		t.Fatalf("request for another identity's secret: err = %v", err)
	}
	only, err := sds.ProxySecrets(bookstore, svid, inter.Bundle(), sds.BundleSecretName(td))
	if err != nil || len(only) != 1 || only[0].GetValidationContext() == nil {
		t.Fatalf("request for the bundle only: %v, %v", only, err)
	}
}
