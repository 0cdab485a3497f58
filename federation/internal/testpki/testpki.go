// Package testpki makes small throwaway certificate hierarchies for the
// federation tests and benchmark harness: a root, and per cluster an
// intermediate CA and a catalog-signing leaf with the cluster's SPIFFE ID.
// It is not a CA for production use (package trust is).
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"path"
	"time"
)

// Root is a self-signed root CA.
type Root struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	Pool *x509.CertPool
}

// NewRoot makes a root CA valid for a day.
func NewRoot(name string) (*Root, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &Root{Cert: cert, Key: key, Pool: pool}, nil
}

var serial = big.NewInt(100)

func issue(parent *x509.Certificate, parentKey crypto.Signer, tmpl *x509.Certificate) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = new(big.Int).Add(big.NewInt(time.Now().UnixNano()), serial)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(12 * time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// Signer returns a key and chain (leaf, intermediate) whose leaf carries
// uri as its only URI SAN, issued under a fresh intermediate of r named for
// the cluster uri names (its last path element), as trust/ca names them.
func (r *Root) Signer(uri string) (crypto.Signer, []*x509.Certificate, error) {
	return r.SignerUnder(path.Base(uri), uri)
}

// SignerUnder is Signer with the intermediate named for cluster, which may
// differ from the one uri names (a forgery).
func (r *Root) SignerUnder(cluster, uri string) (crypto.Signer, []*x509.Certificate, error) {
	inter, interKey, err := issue(r.Cert, r.Key, &x509.Certificate{
		Subject: pkix.Name{CommonName: "meshfed intermediate CA " + cluster}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	})
	if err != nil {
		return nil, nil, err
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, nil, err
	}
	leaf, key, err := issue(inter, interKey, &x509.Certificate{
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
	})
	if err != nil {
		return nil, nil, err
	}
	return key, []*x509.Certificate{leaf, inter}, nil
}
