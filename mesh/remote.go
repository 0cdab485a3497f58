package mesh

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ErrRemoteService is wrapped by every error ValidateRemote returns.
var ErrRemoteService = errors.New("invalid remote service")

// maxRemoteProblems bounds the problems ValidateRemote lists for one
// service; the rest are counted.
const maxRemoteProblems = 10

// ValidateRemote checks a service another cluster exports before it goes
// anywhere near generation, status or logs. It is at least as strict as the
// local checks (Validate) and adds what a hostile federation member could
// otherwise slip in:
//   - the namespace is a DNS-1123 label and the name a DNS-1035 label, as
//     Kubernetes requires of a Service;
//   - the service and every endpoint belong to cluster, the cluster whose
//     signed catalog carried them;
//   - ports are in 1..65535, listed once, with DNS-1123 label names;
//   - endpoint addresses are IP addresses in canonical form that are not
//     loopback, unspecified, link-local or multicast, and carry no zone;
//   - identities are meshfed SPIFFE IDs of trustDomain whose namespace is
//     the service's own (a workload's ServiceAccount lives in its Pod's
//     namespace);
//   - zones and networks are Kubernetes label values.
//
// It lists at most ten problems on one line, then counts the rest; every
// name in the message is escaped with Quote.
func (svc Service) ValidateRemote(cluster, trustDomain string) error {
	v := remoteCheck{}
	v.check(svc, cluster, trustDomain)
	return v.err(svc)
}

type remoteCheck struct {
	errs []string
	more int
	// checked are identities already judged: endpoints of one service
	// mostly share one.
	checked map[Identity]bool
}

// add records a problem; one already listed (the same bad identity on
// every endpoint) is not repeated.
func (v *remoteCheck) add(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if slices.Contains(v.errs, msg) {
		return
	}
	if len(v.errs) >= maxRemoteProblems {
		v.more++
		return
	}
	v.errs = append(v.errs, msg)
}

func (v *remoteCheck) err(svc Service) error {
	if len(v.errs) == 0 {
		return nil
	}
	if v.more > 0 {
		v.errs = append(v.errs, fmt.Sprintf("and %d more problems", v.more))
	}
	return fmt.Errorf("%w %s/%s from cluster %s: %s", ErrRemoteService, Quote(svc.Namespace), Quote(svc.Name), Quote(svc.Cluster), strings.Join(v.errs, "; "))
}

func (v *remoteCheck) check(svc Service, cluster, trustDomain string) {
	if !IsDNS1123Label(cluster) {
		v.add("catalog cluster name %s: not a DNS-1123 label", Quote(cluster))
	}
	if svc.Cluster != cluster {
		v.add("service claims cluster %s, its catalog is %s's", Quote(svc.Cluster), Quote(cluster))
	}
	if !IsDNS1123Label(svc.Namespace) {
		v.add("namespace %s: not a DNS-1123 label", Quote(svc.Namespace))
	}
	if !IsDNS1035Label(svc.Name) {
		v.add("name %s: not a DNS-1035 label", Quote(svc.Name))
	}
	v.checkPorts(svc.Ports)
	for _, id := range svc.Identities {
		v.checkIdentity(id, svc.Namespace, trustDomain)
	}
	for _, e := range svc.Endpoints {
		v.checkEndpoint(e, svc, cluster, trustDomain)
	}
}

func (v *remoteCheck) checkPorts(ports []Port) {
	numbers := map[uint32]bool{}
	names := map[string]bool{}
	for _, p := range ports {
		if p.Port == 0 || p.Port > 65535 || p.Target() > 65535 {
			v.add("port %s: number %d (target %d) out of range", Quote(p.Name), p.Port, p.Target())
		}
		if numbers[p.Port] {
			v.add("port %d listed twice", p.Port)
		}
		numbers[p.Port] = true
		if p.Name == "" && len(ports) > 1 {
			v.add("port %d: unnamed, but the service has %d ports", p.Port, len(ports))
		}
		if p.Name != "" && !IsDNS1123Label(p.Name) {
			v.add("port name %s: not a DNS-1123 label", Quote(p.Name))
		}
		if p.Name != "" && names[p.Name] {
			v.add("port name %s listed twice", Quote(p.Name))
		}
		names[p.Name] = true
		switch p.Protocol {
		case "", ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC, ProtocolTCP:
		default:
			v.add("port %d: protocol %s unknown", p.Port, Quote(string(p.Protocol)))
		}
	}
}

func (v *remoteCheck) checkIdentity(id Identity, namespace, trustDomain string) {
	td, ns, sa, ok := id.parts()
	switch {
	case !ok:
		v.add("identity %s: not spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>", Quote(string(id)))
	case td != trustDomain:
		v.add("identity %s: not of the trust domain %s", Quote(string(id)), Quote(trustDomain))
	case ns != namespace:
		v.add("identity %s: not of the service's namespace", Quote(string(id)))
	case !IsDNS1123Subdomain(sa):
		v.add("identity %s: service account not a DNS-1123 subdomain", Quote(string(id)))
	}
}

func (v *remoteCheck) checkEndpoint(e Endpoint, svc Service, cluster, trustDomain string) {
	if err := checkRemoteAddress(e.Address); err != nil {
		v.add("endpoint %s: %v", Quote(e.Address), err)
	}
	if e.Cluster != cluster {
		v.add("endpoint %s: claims cluster %s", Quote(e.Address), Quote(e.Cluster))
	}
	if e.Network != "" && !IsLabelValue(e.Network) {
		v.add("endpoint %s: network %s: not a label value", Quote(e.Address), Quote(e.Network))
	}
	for _, s := range []string{e.Locality.Region, e.Locality.Zone, e.Locality.SubZone} {
		if s != "" && !IsLabelValue(s) {
			v.add("endpoint %s: locality %s: not a label value", Quote(e.Address), Quote(s))
		}
	}
	for name, tp := range e.TargetPorts {
		if tp > 65535 {
			v.add("endpoint %s: target port %s: %d out of range", Quote(e.Address), Quote(name), tp)
		}
	}
	if e.Identity != "" && !v.checked[e.Identity] {
		if v.checked == nil {
			v.checked = map[Identity]bool{}
		}
		v.checked[e.Identity] = true
		v.checkIdentity(e.Identity, svc.Namespace, trustDomain)
	}
}

// checkRemoteAddress accepts an IP address in canonical form that a
// workload in another cluster could have.
func checkRemoteAddress(s string) error {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return errors.New("not an IP address")
	case a.String() != s:
		return fmt.Errorf("not in canonical form (%s)", a)
	case a.Zone() != "" || a.Is4In6():
		return errors.New("zoned or IPv4-mapped address")
	case a.IsLoopback(), a.IsUnspecified(), a.IsMulticast(), a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast():
		return errors.New("loopback, unspecified, link-local or multicast address")
	}
	return nil
}

// CheckGatewayAddress checks an east-west gateway's address as another
// cluster's catalog gives it: an IP address a workload could have (as an
// endpoint's, checkRemoteAddress) and a port in 1..65535.
func CheckGatewayAddress(s string) error {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return errors.New("not IP:port")
	}
	if ap.Port() == 0 {
		return errors.New("port 0")
	}
	return checkRemoteAddress(ap.Addr().String())
}

// ThroughGateways returns svc, a service of a cluster on another network,
// as clients on this network reach it: its endpoints replaced by the
// cluster's east-west gateway addresses (every port's target is the
// gateway's port). They are ready while any of its workloads is, and
// together stand for its ready workloads (Endpoint.Stands; each for at
// least one), so that clients balance over clusters by workloads. The
// service's identities stay: clients verify the workloads' SVIDs, for the
// gateway passes TLS through. Without a gateway the service has no
// endpoints: no client can reach it.
func ThroughGateways(svc Service, gateways []netip.AddrPort) Service {
	if len(svc.Identities) == 0 {
		svc.Identities = svc.EndpointIdentities()
	}
	var ready uint32
	network := ""
	for _, e := range svc.Endpoints {
		ready += min(e.Weight(), 1)
		network = e.Network
	}
	svc.Endpoints = nil
	n := uint32(len(gateways))
	for i, g := range gateways {
		share := ready / n
		if uint32(i) < ready%n {
			share++
		}
		e := Endpoint{Address: g.Addr().String(), Cluster: svc.Cluster, Network: network, Ready: ready > 0,
			Stands: max(share, 1), TargetPorts: map[string]uint32{}}
		for _, p := range svc.Ports {
			e.TargetPorts[p.Name] = uint32(g.Port())
		}
		svc.Endpoints = append(svc.Endpoints, e)
	}
	return svc
}
