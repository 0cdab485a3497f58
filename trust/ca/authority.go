package ca

import (
	"crypto/x509"
	"errors"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Authority is the CA a running controller signs with. It holds the current
// Intermediate and lets rotation replace it while requests are being served:
// Set swaps it atomically, and a request already signing finishes with the one
// it started with. Safe for concurrent use; no method blocks.
type Authority struct {
	current atomic.Pointer[Intermediate]
}

// NewAuthority returns an Authority serving ca.
func NewAuthority(ca *Intermediate) *Authority {
	a := &Authority{}
	a.current.Store(ca)
	return a
}

// Set replaces the CA; nil is ignored.
func (a *Authority) Set(ca *Intermediate) {
	if ca != nil {
		a.current.Store(ca)
	}
}

// Current returns the CA in use.
func (a *Authority) Current() *Intermediate { return a.current.Load() }

// TrustDomain returns the trust domain of the current CA.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.Current().TrustDomain() }

// SignCSR signs with the current CA; see Intermediate.SignCSR.
func (a *Authority) SignCSR(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	return a.Current().SignCSR(csrDER, id, ttl)
}

// TrustBundle returns the current trust bundle.
func (a *Authority) TrustBundle() *x509bundle.Bundle { return a.Current().Bundle() }

// GetX509BundleForTrustDomain implements x509bundle.Source with the current
// trust bundle.
func (a *Authority) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b := a.Current().Bundle()
	if b.TrustDomain() != td {
		return nil, errors.New("ca: no bundle for trust domain " + td.Name())
	}
	return b, nil
}
