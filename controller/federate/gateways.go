package federate

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/catalog"
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

// gatewayAddresses are this cluster's gateway addresses: the configured
// ones, or else those of its gateway Service's load balancer (each IP
// ingress point at the Service's port), sorted. Ingress points given only
// by host name cannot be published (a catalog holds IPs) and are reported.
func (b *Bridge) gatewayAddresses() []string {
	if len(b.cfg.Gateways) > 0 || b.cfg.GatewayService == "" {
		return b.cfg.Gateways
	}
	svc, err := b.services.Services(b.cfg.Namespace).Get(b.cfg.GatewayService)
	if err != nil || len(svc.Spec.Ports) == 0 {
		return nil
	}
	port := svc.Spec.Ports[0].Port
	var out, names []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP == "" {
			names = append(names, in.Hostname)
			continue
		}
		a := net.JoinHostPort(in.IP, strconv.Itoa(int(port)))
		if err := mesh.CheckGatewayAddress(a); err != nil {
			names = append(names, a+" ("+err.Error()+")")
			continue
		}
		if len(out) < catalog.MaxGateways {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	if why := strings.Join(names, ", "); why != b.unusableIngress {
		b.unusableIngress = why
		if why != "" {
			b.log.Warn("federate: the gateway's load balancer gives addresses a catalog cannot carry; set them with meshfed install --gateway-address IP:PORT", "service", b.cfg.Namespace+"/"+b.cfg.GatewayService, "unusable", why)
		}
	}
	return out
}
