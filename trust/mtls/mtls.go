// Package mtls builds crypto/tls configurations that authenticate peers by
// SPIFFE identity, for meshfed's own servers and clients: the controller's xDS
// server (which takes a proxy's identity from its client certificate), the
// issuer, and workloads in tests. Verification is go-spiffe's (tlsconfig);
// this package adds a rotating Source and helpers to read the peer's ID.
//
// It does not issue certificates (trust/ca) or fetch them (trust/agent).
package mtls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Source holds the SVID a process presents and the bundle it trusts, and
// lets both be replaced at any time: every TLS handshake reads the values
// current at that moment, so rotation needs no restart and no new listener.
// It implements x509svid.Source and x509bundle.Source. Safe for concurrent
// use; methods do not block beyond a short lock.
type Source struct {
	mu     sync.RWMutex
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

// NewSource returns a Source with an initial SVID (may be nil for a client
// that only verifies) and bundle.
func NewSource(svid *x509svid.SVID, bundle *x509bundle.Bundle) *Source {
	return &Source{svid: svid, bundle: bundle}
}

// SetSVID replaces the SVID presented in future handshakes.
func (s *Source) SetSVID(svid *x509svid.SVID) {
	s.mu.Lock()
	s.svid = svid
	s.mu.Unlock()
}

// SetBundle replaces the trust bundle used in future handshakes.
func (s *Source) SetBundle(bundle *x509bundle.Bundle) {
	s.mu.Lock()
	s.bundle = bundle
	s.mu.Unlock()
}

// GetX509SVID implements x509svid.Source.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.svid == nil {
		return nil, errors.New("mtls: no SVID yet")
	}
	return s.svid, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.bundle == nil || s.bundle.TrustDomain() != td {
		return nil, fmt.Errorf("mtls: no trust bundle for trust domain %q", td.Name())
	}
	return s.bundle, nil
}

// ServerConfig returns a server configuration that presents the SVID from
// svids and requires a client certificate that is an SVID of trust domain td
// verified against bundles. Read the client's identity with PeerID.
func ServerConfig(svids x509svid.Source, bundles x509bundle.Source, td spiffeid.TrustDomain) *tls.Config {
	c := tlsconfig.MTLSServerConfig(svids, bundles, tlsconfig.AuthorizeMemberOf(td))
	c.MinVersion = tls.VersionTLS12
	return c
}

// ClientConfig returns a client configuration that presents the SVID from
// svids and accepts a server whose SVID verifies against bundles and is
// authorized by authorize (e.g. tlsconfig.AuthorizeMemberOf(td) or
// tlsconfig.AuthorizeID(serverID)).
func ClientConfig(svids x509svid.Source, bundles x509bundle.Source, authorize tlsconfig.Authorizer) *tls.Config {
	c := tlsconfig.MTLSClientConfig(svids, bundles, authorize)
	c.MinVersion = tls.VersionTLS12
	return c
}

// PeerIDFromState returns the SPIFFE ID of the peer's verified certificate.
func PeerIDFromState(state tls.ConnectionState) (spiffeid.ID, error) {
	if len(state.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("mtls: peer presented no certificate")
	}
	id, err := x509svid.IDFromCert(state.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("mtls: peer certificate: %w", err)
	}
	return id, nil
}

// PeerID returns the SPIFFE ID of the peer of a gRPC call whose transport
// credentials were built from ServerConfig or ClientConfig. The certificate
// was verified in the handshake; PeerID only reads it.
func PeerID(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, errors.New("mtls: no peer in context")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return spiffeid.ID{}, fmt.Errorf("mtls: peer auth info is %T, not TLS", p.AuthInfo)
	}
	return PeerIDFromState(info.State)
}
