package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/controller/bootstrap"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/trust/agent"
)

// newAgentCommand wires `meshfed agent` to trust/agent: it keeps a
// proxyless gRPC workload's SVID files fresh and, when asked, writes the
// gRPC xDS bootstrap that points the workload at the controller.
func newAgentCommand() *cobra.Command {
	cfg := agent.DefaultConfig()
	var token, bootstrapPath, xdsAddress, nodeID, zone string
	var once, sni bool
	var envoySDSDir string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Keep a proxyless gRPC workload's SPIFFE certificate files fresh (and write its xDS bootstrap)",
		Long: `meshfed agent asks the controller's issuer for an X.509-SVID with the
workload's ServiceAccount token (audience "meshfed"), writes certificate.pem,
private_key.pem and ca_certificate.pem into --out-dir where grpc-go's
file_watcher certificate provider reads them, and renews them at half life.
The token goes only to an issuer presenting the controller's SPIFFE ID
(--issuer-id, by default derived from --mesh-namespace).

With --bootstrap it also writes the gRPC xDS bootstrap file (point
GRPC_XDS_BOOTSTRAP at it) for the controller at --xds-address.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if token != "" {
				cfg.TokenSource = func(context.Context) (string, error) { return token, nil }
			}
			cfg.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			if err := cfg.Validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if bootstrapPath != "" {
				if err := os.MkdirAll(cfg.OutputDir, 0o700); err != nil {
					return err
				}
				if err := bootstrap.Write(bootstrapPath, bootstrap.Config{XDSAddress: xdsAddress, CertDir: cfg.OutputDir, NodeID: nodeID, Zone: zone, SNI: sni}); err != nil {
					return err
				}
			}
			if envoySDSDir != "" {
				if err := writeEnvoySDS(envoySDSDir, cfg); err != nil {
					return err
				}
			}
			if once {
				svid, bundle, err := agent.FetchOnce(ctx, cfg)
				if err != nil {
					return err
				}
				if err := agent.WriteFiles(cfg.OutputDir, svid, bundle); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s valid until %s\n", svid.ID, svid.Certificates[0].NotAfter.Format("2006-01-02T15:04:05Z07:00"))
				return nil
			}
			return agent.Run(ctx, cfg)
		},
	}
	cmd.AddCommand(newAgentReadyCommand())
	f := cmd.Flags()
	f.StringVar(&cfg.IssuerAddress, "issuer-address", cfg.IssuerAddress, "the controller's issuer, host:port")
	f.StringVar(&cfg.IssuerID, "issuer-id", cfg.IssuerID, "SPIFFE ID the issuer must present (default: the controller of --mesh-namespace, spiffe://<trust-domain>/ns/<mesh-namespace>/sa/meshfed-controller)")
	f.StringVar(&cfg.MeshNamespace, "mesh-namespace", cfg.MeshNamespace, "the control plane's namespace, from which the default --issuer-id is derived")
	f.StringVar(&cfg.TrustDomain, "trust-domain", cfg.TrustDomain, "the mesh's SPIFFE trust domain")
	f.StringVar(&cfg.TokenFile, "token-file", cfg.TokenFile, "projected ServiceAccount token with audience \"meshfed\" (re-read before each request)")
	f.StringVar(&token, "token", "", "the token itself instead of --token-file (tests; visible in the process list)")
	f.StringVar(&cfg.BundleFile, "bundle-file", cfg.BundleFile, "trust bundle (PEM) to verify the issuer with (the meshfed-ca-bundle ConfigMap)")
	f.StringVar(&cfg.OutputDir, "out-dir", cfg.OutputDir, "directory for certificate.pem, private_key.pem and ca_certificate.pem")
	f.Float64Var(&cfg.RenewFraction, "renew-fraction", cfg.RenewFraction, "renew after this fraction of the certificate's lifetime")
	f.DurationVar(&cfg.MinRetry, "min-retry", cfg.MinRetry, "first retry delay after a failed request")
	f.DurationVar(&cfg.MaxRetry, "max-retry", cfg.MaxRetry, "longest retry delay")
	f.StringVar(&bootstrapPath, "bootstrap", "", "also write a gRPC xDS bootstrap file here")
	f.StringVar(&xdsAddress, "xds-address", "meshfed-controller.meshfed-system.svc:15128", "the controller's xDS address for --bootstrap")
	f.StringVar(&nodeID, "node-id", "", "node ID for --bootstrap (informational)")
	f.StringVar(&zone, "zone", "", "locality zone for --bootstrap")
	f.StringVar(&envoySDSDir, "envoy-sds-dir", "", "also write, into this directory, the two file-based SDS secrets an Envoy sidecar's bootstrap reads its SVID and trust bundle from (the injected Envoy data plane)")
	f.BoolVar(&sni, "xds-sni", false, "declare in --bootstrap's node metadata that the workload runs with GRPC_EXPERIMENTAL_XDS_SNI=true; only such workloads get endpoints reached through east-west gateways")
	f.BoolVar(&once, "once", false, "fetch one certificate, write it and exit")
	return cmd
}

func newAgentReadyCommand() *cobra.Command {
	var dir, boot string
	cmd := &cobra.Command{
		Use:   "ready",
		Short: "Exit 0 once the agent has written the SVID (and the bootstrap): an injected agent's startup probe",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var also []string
			if boot != "" {
				also = append(also, boot)
			}
			return agent.Ready(dir, also...)
		},
	}
	cmd.Flags().StringVar(&dir, "out-dir", agent.DefaultConfig().OutputDir, "the agent's --out-dir")
	cmd.Flags().StringVar(&boot, "bootstrap", "", "the agent's --bootstrap, if it writes one")
	return cmd
}

// writeEnvoySDS writes the SDS files of an Envoy sidecar's bootstrap.
func writeEnvoySDS(dir string, cfg agent.Config) error {
	id, err := cfg.IssuerIdentity()
	if err != nil {
		return err
	}
	return bootstrap.WriteEnvoySDS(dir, cfg.OutputDir, mesh.Identity(id.String()))
}
