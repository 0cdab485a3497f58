package federate

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
)

// AnnotationFailStatic on a ServiceExport overrides, for that service, what
// the other clusters do when this cluster is lost: "true" keeps its
// endpoints until it returns, "false" withdraws them after withdrawAfter,
// whatever the importing cluster's MeshConfig says.
const AnnotationFailStatic = "meshfed.io/fail-static"

// failStaticOverride reads AnnotationFailStatic; nil means no override.
func failStaticOverride(annotations map[string]string) (*bool, error) {
	v, ok := annotations[AnnotationFailStatic]
	if !ok {
		return nil, nil
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return nil, fmt.Errorf("annotation %s=%q: want true or false", AnnotationFailStatic, v)
	}
	return &b, nil
}

// exportFrom turns a local service (as controller/kube reads it) into the
// catalog entry this cluster publishes. A port's target is the Service's
// numeric targetPort or, for a named one, the number the EndpointSlices
// give (the first endpoint that names it).
func exportFrom(svc mesh.Service, headless bool, exportedAt time.Time) catalog.ExportedService {
	out := catalog.ExportedService{Namespace: svc.Namespace, Name: svc.Name, Headless: headless, ExportedAt: exportedAt.UTC()}
	for _, p := range svc.Ports {
		cp := catalog.Port{Name: p.Name, Port: uint16(p.Port), Protocol: string(p.Protocol), TargetPort: uint16(p.TargetPort)}
		if cp.TargetPort == 0 {
			for _, e := range svc.Endpoints {
				if tp, ok := e.TargetPorts[p.Name]; ok && tp != 0 {
					cp.TargetPort = uint16(tp)
					break
				}
			}
		}
		if cp.TargetPort == cp.Port {
			cp.TargetPort = 0
		}
		out.Ports = append(out.Ports, cp)
	}
	for _, e := range svc.Endpoints {
		if e.Terminating && !e.Ready {
			continue
		}
		out.Endpoints = append(out.Endpoints, catalog.Endpoint{
			Address: e.Address, Ready: e.Ready, Zone: e.Locality.Zone, Identity: string(e.Identity),
		})
	}
	return out
}

// serviceFromCatalog turns a remote cluster's exported service into the
// mesh vocabulary: every endpoint labelled with its cluster, network, zone
// and identity.
func serviceFromCatalog(cluster, network string, es catalog.ExportedService) mesh.Service {
	out := mesh.Service{Namespace: es.Namespace, Name: es.Name, Cluster: cluster}
	for _, p := range es.Ports {
		out.Ports = append(out.Ports, mesh.Port{Name: p.Name, Port: uint32(p.Port), TargetPort: uint32(p.TargetPort), Protocol: protocolFromCatalog(p.Protocol)})
	}
	ids := map[mesh.Identity]bool{}
	for _, e := range es.Endpoints {
		id := mesh.Identity(e.Identity)
		if id != "" {
			ids[id] = true
		}
		out.Endpoints = append(out.Endpoints, mesh.Endpoint{
			Address: e.Address, Cluster: cluster, Network: network,
			Locality: mesh.Locality{Zone: e.Zone}, Ready: e.Ready, Identity: id,
		})
	}
	sort.Slice(out.Endpoints, func(i, j int) bool { return out.Endpoints[i].Address < out.Endpoints[j].Address })
	for id := range ids {
		out.Identities = append(out.Identities, id)
	}
	sort.Slice(out.Identities, func(i, j int) bool { return out.Identities[i] < out.Identities[j] })
	return out
}

// protocolFromCatalog reads a catalog port protocol: meshfed writes the
// mesh protocol ("http", "grpc", …); other writers may use upper case.
func protocolFromCatalog(p string) mesh.Protocol {
	switch mp := mesh.Protocol(strings.ToLower(p)); mp {
	case mesh.ProtocolHTTP, mesh.ProtocolHTTP2, mesh.ProtocolGRPC, mesh.ProtocolTCP:
		return mp
	case "":
		return mesh.ProtocolHTTP
	}
	return mesh.ProtocolTCP
}

// exporter is one cluster's export of a name.
type exporter struct {
	Cluster string
	Service catalog.ExportedService
}

// precedes reports whether a takes precedence over b under MCS conflict
// resolution: the older export first, an unknown time counts as newest,
// ties go to the smaller cluster name.
func precedes(a, b exporter) bool {
	ta, tb := a.Service.ExportedAt, b.Service.ExportedAt
	switch {
	case ta.IsZero() && !tb.IsZero():
		return false
	case !ta.IsZero() && tb.IsZero():
		return true
	case !ta.Equal(tb):
		return ta.Before(tb)
	}
	return a.Cluster < b.Cluster
}

// conflict says why an export was left out.
type conflict struct {
	// Reason is the MCS condition reason: PortConflict or TypeConflict.
	Reason string
	// Message names the winning cluster and what differs.
	Message string
}

// resolution is the outcome of conflict resolution for one name.
type resolution struct {
	// Accepted are the exporters in precedence order.
	Accepted []exporter
	// Rejected are the conflicting exports by cluster.
	Rejected map[string]conflict
	// Ports is the union of the accepted exporters' ports, sorted by port.
	Ports    []catalog.Port
	Headless bool
}

func portKey(p catalog.Port) string {
	if p.Name != "" {
		return p.Name
	}
	return "#" + strconv.Itoa(int(p.Port))
}

// resolve applies MCS conflict resolution to the exporters of one name. The
// derived service has the union of the exporters' ports; an export that
// uses a port name (or number) with another number or protocol than an
// export of higher precedence, or differs in headlessness, is rejected as
// a whole: reported on its ServiceExport and not routed to.
func resolve(exporters []exporter) resolution {
	sorted := append([]exporter(nil), exporters...)
	sort.Slice(sorted, func(i, j int) bool { return precedes(sorted[i], sorted[j]) })
	res := resolution{Rejected: map[string]conflict{}}
	byKey := map[string]catalog.Port{}
	byNumber := map[uint16]string{}
	owner := map[string]string{}
	for i, e := range sorted {
		if i > 0 && e.Service.Headless != res.Headless {
			res.Rejected[e.Cluster] = conflict{"TypeConflict", "cluster " + sorted[0].Cluster + " exported it first as " + importType(res.Headless) + ", this export is " + importType(e.Service.Headless)}
			continue
		}
		var why string
		for _, p := range e.Service.Ports {
			k := portKey(p)
			if q, ok := byKey[k]; ok && (q.Port != p.Port || !strings.EqualFold(q.Protocol, p.Protocol)) {
				why = "port " + k + ": cluster " + owner[k] + " exported it first as " + portString(q) + ", this export has " + portString(p)
				break
			}
			if other, ok := byNumber[p.Port]; ok && other != k {
				why = "port " + strconv.Itoa(int(p.Port)) + ": cluster " + owner[other] + " exported it first as " + other + ", this export names it " + k
				break
			}
		}
		if why != "" {
			res.Rejected[e.Cluster] = conflict{"PortConflict", why}
			continue
		}
		if i == 0 {
			res.Headless = e.Service.Headless
		}
		for _, p := range e.Service.Ports {
			k := portKey(p)
			if _, ok := byKey[k]; !ok {
				byKey[k], byNumber[p.Port], owner[k] = p, k, e.Cluster
				res.Ports = append(res.Ports, catalog.Port{Name: p.Name, Port: p.Port, Protocol: p.Protocol})
			}
		}
		res.Accepted = append(res.Accepted, e)
	}
	sort.Slice(res.Ports, func(i, j int) bool { return res.Ports[i].Port < res.Ports[j].Port })
	return res
}

func portString(p catalog.Port) string {
	proto := p.Protocol
	if proto == "" {
		proto = "http"
	}
	return strconv.Itoa(int(p.Port)) + "/" + proto
}

func importType(headless bool) string {
	if headless {
		return "Headless"
	}
	return "ClusterSetIP"
}
