package federate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/mesh"
)

// Networks. Clusters whose pod networks reach each other share a network
// name (MeshConfig spec.federation.network); clients reach a cluster on
// another network only through its east-west gateway, whose addresses its
// signed catalog lists. routeThroughGateways rewrites the remote view
// accordingly (mesh.ThroughGateways): clients get the gateway addresses in
// place of the workloads', and a cluster on another network that lists no
// usable gateway address cannot be reached at all.

// sameNetwork compares network names, a missing one being the default.
func sameNetwork(a, b string) bool {
	if a == "" {
		a = mesh.DefaultNetwork
	}
	if b == "" {
		b = mesh.DefaultNetwork
	}
	return a == b
}

// routeThroughGateways rewrites, in rs, the services of every cluster on
// another network than local to go through that cluster's gateways, as its
// catalog in rv lists them. It returns, for every such cluster that lists
// none usable, why its services have no endpoints here.
func routeThroughGateways(rs *RemoteState, local string, rv *federation.RemoteView) map[string]string {
	if rv == nil {
		return nil
	}
	unreachable := map[string]string{}
	for name, cc := range rs.Remote {
		if sameNetwork(cc.Network, local) || len(cc.Services) == 0 {
			continue
		}
		var listed []string
		if cv, ok := rv.Clusters[name]; ok && cv.Catalog != nil {
			listed = cv.Catalog.Gateways
		}
		gateways, problems := parseGateways(listed)
		if len(gateways) == 0 {
			why := fmt.Sprintf("cluster %s is on network %s, this one on %s, and its catalog lists no east-west gateway", mesh.Quote(name), mesh.Quote(cc.Network), mesh.Quote(local))
			if len(problems) > 0 {
				why += " it can use (" + strings.Join(problems, "; ") + ")"
			}
			unreachable[name] = why
		}
		services := make([]mesh.Service, len(cc.Services))
		for i, svc := range cc.Services {
			services[i] = mesh.ThroughGateways(svc, gateways)
		}
		cc.Services = services
		rs.Remote[name] = cc
	}
	return unreachable
}

// parseGateways returns the usable gateway addresses of a remote catalog,
// sorted and each once (grpc-go refuses a load assignment that lists an
// address twice), and what is wrong with the others.
func parseGateways(listed []string) ([]netip.AddrPort, []string) {
	var out []netip.AddrPort
	var problems []string
	for _, g := range listed {
		if err := mesh.CheckGatewayAddress(g); err != nil {
			problems = append(problems, fmt.Sprintf("gateway %s: %v", mesh.Quote(g), err))
			continue
		}
		out = append(out, netip.MustParseAddrPort(g))
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return slices.Compact(out), problems
}
