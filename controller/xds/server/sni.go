package server

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/controller/xds/generate"
)

// Proxyless gRPC sends the server name an east-west gateway routes by only
// when GRPC_EXPERIMENTAL_XDS_SNI=true is in its environment as it starts,
// which the controller cannot see. A workload says it in its bootstrap's
// node metadata (meshfed agent --xds-sni writes NodeMetadataSNI: true).
// A proxyless node that does not is given no endpoint reached through a
// gateway — its connections would be closed there for want of a server
// name — and the controller logs a warning when it connects while the mesh
// has such endpoints.

// declaresSNI says whether node's metadata declares
// generate.NodeMetadataSNI true.
func declaresSNI(node *corev3.Node) bool {
	v, ok := node.GetMetadata().GetFields()[generate.NodeMetadataSNI]
	return ok && v.GetBoolValue()
}

// gatewayAddresses are the addresses of the current state's endpoints that
// stand for a remote cluster's workloads behind its gateways.
func (b *builder) gatewayAddresses() map[string]bool {
	if b.ix == nil {
		return nil
	}
	var out map[string]bool
	for _, rc := range b.ix.State.Remote {
		for i := range rc.Services {
			for _, e := range rc.Services[i].Endpoints {
				if e.Stands > 0 {
					if out == nil {
						out = map[string]bool{}
					}
					out[e.Address] = true
				}
			}
		}
	}
	return out
}

// edsWithoutGateways is every load assignment without the endpoints reached
// through gateways, for proxyless nodes that send no server name. It is
// b.eds itself while no endpoint is reached through a gateway, and is
// recomputed only when b.eds changes.
func (b *builder) edsWithoutGateways() versioned {
	if b.noSNI.of == b.eds.version && b.noSNI.of != "" {
		return b.noSNI.v
	}
	gws := b.gatewayAddresses()
	v := b.eds
	if len(gws) > 0 {
		items := make(map[string]types.ResourceWithTTL, len(b.eds.res.Items))
		for name, r := range b.eds.res.Items {
			if cla, ok := r.Resource.(*endpointv3.ClusterLoadAssignment); ok && reachesGateway(cla, gws) {
				r = types.ResourceWithTTL{Resource: withoutGateways(cla, gws)}
			}
			items[name] = r
		}
		version := b.eds.version + ".no-sni"
		v = versioned{version: version, res: cachev3.Resources{Version: version, Items: items}}
	}
	b.noSNI.of, b.noSNI.v = b.eds.version, v
	return v
}

func reachesGateway(cla *endpointv3.ClusterLoadAssignment, gws map[string]bool) bool {
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			if gws[e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] {
				return true
			}
		}
	}
	return false
}

// withoutGateways returns a copy of cla without the endpoints at gws and
// the localities left empty.
func withoutGateways(cla *endpointv3.ClusterLoadAssignment, gws map[string]bool) *endpointv3.ClusterLoadAssignment {
	out := proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
	out.Endpoints = out.Endpoints[:0]
	for _, l := range cla.GetEndpoints() {
		var kept []*endpointv3.LbEndpoint
		for _, e := range l.GetLbEndpoints() {
			if !gws[e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] {
				kept = append(kept, e)
			}
		}
		if len(kept) > 0 {
			nl := proto.Clone(l).(*endpointv3.LocalityLbEndpoints)
			nl.LbEndpoints = kept
			out.Endpoints = append(out.Endpoints, nl)
		}
	}
	return out
}

// noSNISuffix marks, in a proxy's cache key, a proxyless node that sends no
// server name.
const noSNISuffix = "|no-sni"
