// Package bootstrap writes the gRPC xDS bootstrap a proxyless meshfed
// workload reads (GRPC_XDS_BOOTSTRAP): the controller's xDS address with
// "tls" channel credentials made of the workload's own SVID files (as
// `meshfed agent` writes them), and the file_watcher certificate providers
// the generated listeners and clusters name.
//
// It owns only the files' shape; it does no I/O besides writing them. It
// also writes the two SDS files an injected Envoy sidecar's bootstrap
// reads its own SVID from (WriteEnvoySDS).
package bootstrap

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/trust/agent"
)

// Config says what goes into a bootstrap.
type Config struct {
	// XDSAddress is the controller's xDS host:port, as the workload dials
	// it; the controller's serving certificate must name the host.
	XDSAddress string
	// CertDir is where `meshfed agent` keeps the workload's SVID files.
	CertDir string
	// NodeID is informational: the controller identifies a proxy by its
	// certificate, never by what its node claims.
	NodeID string
	// Zone is the workload's zone (locality).
	Zone string
	// RefreshInterval is how often grpc-go re-reads the files. Default
	// "10s": a new handshake must never present an SVID the agent has
	// already replaced and that may expire (the agent renews at half of
	// the lifetime, which can be as short as a minute), and servers end
	// connections often (MaxConnectionAge) behind gateways.
	RefreshInterval string
	// SNI declares, in the node's metadata, that the workload runs with
	// GRPC_EXPERIMENTAL_XDS_SNI=true and so sends the server names
	// east-west gateways route by; only such workloads are given endpoints
	// reached through a gateway.
	SNI bool
}

// JSON returns the bootstrap file's contents.
func JSON(c Config) ([]byte, error) {
	if c.XDSAddress == "" || c.CertDir == "" {
		return nil, errors.New("bootstrap: XDSAddress and CertDir are required")
	}
	if c.RefreshInterval == "" {
		c.RefreshInterval = "10s"
	}
	files := map[string]any{
		"certificate_file":    filepath.Join(c.CertDir, agent.CertificateFile),
		"private_key_file":    filepath.Join(c.CertDir, agent.PrivateKeyFile),
		"ca_certificate_file": filepath.Join(c.CertDir, agent.CACertificateFile),
		"refresh_interval":    c.RefreshInterval,
	}
	node := map[string]any{"id": c.NodeID}
	if c.Zone != "" {
		node["locality"] = map[string]any{"zone": c.Zone}
	}
	if c.SNI {
		node["metadata"] = map[string]any{generate.NodeMetadataSNI: true}
	}
	return json.MarshalIndent(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      c.XDSAddress,
			"channel_creds":   []any{map[string]any{"type": "tls", "config": files}},
			"server_features": []string{"xds_v3"},
		}},
		"node": node,
		"certificate_providers": map[string]any{
			generate.ProxylessIdentityProvider: map[string]any{"plugin_name": "file_watcher", "config": files},
			generate.ProxylessRootProvider:     map[string]any{"plugin_name": "file_watcher", "config": files},
		},
		"server_listener_resource_name_template": generate.ServerListenerNamePrefix + "%s",
	}, "", "  ")
}

// Write writes the bootstrap to path (mode 0644: it holds file names only).
func Write(path string, c Config) error {
	b, err := JSON(c)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// WriteEnvoySDS writes into dir the two file-based SDS secrets an Envoy
// sidecar's bootstrap (generate.SidecarBootstrap) reads: the SVID and the
// trust bundle meshfed agent keeps in certDir, the bundle accepting only
// controllerID from the controller.
func WriteEnvoySDS(dir, certDir string, controllerID mesh.Identity) error {
	files, err := generate.SDSFiles(generate.GatewayBootstrapOptions{CertDir: certDir, ControllerID: controllerID},
		agent.CertificateFile, agent.PrivateKeyFile, agent.CACertificateFile)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
