// Package ca is meshfed's certificate authority: the federation's shared root,
// the intermediate CA each cluster signs with, X.509-SVID issuing and the
// trust bundle (the set of roots a cluster accepts).
//
// Every cluster of a federation has its own intermediate under one shared
// root, so an SVID from one cluster verifies against any other cluster's
// bundle. The root's key may live in a Secret of one cluster, or stay offline
// when the user brings a signed intermediate instead (ParseIntermediate).
// Roots are rotated by bundle union (see Union and Without).
//
// The package signs; it does not decide who may ask for what. Authentication
// of callers belongs to trust/issuer. Kubernetes Secret storage is in
// secrets.go; everything else does no I/O.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Config holds the lifetimes and names the CA uses. Zero values are invalid;
// start from DefaultConfig.
type Config struct {
	// TrustDomain is the SPIFFE trust domain shared by the federation,
	// e.g. "meshfed.local".
	TrustDomain string
	// ClusterName names the cluster in the intermediate CA's subject.
	ClusterName string
	// RootTTL is the lifetime of a generated root.
	RootTTL time.Duration
	// IntermediateTTL is the lifetime of a cluster's intermediate CA.
	IntermediateTTL time.Duration
	// SVIDTTL is the lifetime of a workload certificate.
	SVIDTTL time.Duration
}

// DefaultConfig returns a root valid for 10 years, intermediates for 1 year
// and SVIDs for 24 hours in the "meshfed.local" trust domain.
func DefaultConfig() Config {
	return Config{
		TrustDomain:     "meshfed.local",
		ClusterName:     "cluster",
		RootTTL:         10 * 365 * 24 * time.Hour,
		IntermediateTTL: 365 * 24 * time.Hour,
		SVIDTTL:         24 * time.Hour,
	}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
		errs = append(errs, fmt.Errorf("trust domain %q: %w", c.TrustDomain, err))
	}
	if c.ClusterName == "" {
		errs = append(errs, errors.New("cluster name is empty"))
	}
	if c.RootTTL <= 0 {
		errs = append(errs, fmt.Errorf("root TTL %v: must be positive", c.RootTTL))
	}
	if c.IntermediateTTL <= 0 || c.IntermediateTTL > c.RootTTL {
		errs = append(errs, fmt.Errorf("intermediate TTL %v: must be positive and at most the root TTL %v", c.IntermediateTTL, c.RootTTL))
	}
	if c.SVIDTTL < time.Minute || c.SVIDTTL > c.IntermediateTTL {
		errs = append(errs, fmt.Errorf("SVID TTL %v: must be at least 1m and at most the intermediate TTL %v", c.SVIDTTL, c.IntermediateTTL))
	}
	return errors.Join(errs...)
}

// TrustDomainOf returns c.TrustDomain parsed; call Validate first.
func (c Config) trustDomain() spiffeid.TrustDomain {
	td, _ := spiffeid.TrustDomainFromString(c.TrustDomain)
	return td
}

// Errors a caller can test for with errors.Is.
var (
	// ErrInvalidCSR: the CSR cannot be parsed, its signature is wrong or
	// its key is too weak.
	ErrInvalidCSR = errors.New("invalid certificate signing request")
	// ErrIdentityMismatch: the CSR asks for a name other than the identity
	// the caller was authenticated as.
	ErrIdentityMismatch = errors.New("CSR names an identity other than the caller's")
	// ErrInvalidCA: a root, intermediate or bundle input is not usable.
	ErrInvalidCA = errors.New("invalid CA material")
)

// clockSkew backdates NotBefore so that peers with slightly slow clocks
// accept a certificate right after it is issued.
const clockSkew = time.Minute

// Root is the federation's root CA with its private key.
type Root struct {
	TrustDomain spiffeid.TrustDomain
	Certificate *x509.Certificate
	Key         crypto.Signer
}

// GenerateRoot makes a new self-signed root for td, valid for ttl.
func GenerateRoot(td spiffeid.TrustDomain, ttl time.Duration) (*Root, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("root CA %s: generate key: %w", td, err)
	}
	now := time.Now()
	tmpl := caTemplate(td, pkix.Name{Organization: []string{"meshfed"}, CommonName: "meshfed root CA " + td.Name()}, now, now.Add(ttl))
	tmpl.MaxPathLen = 1
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("root CA %s: sign: %w", td, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("root CA %s: %w", td, err)
	}
	return &Root{TrustDomain: td, Certificate: cert, Key: key}, nil
}

// ParseRoot reads a root certificate and its key from PEM and checks them
// strictly: one self-signed CA certificate, valid at now, allowed to sign
// certificates, of trust domain td if it names one, matching the key.
func ParseRoot(td spiffeid.TrustDomain, certPEM, keyPEM []byte, now time.Time) (*Root, error) {
	certs, err := ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: root certificate: %w", ErrInvalidCA, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%w: root certificate: want exactly one certificate, got %d", ErrInvalidCA, len(certs))
	}
	cert := certs[0]
	if err := checkCACert(td, cert, now); err != nil {
		return nil, fmt.Errorf("%w: root certificate %q: %w", ErrInvalidCA, cert.Subject, err)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return nil, fmt.Errorf("%w: root certificate %q: not self-signed: %w", ErrInvalidCA, cert.Subject, err)
	}
	key, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: root key: %w", ErrInvalidCA, err)
	}
	if !keyMatches(key, cert) {
		return nil, fmt.Errorf("%w: root key does not match root certificate %q", ErrInvalidCA, cert.Subject)
	}
	return &Root{TrustDomain: td, Certificate: cert, Key: key}, nil
}

// CertificatePEM returns the root certificate as PEM.
func (r *Root) CertificatePEM() []byte {
	return EncodeCertificatesPEM([]*x509.Certificate{r.Certificate})
}

// KeyPEM returns the root key as PKCS#8 PEM.
func (r *Root) KeyPEM() ([]byte, error) { return EncodePrivateKeyPEM(r.Key) }

// Bundle returns a trust bundle holding only this root.
func (r *Root) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(r.TrustDomain, []*x509.Certificate{r.Certificate})
}

// NewIntermediate makes a key for a cluster's intermediate CA and signs it
// with the root. The intermediate trusts bundle, which must contain this root;
// a nil bundle means the root alone. During rotation the bundle holds the old
// and the new root.
func (r *Root) NewIntermediate(clusterName string, ttl time.Duration, bundle *x509bundle.Bundle) (*Intermediate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("intermediate CA %s: generate key: %w", clusterName, err)
	}
	cert, err := r.SignIntermediate(clusterName, key.Public(), ttl)
	if err != nil {
		return nil, err
	}
	if bundle == nil {
		bundle = r.Bundle()
	}
	return newIntermediate(r.TrustDomain, []*x509.Certificate{cert}, key, bundle, time.Now())
}

// SignIntermediate signs an intermediate CA certificate for pub. It is the
// operation a user runs where the root key is kept offline; the result goes
// into the cluster's intermediate Secret with the key that matches pub.
func (r *Root) SignIntermediate(clusterName string, pub crypto.PublicKey, ttl time.Duration) (*x509.Certificate, error) {
	now := time.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(r.Certificate.NotAfter) {
		notAfter = r.Certificate.NotAfter
	}
	tmpl := caTemplate(r.TrustDomain, pkix.Name{Organization: []string{"meshfed"}, CommonName: "meshfed intermediate CA " + clusterName}, now, notAfter)
	tmpl.MaxPathLen = 0
	tmpl.MaxPathLenZero = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.Certificate, pub, r.Key)
	if err != nil {
		return nil, fmt.Errorf("intermediate CA %s: sign: %w", clusterName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("intermediate CA %s: %w", clusterName, err)
	}
	return cert, nil
}

func caTemplate(td spiffeid.TrustDomain, subject pkix.Name, notBefore, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          serialNumber(),
		Subject:               subject,
		NotBefore:             notBefore.Add(-clockSkew),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		URIs:                  []*url.URL{td.ID().URL()},
	}
}

func serialNumber() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return n
}

// checkCACert checks that cert can act as a CA of trust domain td at now.
// A certificate without a URI SAN is accepted (roots from an existing PKI
// rarely carry one); one that names a SPIFFE trust domain must name td.
func checkCACert(td spiffeid.TrustDomain, cert *x509.Certificate, now time.Time) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return errors.New("not a CA certificate (basic constraints CA:TRUE missing)")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("key usage does not allow signing certificates (keyCertSign missing)")
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("not valid before %s", cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(cert.NotAfter) {
		return fmt.Errorf("expired at %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, u := range cert.URIs {
		id, err := spiffeid.FromURI(u)
		if err != nil {
			return fmt.Errorf("URI SAN %q is not a SPIFFE ID: %w", u, err)
		}
		if id.TrustDomain() != td {
			return fmt.Errorf("belongs to trust domain %q, want %q", id.TrustDomain().Name(), td.Name())
		}
	}
	return nil
}

// IssueSVID makes a key and an X.509-SVID for id, for callers that hold the
// key on the workload's behalf (the controller's own serving certificate,
// Envoy sidecars served over SDS). dnsNames are added as DNS SANs.
func (ca *Intermediate) IssueSVID(id spiffeid.ID, ttl time.Duration, dnsNames ...string) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("svid %s: generate key: %w", id, err)
	}
	chain, err := ca.sign(id, key.Public(), ttl, dnsNames)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, nil
}

// IssueTLS is IssueSVID as a tls.Certificate (chain and key), for a TLS
// client or server that presents id.
func (ca *Intermediate) IssueTLS(id spiffeid.ID, ttl time.Duration, dnsNames ...string) (tls.Certificate, error) {
	svid, err := ca.IssueSVID(id, ttl, dnsNames...)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}
