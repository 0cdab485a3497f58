package ca_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/ca"
)

var td = spiffeid.RequireTrustDomainFromString("meshfed.local")

func newRoot(t testing.TB) *ca.Root {
	t.Helper()
	r, err := ca.GenerateRoot(td, 24*time.Hour*365)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newIntermediate(t testing.TB, r *ca.Root, cluster string) *ca.Intermediate {
	t.Helper()
	i, err := r.NewIntermediate(cluster, 24*time.Hour*30, nil)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func csrFor(t testing.TB, key crypto.Signer, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func workloadID(t testing.TB, d spiffeid.TrustDomain, ns, sa string) spiffeid.ID {
	t.Helper()
	id, err := trust.WorkloadID(d, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestSignedSVIDVerifiesAgainstBundleWithExactIdentity(t *testing.T) {
	root := newRoot(t)
	inter := newIntermediate(t, root, "east")
	id := workloadID(t, td, "bookbuyer", "bookbuyer")
	key := ecKey(t)

	chain, err := inter.SignCSR(csrFor(t, key), id, ca.DefaultConfig().SVIDTTL)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := x509svid.Verify(chain, inter.Bundle())
	if err != nil {
		t.Fatalf("verify SVID: %v", err)
	}
	if got != id {
		t.Fatalf("SVID id = %s, want %s", got, id)
	}
	if _, err := x509svid.ParseRaw(chain[0].Raw, mustPKCS8(t, key)); err != nil {
		t.Fatalf("SVID is not a valid X509-SVID with the workload's key: %v", err)
	}
	if ttl := chain[0].NotAfter.Sub(chain[0].NotBefore); ttl < 24*time.Hour || ttl > 24*time.Hour+2*time.Minute {
		t.Fatalf("SVID lifetime = %v, want about 24h", ttl)
	}
	if chain[0].IsCA {
		t.Fatal("SVID is a CA certificate")
	}
}

func mustPKCS8(t testing.TB, k crypto.Signer) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSVIDFromOneClusterVerifiesAgainstAnotherClustersBundle(t *testing.T) {
	root := newRoot(t)
	east, west := newIntermediate(t, root, "east"), newIntermediate(t, root, "west")
	svid, err := east.IssueSVID(workloadID(t, td, "bookbuyer", "bookbuyer"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, west.Bundle()); err != nil {
		t.Fatalf("east SVID against west bundle: %v", err)
	}
	other := newIntermediate(t, newRoot(t), "elsewhere")
	if _, _, err := x509svid.Verify(svid.Certificates, other.Bundle()); err == nil {
		t.Fatal("SVID verified against an unrelated root")
	}
}

func TestSignCSRRefusesAnyOtherIdentity(t *testing.T) {
	inter := newIntermediate(t, newRoot(t), "east")
	caller := workloadID(t, td, "bookbuyer", "bookbuyer")
	key := ecKey(t)
	rsaSmall, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	dnsCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"bookstore.bookstore.svc"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := csrFor(t, key)
	corrupt[len(corrupt)-3] ^= 0xff

	cases := []struct {
		name string
		csr  []byte
		want error
	}{
		{"URI SAN of another service account", csrFor(t, key, "spiffe://meshfed.local/ns/bookstore/sa/bookstore"), ca.ErrIdentityMismatch},
		{"caller's URI plus another", csrFor(t, key, caller.String(), "spiffe://meshfed.local/ns/bookstore/sa/bookstore"), ca.ErrIdentityMismatch},
		{"caller's path in another trust domain", csrFor(t, key, "spiffe://evil.example/ns/bookbuyer/sa/bookbuyer"), ca.ErrIdentityMismatch},
		{"DNS SAN", dnsCSR, ca.ErrIdentityMismatch},
		{"RSA key of 1024 bits", csrFor(t, rsaSmall), ca.ErrInvalidCSR},
		{"broken signature", corrupt, ca.ErrInvalidCSR},
		{"not a CSR", []byte("hello"), ca.ErrInvalidCSR},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := inter.SignCSR(tc.csr, caller, time.Hour)
			if !errors.Is(err, tc.want) {
				t.Fatalf("SignCSR error = %v, want %v", err, tc.want)
			}
			if chain != nil {
				t.Fatal("a certificate was issued")
			}
		})
	}
	// The CA keeps serving after refusals.
	if _, err := inter.SignCSR(csrFor(t, key, caller.String()), caller, time.Hour); err != nil {
		t.Fatalf("CSR naming exactly the caller: %v", err)
	}
}

// certOpts describes a certificate made by hand for bad-input cases.
type certOpts struct {
	ca        bool
	uri       string
	notBefore time.Time
	notAfter  time.Time
	keyUsage  x509.KeyUsage
}

func makeCert(t testing.TB, o certOpts, parent *x509.Certificate, parentKey crypto.Signer, key crypto.Signer) *x509.Certificate {
	t.Helper()
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(time.Hour)
	}
	if o.keyUsage == 0 {
		o.keyUsage = x509.KeyUsageDigitalSignature
		if o.ca {
			o.keyUsage |= x509.KeyUsageCertSign
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "test"},
		NotBefore:             o.notBefore,
		NotAfter:              o.notAfter,
		IsCA:                  o.ca,
		BasicConstraintsValid: true,
		KeyUsage:              o.keyUsage,
	}
	if o.uri != "" {
		u, _ := url.Parse(o.uri)
		tmpl.URIs = []*url.URL{u}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(c ...*x509.Certificate) []byte { return ca.EncodeCertificatesPEM(c) }

func keyPEM(t testing.TB, k crypto.Signer) []byte {
	p, err := ca.EncodePrivateKeyPEM(k)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseRootRefusesBadInputWithClearError(t *testing.T) {
	key := ecKey(t)
	good := makeCert(t, certOpts{ca: true, uri: "spiffe://meshfed.local"}, nil, nil, key)
	now := time.Now()
	cases := []struct {
		name    string
		cert    []byte
		key     []byte
		wantMsg string
	}{
		{"malformed PEM", []byte("-----BEGIN CERTIFICATE-----\nnot base64\n"), keyPEM(t, key), "malformed PEM"},
		{"garbage after the certificate", append(pemOf(good), []byte("junk")...), keyPEM(t, key), "trailing data"},
		{"key where a certificate belongs", keyPEM(t, key), keyPEM(t, key), "want CERTIFICATE"},
		{"not a CA", pemOf(makeCert(t, certOpts{}, nil, nil, key)), keyPEM(t, key), "not a CA certificate"},
		{"CA without keyCertSign", pemOf(makeCert(t, certOpts{ca: true, keyUsage: x509.KeyUsageDigitalSignature}, nil, nil, key)), keyPEM(t, key), "keyCertSign"},
		{"expired", pemOf(makeCert(t, certOpts{ca: true, notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-time.Hour)}, nil, nil, key)), keyPEM(t, key), "expired at"},
		{"not yet valid", pemOf(makeCert(t, certOpts{ca: true, notBefore: now.Add(time.Hour), notAfter: now.Add(48 * time.Hour)}, nil, nil, key)), keyPEM(t, key), "not valid before"},
		{"wrong trust domain", pemOf(makeCert(t, certOpts{ca: true, uri: "spiffe://other.example"}, nil, nil, key)), keyPEM(t, key), `trust domain "other.example"`},
		{"key mismatch", pemOf(good), keyPEM(t, ecKey(t)), "does not match"},
		{"malformed key", pemOf(good), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "malformed private key"},
		{"two certificates", pemOf(good, good), keyPEM(t, key), "exactly one"},
		{"empty", nil, nil, "no CERTIFICATE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.ParseRoot(td, tc.cert, tc.key, now)
			if err == nil {
				t.Fatal("bad root accepted")
			}
			if !errors.Is(err, ca.ErrInvalidCA) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error = %q, want ErrInvalidCA mentioning %q", err, tc.wantMsg)
			}
		})
	}
	if _, err := ca.ParseRoot(td, pemOf(good), keyPEM(t, key), now); err != nil {
		t.Fatalf("good root refused: %v", err)
	}
}

func TestParseIntermediateAcceptsOfflineSignedChain(t *testing.T) {
	root := newRoot(t)
	key := ecKey(t)
	cert, err := root.SignIntermediate("west", key.Public(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The root travels only as a certificate; a trailing copy in tls.crt is tolerated.
	inter, err := ca.ParseIntermediate(td, pemOf(cert, root.Certificate), keyPEM(t, key), root.CertificatePEM(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(inter.Chain()) != 1 {
		t.Fatalf("chain has %d certificates, want the intermediate only", len(inter.Chain()))
	}
	svid, err := inter.IssueSVID(workloadID(t, td, "bookstore", "bookstore"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, root.Bundle()); err != nil {
		t.Fatal(err)
	}
}

func TestParseIntermediateRefusesBadInputWithClearError(t *testing.T) {
	root := newRoot(t)
	otherRoot := newRoot(t)
	key := ecKey(t)
	cert, err := root.SignIntermediate("west", key.Public(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreignKey := ecKey(t)
	foreignRoot := makeCert(t, certOpts{ca: true, uri: "spiffe://other.example"}, nil, nil, foreignKey)
	expiredInter := makeCert(t, certOpts{ca: true, notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)}, root.Certificate, root.Key, key)
	leafAsInter := makeCert(t, certOpts{uri: "spiffe://meshfed.local/ns/a/sa/b"}, root.Certificate, root.Key, key)

	cases := []struct {
		name          string
		chain, k, bun []byte
		wantMsg       string
	}{
		{"signed by a root not in the bundle", pemOf(cert), keyPEM(t, key), otherRoot.CertificatePEM(), "does not chain to a root"},
		{"bundle from another trust domain", pemOf(cert), keyPEM(t, key), pemOf(foreignRoot), `trust domain "other.example"`},
		{"key mismatch", pemOf(cert), keyPEM(t, ecKey(t)), root.CertificatePEM(), "does not match"},
		{"expired intermediate", pemOf(expiredInter), keyPEM(t, key), root.CertificatePEM(), "expired at"},
		{"leaf certificate as intermediate", pemOf(leafAsInter), keyPEM(t, key), root.CertificatePEM(), "not a CA certificate"},
		{"malformed bundle", pemOf(cert), keyPEM(t, key), []byte("nope"), "trust bundle"},
		{"empty chain", nil, keyPEM(t, key), root.CertificatePEM(), "no CERTIFICATE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.ParseIntermediate(td, tc.chain, tc.k, tc.bun, time.Now())
			if err == nil {
				t.Fatal("bad intermediate accepted")
			}
			if !errors.Is(err, ca.ErrInvalidCA) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error = %q, want ErrInvalidCA mentioning %q", err, tc.wantMsg)
			}
		})
	}
}

func TestBundleUnionTrustsBothRootsAndRefusesOtherTrustDomains(t *testing.T) {
	oldRoot, newRootCA := newRoot(t), newRoot(t)
	union, err := ca.Union(oldRoot.Bundle(), newRootCA.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	id := workloadID(t, td, "bookstore", "bookstore")
	for name, r := range map[string]*ca.Root{"old": oldRoot, "new": newRootCA} {
		svid, err := newIntermediate(t, r, name).IssueSVID(id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := x509svid.Verify(svid.Certificates, union); err != nil {
			t.Fatalf("SVID under %s root against union: %v", name, err)
		}
	}
	// An intermediate may not drop the root that signed it.
	oldInter := newIntermediate(t, oldRoot, "east")
	if _, err := oldInter.WithBundle(newRootCA.Bundle()); err == nil {
		t.Fatal("intermediate accepted a bundle without its own root")
	}
	if _, err := ca.Without(oldRoot.Bundle(), oldRoot.Certificate); err == nil {
		t.Fatal("removing the last root was allowed")
	}
	shrunk, err := ca.Without(union, oldRoot.Certificate)
	if err != nil || shrunk.HasX509Authority(oldRoot.Certificate) || !shrunk.HasX509Authority(newRootCA.Certificate) {
		t.Fatalf("Without: %v", err)
	}
	other := x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("other.example"), []*x509.Certificate{newRootCA.Certificate})
	if _, err := ca.Union(union, other); !errors.Is(err, ca.ErrInvalidCA) {
		t.Fatalf("union across trust domains: err = %v", err)
	}
	if _, err := ca.ParseBundle(spiffeid.RequireTrustDomainFromString("other.example"), oldRoot.CertificatePEM(), time.Now()); err == nil {
		t.Fatal("bundle whose root names meshfed.local accepted for other.example")
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	if err := ca.DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	c := ca.Config{TrustDomain: "Not A Domain", SVIDTTL: time.Second}
	err := c.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"trust domain", "cluster name", "root TTL", "intermediate TTL", "SVID TTL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
