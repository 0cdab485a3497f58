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
