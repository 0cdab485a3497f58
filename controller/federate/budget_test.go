package federate_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
)

// More ServiceImports than one pass may write: the remote view holds every
// service, the writes a pass leaves are made by the passes after it until
// every ServiceImport exists, and running out of the budget is not
// reported as a failure.
func TestImportsBeyondOnePassWriteBudgetAllArrive(t *testing.T) {
	sb := sandboxtest.Start(t, "east")
	root, gossipKey := newFederationKeys(t)
	east := startMemberWith(t, sb.Cluster("east"), root, gossipKey, func(c *federate.Config) {
		c.WriteBudget, c.Resync = 10, 10*time.Minute
	})
	ensureNamespace(t, east, "bookstore")

	const n = 60
	var services []catalog.ExportedService
	for i := range n {
		services = append(services, catalog.ExportedService{
			Namespace: "bookstore", Name: fmt.Sprintf("svc-%d", i), Ports: []catalog.Port{{Name: "grpc", Port: 14001, Protocol: "grpc"}},
			Endpoints: []catalog.Endpoint{{Address: fmt.Sprintf("10.244.9.%d", i+1), Ready: true, Zone: "north-a"}},
		})
	}
	startChildMember(t, "north", root, gossipKey, east.fed.Addr(), services...)

	eventually(t, time.Minute, func() (bool, string) {
		got := len(east.bridge.Remote().Remote["north"].Services)
		return got == n, fmt.Sprintf("east's remote view holds %d of north's %d services", got, n)
	})
	eventually(t, 2*time.Minute, func() (bool, string) {
		missing := 0
		for i := range n {
			if clusters, _, _, ok := serviceImport(t, east, "bookstore", fmt.Sprintf("svc-%d", i)); !ok || len(clusters) != 1 || clusters[0] != "north" {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d ServiceImports missing or without north", missing, n)
	})
	for _, r := range east.logs.find(nil) {
		if r.Msg == "federate: reconcile incomplete, retrying" {
			t.Errorf("a pass that ran out of its write budget was reported as a failure: %v", r.Attrs)
		}
	}
}
