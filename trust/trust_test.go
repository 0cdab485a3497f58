package trust_test

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/trust"
)

func TestWorkloadIDRoundTrips(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("meshfed.local")
	id, err := trust.WorkloadID(td, "bookbuyer", "bookbuyer")
	if err != nil {
		t.Fatal(err)
	}
	if id.String() != "spiffe://meshfed.local/ns/bookbuyer/sa/bookbuyer" {
		t.Fatalf("id = %s", id)
	}
	ns, sa, err := trust.ParseWorkloadID(id)
	if err != nil || ns != "bookbuyer" || sa != "bookbuyer" {
		t.Fatalf("parse = %q %q %v", ns, sa, err)
	}
	for _, bad := range []string{"spiffe://meshfed.local/ns/a", "spiffe://meshfed.local/x/a/sa/b", "spiffe://meshfed.local/ns/a/sa/b/c"} {
		if _, _, err := trust.ParseWorkloadID(spiffeid.RequireFromString(bad)); err == nil {
			t.Errorf("%s parsed as a workload identity", bad)
		}
	}
	if _, err := trust.WorkloadID(td, "", "sa"); err == nil {
		t.Error("empty namespace accepted")
	}
}
