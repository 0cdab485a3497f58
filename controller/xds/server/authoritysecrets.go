package server

import (
	"fmt"
	"sync"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/sds"
)

// AuthoritySecrets is the SecretSource of a running controller: it issues
// each identity's SVID with the controller's CA (ca.Authority), builds the
// secrets with trust/sds.ProxySecrets (which refuses an SVID that is not
// the proxy's own) and serves them under the names the sidecar generator
// uses. It lives here, not in trust/, because those names are the
// generator's: one name per secret for every sidecar, so that listeners
// and clusters are shared by all identities, while each proxy's snapshot
// resolves the names to its own identity's secrets.
//
// An identity's secrets are cached and reissued when half the SVID's
// lifetime has passed or when the Authority's CA changed (a rotated
// intermediate or trust bundle makes a new ca.Intermediate). Safe for
// concurrent use.
type AuthoritySecrets struct {
	authority *ca.Authority
	ttl       time.Duration
	// now is the clock (tests move it).
	now func() time.Time

	mu     sync.Mutex
	issued map[mesh.Identity]issuedSecrets
}

type issuedSecrets struct {
	by      *ca.Intermediate
	renewAt time.Time
	res     []types.Resource
}

// NewAuthoritySecrets returns a SecretSource issuing SVIDs valid for ttl
// from authority.
func NewAuthoritySecrets(authority *ca.Authority, ttl time.Duration) *AuthoritySecrets {
	return &AuthoritySecrets{authority: authority, ttl: ttl, now: time.Now, issued: map[mesh.Identity]issuedSecrets{}}
}

// Secrets implements SecretSource.
func (a *AuthoritySecrets) Secrets(id mesh.Identity) ([]types.Resource, error) {
	inter := a.authority.Current()
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.issued[id]; ok && e.by == inter && now.Before(e.renewAt) {
		return e.res, nil
	}
	sid, err := spiffeid.FromString(string(id))
	if err != nil {
		return nil, fmt.Errorf("sds %s: %w", id, err)
	}
	svid, err := inter.IssueSVID(sid, a.ttl)
	if err != nil {
		return nil, fmt.Errorf("sds %s: %w", id, err)
	}
	secrets, err := sds.ProxySecrets(sid, svid, inter.Bundle())
	if err != nil {
		return nil, err
	}
	rename := map[string]string{
		sds.IdentitySecretName(sid):             generate.SDSIdentitySecret,
		sds.BundleSecretName(sid.TrustDomain()): generate.SDSTrustBundleSecret,
	}
	res := make([]types.Resource, 0, len(secrets))
	for _, s := range secrets {
		name, ok := rename[s.GetName()]
		if !ok {
			return nil, fmt.Errorf("sds %s: unexpected secret %q", id, s.GetName())
		}
		c := proto.Clone(s).(*tlsv3.Secret)
		c.Name = name
		res = append(res, c)
	}
	// Drop what is due anyway (identities whose proxies left), so the cache
	// does not grow with every identity ever served.
	for other, e := range a.issued {
		if !now.Before(e.renewAt) {
			delete(a.issued, other)
		}
	}
	leaf := svid.Certificates[0]
	a.issued[id] = issuedSecrets{by: inter, renewAt: leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2), res: res}
	return res, nil
}
