package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3" // the xDS cluster's protocol options
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// ReadEnvoyBootstrap reads what the gateway's Envoy reads at start
// (generate.GatewayBootstrap, as JSON): the ADS cluster's address and the
// TLS of its connection, through the two file-based SDS secrets to the
// files meshfed agent writes. file is on the host; the paths inside it are
// the container's, found through rt, and the address too.
//
// The returned tls.Config checks the controller as Envoy does: its chain
// against the trust bundle and its URI SAN against the validation
// context's, not a host name. It reads the SVID and the bundle at every
// handshake, so that the agent's renewals take effect.
func ReadEnvoyBootstrap(file string, rt Runtime) (target string, cfg *tls.Config, err error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	boot := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(b, boot); err != nil {
		return "", nil, fmt.Errorf("envoy bootstrap %s: %w", file, err)
	}
	target, cfg, err = adsConnection(boot, rt)
	if err != nil {
		return "", nil, fmt.Errorf("envoy bootstrap %s: %w", file, err)
	}
	return target, cfg, nil
}

func adsConnection(boot *bootstrapv3.Bootstrap, rt Runtime) (string, *tls.Config, error) {
	gs := boot.GetDynamicResources().GetAdsConfig().GetGrpcServices()
	if len(gs) != 1 || gs[0].GetEnvoyGrpc().GetClusterName() == "" {
		return "", nil, errors.New("dynamic_resources.ads_config names no envoy_grpc cluster")
	}
	name := gs[0].GetEnvoyGrpc().GetClusterName()
	i := slices.IndexFunc(boot.GetStaticResources().GetClusters(), func(c *clusterv3.Cluster) bool { return c.GetName() == name })
	if i < 0 {
		return "", nil, fmt.Errorf("ADS cluster %s is not among static_resources.clusters", name)
	}
	c := boot.GetStaticResources().GetClusters()[i]

	eps := c.GetLoadAssignment().GetEndpoints()
	if len(eps) == 0 || len(eps[0].GetLbEndpoints()) == 0 {
		return "", nil, fmt.Errorf("cluster %s: load_assignment has no endpoint", name)
	}
	sa := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() == "" || sa.GetPortValue() == 0 {
		return "", nil, fmt.Errorf("cluster %s: first endpoint has no socket address with a port", name)
	}
	target := rt.Address(net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))

	utc := &tlsv3.UpstreamTlsContext{}
	if tc := c.GetTransportSocket().GetTypedConfig(); tc == nil || tc.UnmarshalTo(utc) != nil {
		return "", nil, fmt.Errorf("cluster %s: transport_socket is not an UpstreamTlsContext", name)
	}
	common := utc.GetCommonTlsContext()
	if len(common.GetTlsCertificateSdsSecretConfigs()) != 1 || common.GetValidationContextSdsSecretConfig() == nil {
		return "", nil, fmt.Errorf("cluster %s: want one tls_certificate_sds_secret_configs and a validation_context_sds_secret_config", name)
	}
	svid, err := readSDS(common.GetTlsCertificateSdsSecretConfigs()[0], rt)
	if err != nil {
		return "", nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	bundle, err := readSDS(common.GetValidationContextSdsSecretConfig(), rt)
	if err != nil {
		return "", nil, fmt.Errorf("cluster %s: %w", name, err)
	}

	tc, vc := svid.secret.GetTlsCertificate(), bundle.secret.GetValidationContext()
	if tc == nil || vc == nil {
		return "", nil, fmt.Errorf("cluster %s: %s must hold a tls_certificate and %s a validation_context", name, svid.file, bundle.file)
	}
	certFile, err := filename(rt, svid, "tls_certificate.certificate_chain", tc.GetCertificateChain().GetFilename())
	if err != nil {
		return "", nil, err
	}
	keyFile, err := filename(rt, svid, "tls_certificate.private_key", tc.GetPrivateKey().GetFilename())
	if err != nil {
		return "", nil, err
	}
	caFile, err := filename(rt, bundle, "validation_context.trusted_ca", vc.GetTrustedCa().GetFilename())
	if err != nil {
		return "", nil, err
	}
	var ids []string
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI || m.GetMatcher().GetExact() == "" || m.GetMatcher().GetIgnoreCase() {
			return "", nil, fmt.Errorf("%s: secret %s: the stand-in matches only exact URI subject alt names", bundle.file, bundle.secret.GetName())
		}
		ids = append(ids, m.GetMatcher().GetExact())
	}

	return target, &tls.Config{
		ServerName: utc.GetSni(), // empty: grpc-go sends the target's host
		MinVersion: tls.VersionTLS12,
		// Replaced by VerifyConnection: Envoy checks the chain and the
		// SANs the validation context names, not the server name.
		InsecureSkipVerify: true,
		VerifyConnection:   func(cs tls.ConnectionState) error { return verifyController(cs.PeerCertificates, caFile, ids) },
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("gateway SVID (%s, %s): %w", certFile, keyFile, err)
			}
			return &c, nil
		},
	}, nil
}

// sds is a secret read from a file-based SDS config.
type sds struct {
	file   string // on the host
	secret *tlsv3.Secret
}

// readSDS reads the one secret the file an SDS config names holds; as in
// Envoy, it must have the name the config asks for.
func readSDS(c *tlsv3.SdsSecretConfig, rt Runtime) (sds, error) {
	p := c.GetSdsConfig().GetPathConfigSource().GetPath()
	if p == "" {
		return sds{}, fmt.Errorf("secret %s: sds_config has no path_config_source", c.GetName())
	}
	file, err := rt.Path(p)
	if err != nil {
		return sds{}, fmt.Errorf("secret %s: %w", c.GetName(), err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return sds{}, fmt.Errorf("secret %s: %w", c.GetName(), err)
	}
	resp := &discoveryv3.DiscoveryResponse{}
	if err := protojson.Unmarshal(b, resp); err != nil {
		return sds{}, fmt.Errorf("secret %s: %s: %w", c.GetName(), file, err)
	}
	s := &tlsv3.Secret{}
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].UnmarshalTo(s) != nil {
		return sds{}, fmt.Errorf("secret %s: %s must hold exactly one Secret", c.GetName(), file)
	}
	if s.GetName() != c.GetName() {
		return sds{}, fmt.Errorf("secret %s: %s holds secret %q instead", c.GetName(), file, s.GetName())
	}
	return sds{file: file, secret: s}, nil
}

// filename returns where the file a secret's field names is on the host.
func filename(rt Runtime, s sds, field, p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("%s: secret %s: %s names no filename", s.file, s.secret.GetName(), field)
	}
	host, err := rt.Path(p)
	if err != nil {
		return "", fmt.Errorf("%s: secret %s: %s: %w", s.file, s.secret.GetName(), field, err)
	}
	return host, nil
}

// verifyController checks the controller's chain against the trust
// bundle in caFile, read now, and that it carries one of ids (any, if
// none are named).
func verifyController(chain []*x509.Certificate, caFile string, ids []string) error {
	if len(chain) == 0 {
		return errors.New("the controller presented no certificate")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("trust bundle: %w", err)
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if !opts.Roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("trust bundle %s holds no certificate", caFile)
	}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := chain[0].Verify(opts); err != nil {
		return fmt.Errorf("the controller's certificate: %w", err)
	}
	if len(ids) == 0 {
		return nil
	}
	for _, u := range chain[0].URIs {
		if slices.Contains(ids, u.String()) {
			return nil
		}
	}
	return fmt.Errorf("the controller's certificate names %v, not %v", chain[0].URIs, ids)
}
