package generate

import (
	"net"
	"strconv"

	"github.com/meshfed/meshfed/mesh"
)

// Names of certificate provider instances (proxyless, grpc-go bootstrap
// "certificate_providers") and SDS secrets (Envoy) that carry the workload's
// own SVID and the mesh trust bundle. The workload side (meshfed agent,
// bootstrap) must define exactly these. The SDS names are the same for
// every sidecar, so that sidecar clusters can be shared by all identities;
// the xDS server puts the proxy's own identity's secrets under them in each
// proxy's snapshot (trust/sds names secrets by SPIFFE ID; the server renames).
const (
	ProxylessIdentityProvider = "meshfed-identity"
	ProxylessRootProvider     = "meshfed-roots"
	SDSIdentitySecret         = "meshfed-identity"
	SDSTrustBundleSecret      = "meshfed-trust-bundle"
)

// ServerListenerNamePrefix is what grpc-go's
// server_listener_resource_name_template must be set to, followed by "%s".
const ServerListenerNamePrefix = "grpc/server?xds.resource.listening_address="

// ClusterName names the CDS cluster and EDS assignment of a service port;
// remote is the exporting cluster, "" for a local service.
func ClusterName(svc mesh.NamespacedName, port uint32, remote string) string {
	name := svc.Namespace + "/" + svc.Name + ":" + strconv.FormatUint(uint64(port), 10)
	if remote != "" {
		name += "@" + remote
	}
	return name
}

// ClientListenerName names the proxyless client listener (and its route
// configuration) of a service port: the target clients dial.
func ClientListenerName(svc *mesh.Service, port uint32) string {
	return clientListenerName(svc.Key(), port)
}

func clientListenerName(svc mesh.NamespacedName, port uint32) string {
	return fqdn(svc) + ":" + strconv.FormatUint(uint64(port), 10)
}

// fqdn is mesh.Service.FQDN from the service's key.
func fqdn(svc mesh.NamespacedName) string {
	return svc.Name + "." + svc.Namespace + ".svc.cluster.local"
}

// ServerListenerName names the proxyless server listener for ip:port.
func ServerListenerName(ip string, port uint32) string {
	return ServerListenerNamePrefix + net.JoinHostPort(ip, strconv.FormatUint(uint64(port), 10))
}

// NodeMetadataSNI is the node metadata field by which a proxyless workload
// declares, in its bootstrap, that it runs with GRPC_EXPERIMENTAL_XDS_SNI
// set and so sends the server names east-west gateways route by.
const NodeMetadataSNI = "meshfed.io/xds-sni"
