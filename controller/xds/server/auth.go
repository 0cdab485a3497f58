package server

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/meshfed/meshfed/mesh"
)

// Authenticator says who is at the other end of an xDS stream.
//
// Authenticate is called once per stream, on that stream's goroutine, before
// any request is read; it may block briefly (no network calls expected) and
// must not call back into the Server. It returns the peer's identity, or an
// error, which ends the stream with codes.Unauthenticated.
type Authenticator interface {
	Authenticate(ctx context.Context) (mesh.Identity, error)
}

// ErrUnauthenticated is wrapped by every error of PeerCertificateAuthenticator.
var ErrUnauthenticated = errors.New("unauthenticated xDS peer")

// PeerCertificateAuthenticator takes the identity from the SPIFFE ID (URI
// SAN) of the client certificate the TLS handshake verified. The server's
// tls.Config must require and verify client certificates against the mesh
// trust bundle; this only reads the verified result.
type PeerCertificateAuthenticator struct {
	// TrustDomain is the only trust domain accepted.
	TrustDomain string
}

// Authenticate implements Authenticator.
func (a PeerCertificateAuthenticator) Authenticate(ctx context.Context) (mesh.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", fmt.Errorf("%w: no peer", ErrUnauthenticated)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", fmt.Errorf("%w: peer %s did not use TLS", ErrUnauthenticated, p.Addr)
	}
	if len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", fmt.Errorf("%w: peer %s has no verified client certificate", ErrUnauthenticated, p.Addr)
	}
	leaf := info.State.VerifiedChains[0][0]
	var found []mesh.Identity
	for _, u := range leaf.URIs {
		if u.Scheme == "spiffe" {
			found = append(found, mesh.Identity(u.String()))
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("%w: peer %s: certificate has %d SPIFFE IDs, want 1", ErrUnauthenticated, p.Addr, len(found))
	}
	id := found[0]
	if err := id.Validate(); err != nil {
		return "", fmt.Errorf("%w: peer %s: %w", ErrUnauthenticated, p.Addr, err)
	}
	if !strings.EqualFold(id.TrustDomain(), a.TrustDomain) {
		return "", fmt.Errorf("%w: peer %s: %s is not in trust domain %s", ErrUnauthenticated, p.Addr, id, a.TrustDomain)
	}
	return id, nil
}
