package mesh

import (
	"errors"
	"fmt"
	"strings"
)

// Identity is a workload's SPIFFE ID in meshfed's form
// "spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>". It is the
// name that mTLS certificates carry as their URI SAN and that RBAC principals
// match. The zero value is "no identity".
type Identity string

// ErrInvalidIdentity is wrapped by every error Identity.Validate returns.
var ErrInvalidIdentity = errors.New("invalid identity")

// NewIdentity returns the identity of ServiceAccount namespace/serviceAccount
// in trustDomain.
func NewIdentity(trustDomain, namespace, serviceAccount string) Identity {
	return Identity("spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount)
}

// ParseIdentity checks s and returns it as an Identity.
func ParseIdentity(s string) (Identity, error) {
	id := Identity(s)
	if err := id.Validate(); err != nil {
		return "", err
	}
	return id, nil
}

// parts splits the identity into trust domain, namespace and service account;
// ok is false when it is not in meshfed's form.
func (i Identity) parts() (td, ns, sa string, ok bool) {
	rest, found := strings.CutPrefix(string(i), "spiffe://")
	if !found {
		return "", "", "", false
	}
	seg := strings.Split(rest, "/")
	if len(seg) != 5 || seg[1] != "ns" || seg[3] != "sa" || seg[0] == "" || seg[2] == "" || seg[4] == "" {
		return "", "", "", false
	}
	return seg[0], seg[2], seg[4], true
}

// Validate reports whether the identity is in meshfed's SPIFFE form.
func (i Identity) Validate() error {
	if _, _, _, ok := i.parts(); !ok {
		return fmt.Errorf("%w %q: want spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>", ErrInvalidIdentity, string(i))
	}
	return nil
}

// TrustDomain returns the trust domain, or "" if the identity is invalid.
func (i Identity) TrustDomain() string { td, _, _, _ := i.parts(); return td }

// Namespace returns the ServiceAccount's namespace, or "" if invalid.
func (i Identity) Namespace() string { _, ns, _, _ := i.parts(); return ns }

// ServiceAccount returns the ServiceAccount's name, or "" if invalid.
func (i Identity) ServiceAccount() string { _, _, sa, _ := i.parts(); return sa }

// String returns the SPIFFE ID.
func (i Identity) String() string { return string(i) }

// TrustDomainPrefix returns "spiffe://<trustDomain>/", the prefix every
// identity of the trust domain starts with.
func TrustDomainPrefix(trustDomain string) string { return "spiffe://" + trustDomain + "/" }
