// Package sds builds the Envoy SDS resources (extensions.transport_sockets.
// tls.v3.Secret) for one proxy: its own identity's certificate and key, and a
// validation context holding the trust bundle. The functions are pure; the
// controller's xDS server authenticates the proxy (by client certificate, see
// trust/mtls.PeerID), issues its SVID with trust/ca and calls them.
//
// Secret names: a proxy's identity secret is named by its SPIFFE ID
// (IdentitySecretName), the validation context by the trust domain
// (BundleSecretName). Generators reference exactly these names in the
// SdsSecretConfig of their transport sockets.
package sds

import (
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshfed/meshfed/trust/ca"
)

// ErrForeignSecret is returned when a proxy asks for a secret that is not
// its own identity's or its trust bundle.
var ErrForeignSecret = errors.New("secret belongs to another identity")

// IdentitySecretName is the SDS name of id's certificate and key.
func IdentitySecretName(id spiffeid.ID) string { return id.String() }

// BundleSecretName is the SDS name of td's validation context.
func BundleSecretName(td spiffeid.TrustDomain) string { return "bundle:" + td.IDString() }

// IdentitySecret returns svid's certificate chain and key as a TLS
// certificate secret named IdentitySecretName(svid.ID).
func IdentitySecret(svid *x509svid.SVID) (*tlsv3.Secret, error) {
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return nil, fmt.Errorf("sds secret %s: %w", svid.ID, err)
	}
	s := &tlsv3.Secret{
		Name: IdentitySecretName(svid.ID),
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(certPEM),
			PrivateKey:       inline(keyPEM),
		}},
	}
	if err := s.ValidateAll(); err != nil {
		return nil, fmt.Errorf("sds secret %s: %w", svid.ID, err)
	}
	return s, nil
}

// ValidationSecret returns a validation context trusting bundle's roots,
// named BundleSecretName(bundle.TrustDomain()). Which peer identities are
// allowed is the listener's or cluster's business (match_typed_subject_alt_names
// or RBAC), not the secret's.
func ValidationSecret(bundle *x509bundle.Bundle) (*tlsv3.Secret, error) {
	if bundle.Empty() {
		return nil, fmt.Errorf("sds bundle %s: no roots", bundle.TrustDomain())
	}
	s := &tlsv3.Secret{
		Name: BundleSecretName(bundle.TrustDomain()),
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.EncodeCertificatesPEM(bundle.X509Authorities())),
		}},
	}
	if err := s.ValidateAll(); err != nil {
		return nil, fmt.Errorf("sds bundle %s: %w", bundle.TrustDomain(), err)
	}
	return s, nil
}

// ProxySecrets returns the secrets for the proxy authenticated as proxy:
// its identity secret from svid and the validation context from bundle. svid
// must be proxy's own, so a mix-up in the caller cannot hand a proxy another
// identity's key. When requested is not empty (the names in the proxy's SDS
// request), only those are returned, and a name that is neither of the two
// is refused with ErrForeignSecret.
func ProxySecrets(proxy spiffeid.ID, svid *x509svid.SVID, bundle *x509bundle.Bundle, requested ...string) ([]*tlsv3.Secret, error) {
	if svid.ID != proxy {
		return nil, fmt.Errorf("proxy %s: %w: SVID is for %s", proxy, ErrForeignSecret, svid.ID)
	}
	if bundle.TrustDomain() != proxy.TrustDomain() {
		return nil, fmt.Errorf("proxy %s: bundle is for trust domain %s", proxy, bundle.TrustDomain())
	}
	id, err := IdentitySecret(svid)
	if err != nil {
		return nil, err
	}
	vc, err := ValidationSecret(bundle)
	if err != nil {
		return nil, err
	}
	if len(requested) == 0 {
		return []*tlsv3.Secret{id, vc}, nil
	}
	var out []*tlsv3.Secret
	for _, name := range requested {
		switch name {
		case id.Name:
			out = append(out, id)
		case vc.Name:
			out = append(out, vc)
		default:
			return nil, fmt.Errorf("proxy %s: secret %q: %w", proxy, name, ErrForeignSecret)
		}
	}
	return out, nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}
