package generate

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshfed/meshfed/mesh"
)

// The gateway's Envoy starts from a bootstrap that names nothing but the
// controller: its listeners and clusters come over ADS (GatewayConfig).
// The ADS connection is mTLS with the gateway's own SVID, which `meshfed
// agent` keeps fresh in a directory; Envoy reads the SVID and the trust
// bundle through two file-based SDS secrets and reloads them when the
// directory changes, so a renewed SVID needs no restart.

// GatewayBootstrapOptions say where the gateway's Envoy finds its
// controller and its SVID.
type GatewayBootstrapOptions struct {
	// ControllerHost and XDSPort are where the controller serves xDS
	// (its Service's DNS name, which its serving certificate names).
	ControllerHost string
	XDSPort        uint32
	// ControllerID is the controller's SPIFFE ID, the only identity the
	// gateway accepts from it.
	ControllerID mesh.Identity
	// CertDir is where meshfed agent writes the SVID files; SDSDir where
	// the two SDS files (SDSFiles) are.
	CertDir, SDSDir string
	// Node names the proxy in its bootstrap (informational: the controller
	// knows a proxy by its certificate). Default "meshfed-gateway".
	Node string
}

// SDS secret names and files of the gateway's bootstrap.
const (
	gatewaySVIDSecret   = "gateway-svid"
	gatewayBundleSecret = "gateway-trust-bundle"
	GatewaySVIDFile     = "svid.json"
	GatewayBundleFile   = "trust-bundle.json"
	gatewayXDSCluster   = "meshfed-xds"
)

// GatewayBootstrap returns the gateway Envoy's bootstrap.
func GatewayBootstrap(o GatewayBootstrapOptions) *bootstrapv3.Bootstrap {
	sds := func(name, file string) *tlsv3.SdsSecretConfig {
		return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{
			ResourceApiVersion: corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{
				Path: filepath.Join(o.SDSDir, file), WatchedDirectory: &corev3.WatchedDirectory{Path: o.CertDir},
			}},
		}}
	}
	upstreamTLS := &tlsv3.UpstreamTlsContext{Sni: o.ControllerHost, CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds(gatewaySVIDSecret, GatewaySVIDFile)},
		ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: sds(gatewayBundleSecret, GatewayBundleFile)},
	}}
	h2 := mustAny(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
			Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
		}},
	}})
	xds := &clusterv3.Cluster{
		Name:                          gatewayXDSCluster,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		ConnectTimeout:                durationpb.New(5 * time.Second),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: gatewayXDSCluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: o.ControllerHost, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: o.XDSPort},
				}}},
			}}}},
		}}},
		TransportSocket: &corev3.TransportSocket{Name: tlsTransportName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(upstreamTLS)}},
	}
	node := o.Node
	if node == "" {
		node = "meshfed-gateway"
	}
	ads := &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	return &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: node, Cluster: node},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType: corev3.ApiConfigSource_GRPC, TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: gatewayXDSCluster}}}},
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{xds}},
	}
}

// GatewaySDSSecrets returns the two secrets the bootstrap reads from
// files: the gateway's SVID and the trust bundle, which accepts the
// controller's SPIFFE ID only. Each is written, as a discovery response,
// to its file (GatewaySVIDFile, GatewayBundleFile).
func GatewaySDSSecrets(o GatewayBootstrapOptions, certFile, keyFile, bundleFile string) (svid, bundle *tlsv3.Secret) {
	file := func(name string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: filepath.Join(o.CertDir, name)}}
	}
	svid = &tlsv3.Secret{Name: gatewaySVIDSecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: file(certFile), PrivateKey: file(keyFile),
	}}}
	bundle = &tlsv3.Secret{Name: gatewayBundleSecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: file(bundleFile),
		MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: string(o.ControllerID)}}}},
	}}}
	return svid, bundle
}

// SidecarBootstrap is the bootstrap of an injected Envoy sidecar: the
// gateway's, under the sidecar's node name. Its listeners, clusters and
// its workload's certificates come over ADS and SDS from the controller.
func SidecarBootstrap(o GatewayBootstrapOptions) *bootstrapv3.Bootstrap {
	if o.Node == "" {
		o.Node = "meshfed-sidecar"
	}
	return GatewayBootstrap(o)
}

// SDSFiles returns the two files the bootstrap reads its SVID and trust
// bundle from (GatewaySVIDFile, GatewayBundleFile), as discovery
// responses, for meshfed agent's files certFile, keyFile and bundleFile
// in o.CertDir.
func SDSFiles(o GatewayBootstrapOptions, certFile, keyFile, bundleFile string) (map[string][]byte, error) {
	svid, bundle := GatewaySDSSecrets(o, certFile, keyFile, bundleFile)
	out := map[string][]byte{}
	for file, m := range map[string]proto.Message{GatewaySVIDFile: svid, GatewayBundleFile: bundle} {
		a, err := anypb.New(m)
		if err != nil {
			return nil, err
		}
		b, err := StableJSON(&discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{a}}, "  ")
		if err != nil {
			return nil, err
		}
		out[file] = b
	}
	return out, nil
}

// StableJSON is m in protojson's field names and forms, the same bytes for
// the same message every time (protojson varies its whitespace on
// purpose), so that what install writes or the injector adds does not
// change when nothing changed. With indent "" it is compact; else each
// level is indented by indent.
func StableJSON(m proto.Message, indent string) ([]byte, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return nil, err
	}
	if indent == "" {
		return compact.Bytes(), nil
	}
	var out bytes.Buffer
	if err := json.Indent(&out, compact.Bytes(), "", indent); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
