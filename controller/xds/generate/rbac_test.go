package generate

import (
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"

	"github.com/meshfed/meshfed/mesh"
)

func permissivePrefixes(s mesh.State) []string {
	var out []string
	for _, p := range meshedPrincipals(&s) {
		if a, ok := p.Identifier.(*rbacv3.Principal_Authenticated_); ok {
			out = append(out, a.Authenticated.PrincipalName.GetPrefix())
		} else {
			out = append(out, "<"+p.String()+">")
		}
	}
	return out
}

// Permissive mode admits meshed namespaces (local, and those other clusters
// export from) and nothing wider: no trust-domain prefix, no prefix built
// from a name that is not a namespace.
func TestPermissiveAdmitsMeshedNamespacesOnly(t *testing.T) {
	s := mesh.State{
		Settings:         mesh.Settings{TrustDomain: "meshfed.local", PermissiveTrafficPolicy: true},
		MeshedNamespaces: []string{"bookstore", "bookbuyer"},
		Remote: map[string]mesh.ClusterCatalog{"west": {Cluster: "west", Services: []mesh.Service{
			{Namespace: "bookwarehouse", Name: "bookwarehouse"},
			{Namespace: "", Name: "empty"},
			{Namespace: "evil/ns", Name: "x"},
			{Namespace: "Bad", Name: "y"},
		}}},
	}
	got := permissivePrefixes(s)
	want := []string{
		"spiffe://meshfed.local/ns/bookbuyer/sa/",
		"spiffe://meshfed.local/ns/bookstore/sa/",
		"spiffe://meshfed.local/ns/bookwarehouse/sa/",
	}
	if len(got) != len(want) {
		t.Fatalf("prefixes %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("prefixes %q, want %q", got, want)
		}
	}
	// No meshed namespace at all: the policy matches nobody.
	none := permissivePrefixes(mesh.State{Settings: s.Settings})
	if len(none) != 1 || none[0] == "" || none[0][0] != '<' {
		t.Fatalf("with no meshed namespace: %q, want a principal that matches nobody", none)
	}
}
