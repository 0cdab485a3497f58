package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Intermediate is a cluster's issuing CA: its certificate chain up to (not
// including) a root, its key, and the trust bundle it hands out with every
// SVID. An Intermediate is immutable and safe for concurrent use; rotation
// makes a new one (see Authority).
type Intermediate struct {
	td     spiffeid.TrustDomain
	chain  []*x509.Certificate // chain[0] is the issuing CA
	key    crypto.Signer
	bundle *x509bundle.Bundle
}

// ParseIntermediate reads a signed intermediate (the root's key kept
// elsewhere) and checks it strictly: chainPEM starts with the issuing CA
// certificate, optionally followed by further intermediates (a trailing copy
// of the root is dropped); keyPEM matches it; bundlePEM holds the roots, each
// a valid CA of trust domain td; and the chain verifies to one of them at now.
func ParseIntermediate(td spiffeid.TrustDomain, chainPEM, keyPEM, bundlePEM []byte, now time.Time) (*Intermediate, error) {
	chain, err := ParseCertificatesPEM(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: intermediate certificate chain: %w", ErrInvalidCA, err)
	}
	key, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: intermediate key: %w", ErrInvalidCA, err)
	}
	bundle, err := ParseBundle(td, bundlePEM, now)
	if err != nil {
		return nil, err
	}
	// Drop roots that were appended to the chain; they travel in the bundle.
	for len(chain) > 1 && bundle.HasX509Authority(chain[len(chain)-1]) {
		chain = chain[:len(chain)-1]
	}
	return newIntermediate(td, chain, key, bundle, now)
}

func newIntermediate(td spiffeid.TrustDomain, chain []*x509.Certificate, key crypto.Signer, bundle *x509bundle.Bundle, now time.Time) (*Intermediate, error) {
	ca := chain[0]
	for i, c := range chain {
		if err := checkCACert(td, c, now); err != nil {
			return nil, fmt.Errorf("%w: intermediate chain certificate %d %q: %w", ErrInvalidCA, i, c.Subject, err)
		}
	}
	if !keyMatches(key, ca) {
		return nil, fmt.Errorf("%w: intermediate key does not match certificate %q", ErrInvalidCA, ca.Subject)
	}
	if bundle.TrustDomain() != td {
		return nil, fmt.Errorf("%w: bundle is for trust domain %q, want %q", ErrInvalidCA, bundle.TrustDomain().Name(), td.Name())
	}
	if err := verifyChain(chain, bundle, now); err != nil {
		return nil, fmt.Errorf("%w: intermediate %q: %w", ErrInvalidCA, ca.Subject, err)
	}
	return &Intermediate{td: td, chain: chain, key: key, bundle: bundle.Clone()}, nil
}

func verifyChain(chain []*x509.Certificate, bundle *x509bundle.Bundle, now time.Time) error {
	roots := x509.NewCertPool()
	for _, r := range bundle.X509Authorities() {
		roots.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("does not chain to a root of the trust bundle: %w", err)
	}
	return nil
}

// TrustDomain returns the trust domain the CA issues in.
func (ca *Intermediate) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Certificate returns the issuing CA certificate.
func (ca *Intermediate) Certificate() *x509.Certificate { return ca.chain[0] }

// Chain returns the CA chain appended to every SVID (issuing CA first, root
// excluded).
func (ca *Intermediate) Chain() []*x509.Certificate {
	return append([]*x509.Certificate(nil), ca.chain...)
}

// Bundle returns a copy of the trust bundle the CA hands out.
func (ca *Intermediate) Bundle() *x509bundle.Bundle { return ca.bundle.Clone() }

// ChainPEM returns Chain as PEM, the "tls.crt" of the intermediate Secret.
func (ca *Intermediate) ChainPEM() []byte { return EncodeCertificatesPEM(ca.chain) }

// KeyPEM returns the CA key as PKCS#8 PEM, the "tls.key" of the Secret.
func (ca *Intermediate) KeyPEM() ([]byte, error) { return EncodePrivateKeyPEM(ca.key) }

// BundlePEM returns the trust bundle as PEM, the "ca.crt" of the Secret.
func (ca *Intermediate) BundlePEM() []byte { return EncodeCertificatesPEM(ca.bundle.X509Authorities()) }

// WithBundle returns a copy of the CA that hands out bundle instead. The
// CA's own chain must still verify against bundle: a root that signed the
// current intermediate cannot be dropped before the intermediate is replaced.
func (ca *Intermediate) WithBundle(bundle *x509bundle.Bundle) (*Intermediate, error) {
	return newIntermediate(ca.td, ca.chain, ca.key, bundle, time.Now())
}

// SignCSR signs an X.509-SVID for id from a PKCS#10 CSR (DER) made by the
// workload. id is the identity the caller was authenticated as; the CSR's own
// names are not trusted: it may carry no SAN or exactly id as its URI SAN, and
// anything else is refused with ErrIdentityMismatch. It returns the SVID
// certificate followed by the CA chain.
func (ca *Intermediate) SignCSR(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrInvalidCSR, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	if len(csr.DNSNames) > 0 || len(csr.EmailAddresses) > 0 || len(csr.IPAddresses) > 0 {
		return nil, fmt.Errorf("%w: caller is %s, CSR asks for DNS %v, email %v, IP %v", ErrIdentityMismatch, id, csr.DNSNames, csr.EmailAddresses, csr.IPAddresses)
	}
	switch {
	case len(csr.URIs) == 0:
	case len(csr.URIs) == 1 && csr.URIs[0].String() == id.String():
	default:
		return nil, fmt.Errorf("%w: caller is %s, CSR asks for %v", ErrIdentityMismatch, id, csr.URIs)
	}
	return ca.sign(id, csr.PublicKey, ttl, nil)
}

func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s not accepted, use P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits not accepted, use at least 2048", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("public key type %T not accepted", pub)
	}
	return nil
}

func (ca *Intermediate) sign(id spiffeid.ID, pub crypto.PublicKey, ttl time.Duration, dnsNames []string) ([]*x509.Certificate, error) {
	if !id.MemberOf(ca.td) || id.Path() == "" {
		return nil, fmt.Errorf("svid %s: not a workload identity in trust domain %q", id, ca.td.Name())
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("svid %s: TTL %v must be positive", id, ttl)
	}
	now := time.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.chain[0].NotAfter) {
		notAfter = ca.chain[0].NotAfter
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serialNumber(),
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.chain[0], pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("svid %s: sign: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("svid %s: %w", id, err)
	}
	return append([]*x509.Certificate{leaf}, ca.chain...), nil
}
