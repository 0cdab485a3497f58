package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"time"

	"github.com/meshfed/meshfed/mesh"
)

// ClusterIDPath is the path prefix of a cluster's own SPIFFE ID,
// spiffe://<trust-domain>/meshfed/cluster/<name>. It is the identity a
// cluster signs its federation catalog with (see federation/catalog.ClusterID);
// workload identities (/ns/<ns>/sa/<sa>) can never take this form.
const ClusterIDPath = "/meshfed/cluster/"

// ClusterID returns spiffe://<trust-domain>/meshfed/cluster/<cluster>.
func (ca *Intermediate) ClusterID(cluster string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: ca.td.Name(), Path: ClusterIDPath + cluster}
}

// IssueClusterCertificate makes a fresh ECDSA P-256 key and a certificate
// for it whose only name is the cluster's SPIFFE ID (URI SAN
// spiffe://<trust-domain>/meshfed/cluster/<cluster>), signed by this
// intermediate. The federation signs the cluster's catalog with it; every
// receiver checks that the certificate chains to the trust roots and names
// exactly the cluster the catalog speaks for. It returns the key and the chain
// (leaf first, then the CA chain, root excluded). The certificate is good for
// digital signatures only (no TLS usage) and never outlives the intermediate.
func (ca *Intermediate) IssueClusterCertificate(cluster string, ttl time.Duration) (crypto.Signer, []*x509.Certificate, error) {
	if !mesh.IsDNS1123Label(cluster) {
		return nil, nil, fmt.Errorf("cluster certificate %q: cluster name is not a DNS label", cluster)
	}
	if ttl <= 0 {
		return nil, nil, fmt.Errorf("cluster certificate %q: TTL %v must be positive", cluster, ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster certificate %q: key: %w", cluster, err)
	}
	now := time.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.chain[0].NotAfter) {
		notAfter = ca.chain[0].NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serialNumber(),
		Subject:               pkix.Name{CommonName: "meshfed cluster " + cluster},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{ca.ClusterID(cluster)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.chain[0], key.Public(), ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster certificate %q: sign: %w", cluster, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster certificate %q: %w", cluster, err)
	}
	return key, append([]*x509.Certificate{leaf}, ca.chain...), nil
}
