package server_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/meshfed/meshfed/mesh"
)

// TestPodOutsideTheMeshCannotReachServicesInPermissiveMode: in permissive
// mode a workload outside the mesh (kube-system's coredns, a Pod of an
// unmeshed namespace) holding a valid SVID of the trust domain calls
// bookstore through real grpc-go xDS clients over mTLS. The RBAC served by
// the xDS server admits only identities of meshed namespaces, so it is
// denied while bookbuyer (meshed, no TrafficTarget) is let through; when
// its namespace is added to the mesh it is admitted.
func TestPodOutsideTheMeshCannotReachServicesInPermissiveMode(t *testing.T) {
	m := startMesh(t)
	v1, v1Serving := startBackend(t, m, bookstoreID, "v1")
	v2, v2Serving := startBackend(t, m, bookstoreID, "v2")
	state := bookstore(v1, v2)
	state.Settings.PermissiveTrafficPolicy = true
	state.MeshedNamespaces = []string{"bookbuyer", "bookstore"}
	m.update(t, state)
	<-v1Serving
	<-v2Serving

	buyer := client(t, m, bookbuyerID)
	eventually(t, "meshed bookbuyer List in permissive mode", func() error { return list(buyer) })

	outsiders := []mesh.Identity{
		mesh.NewIdentity(trustDomain, "kube-system", "coredns"),
		mesh.NewIdentity(trustDomain, "scratch", "default"),
		// A namespace whose name starts like a meshed one is not meshed.
		mesh.NewIdentity(trustDomain, "bookbuyer-evil", "bookbuyer"),
	}
	for _, id := range outsiders {
		c := client(t, m, id)
		t.Run(string(id), func(t *testing.T) {
			// Several calls: each backend got the same policy.
			for i := 0; i < 4; i++ {
				eventually(t, string(id)+" Check", func() error { return wantCode(check(c), codes.PermissionDenied) })
				if err := wantCode(list(c), codes.PermissionDenied); err != nil {
					t.Fatal(err)
				}
			}
		})
	}

	// `meshfed namespace add scratch`: now it is a meshed identity.
	state.MeshedNamespaces = []string{"bookbuyer", "bookstore", "scratch"}
	m.update(t, state)
	scratch := client(t, m, mesh.NewIdentity(trustDomain, "scratch", "default"))
	eventually(t, "scratch after namespace add", func() error { return check(scratch) })
}
