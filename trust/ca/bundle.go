package ca

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ParseBundle reads a trust bundle (one or more root certificates in PEM) for
// trust domain td. Each root must be a CA valid at now; a root that names a
// SPIFFE trust domain must name td, so a bundle from another federation is
// refused rather than silently trusted.
func ParseBundle(td spiffeid.TrustDomain, bundlePEM []byte, now time.Time) (*x509bundle.Bundle, error) {
	roots, err := ParseCertificatesPEM(bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("%w: trust bundle: %w", ErrInvalidCA, err)
	}
	for i, r := range roots {
		if err := checkCACert(td, r, now); err != nil {
			return nil, fmt.Errorf("%w: trust bundle root %d %q: %w", ErrInvalidCA, i, r.Subject, err)
		}
	}
	return x509bundle.FromX509Authorities(td, roots), nil
}

// Union returns a bundle with every root of the given bundles, which must all
// be of the same trust domain. Root rotation starts here: peers that trust
// the union accept SVIDs chained to either root.
func Union(bundles ...*x509bundle.Bundle) (*x509bundle.Bundle, error) {
	if len(bundles) == 0 {
		return nil, fmt.Errorf("%w: union of no bundles", ErrInvalidCA)
	}
	td := bundles[0].TrustDomain()
	out := x509bundle.New(td)
	for _, b := range bundles {
		if b.TrustDomain() != td {
			return nil, fmt.Errorf("%w: bundle of trust domain %q cannot join bundle of %q", ErrInvalidCA, b.TrustDomain().Name(), td.Name())
		}
		for _, r := range b.X509Authorities() {
			out.AddX509Authority(r)
		}
	}
	return out, nil
}

// Without returns a copy of bundle without root. It refuses to return an
// empty bundle, which would make every peer untrusted.
func Without(bundle *x509bundle.Bundle, root *x509.Certificate) (*x509bundle.Bundle, error) {
	out := bundle.Clone()
	out.RemoveX509Authority(root)
	if out.Empty() {
		return nil, fmt.Errorf("%w: removing root %q would leave trust domain %q with no roots", ErrInvalidCA, root.Subject, bundle.TrustDomain().Name())
	}
	return out, nil
}
