package daemon

// The federation's view of this cluster's CA: the identity its catalogs are
// signed with and the roots other clusters' catalogs are verified with
// (federate.Lifecycle runs the member; federate.Junction merges its remote
// view into every State).

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"sync"
	"time"

	"github.com/meshfed/meshfed/trust/ca"
)

// clusterSigner issues the cluster's catalog-signing certificate from the
// current intermediate and renews it at half its life.
type clusterSigner struct {
	authority *ca.Authority
	cluster   string
	mu        sync.Mutex
	key       crypto.Signer
	chain     []*x509.Certificate
}

func (s *clusterSigner) CatalogSigner() (crypto.Signer, []*x509.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.chain != nil {
		leaf := s.chain[0]
		half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
		if time.Now().Before(half) && leaf.CheckSignatureFrom(s.authority.Current().Certificate()) == nil {
			return s.key, s.chain, nil
		}
	}
	key, chain, err := s.authority.Current().IssueClusterCertificate(s.cluster, 24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	s.key, s.chain = key, chain
	return key, chain, nil
}

// authorityBundle gives the federation the CA's current trust bundle.
type authorityBundle struct{ authority *ca.Authority }

func (b authorityBundle) X509Roots() (*x509.CertPool, string) {
	pool := x509.NewCertPool()
	h := sha256.New()
	for _, r := range b.authority.TrustBundle().X509Authorities() {
		pool.AddCert(r)
		h.Write(r.Raw)
	}
	return pool, hex.EncodeToString(h.Sum(nil))
}
