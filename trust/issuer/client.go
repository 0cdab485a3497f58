package issuer

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// Dial opens a TLS connection to the issuer at target. The issuer's
// certificate must be an SVID verified by bundles for exactly serverID (the
// controller's ID); a zero serverID is refused, since any workload of the
// trust domain holds a valid SVID and would otherwise receive the token.
func Dial(target string, bundles x509bundle.Source, td spiffeid.TrustDomain, serverID spiffeid.ID) (*grpc.ClientConn, error) {
	if serverID.IsZero() {
		return nil, fmt.Errorf("issuer %s: no issuer SPIFFE ID to authorize the server with", target)
	}
	if !serverID.MemberOf(td) {
		return nil, fmt.Errorf("issuer %s: issuer ID %s is not in trust domain %q", target, serverID, td.Name())
	}
	authz := tlsconfig.AuthorizeID(serverID)
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.TLSClientConfig(bundles, authz))))
	if err != nil {
		return nil, fmt.Errorf("issuer %s: %w", target, err)
	}
	return cc, nil
}

// Client calls the issuer over a connection from Dial.
type Client struct {
	cc grpc.ClientConnInterface
}

// NewClient returns a client using cc.
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{cc: cc} }

// Sign sends csrDER with token as the bearer token. Errors carry the
// server's gRPC status (codes.Unauthenticated, PermissionDenied, ...).
func (c *Client) Sign(ctx context.Context, token string, csrDER []byte) (*SignResponse, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	resp := new(SignResponse)
	if err := c.cc.Invoke(ctx, SignMethod, &SignRequest{CSR: csrDER}, resp, grpc.ForceCodec(jsonCodec{})); err != nil {
		return nil, err
	}
	return resp, nil
}

// Parse returns the certificates of a response: the SVID chain and the roots.
func (r *SignResponse) Parse() (chain, roots []*x509.Certificate, err error) {
	for i, der := range r.CertificateChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("sign response: certificate %d: %w", i, err)
		}
		chain = append(chain, c)
	}
	for i, der := range r.TrustBundle {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("sign response: bundle root %d: %w", i, err)
		}
		roots = append(roots, c)
	}
	if len(chain) == 0 || len(roots) == 0 {
		return nil, nil, fmt.Errorf("sign response: empty certificate chain or trust bundle")
	}
	return chain, roots, nil
}
