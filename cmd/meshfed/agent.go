package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/trust/agent"
)

// newAgentCommand is `meshfed agent`: the workload-side certificate agent for
// proxyless gRPC (see trust/agent). Register it in newRootCommand.
func newAgentCommand() *cobra.Command {
	cfg := agent.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Keep this workload's SPIFFE certificate, key and trust bundle on disk for grpc-go's file_watcher provider",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
			return agent.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.IssuerAddress, "issuer-address", cfg.IssuerAddress, "host:port of meshfed-controller's certificate issuer")
	f.StringVar(&cfg.IssuerID, "issuer-id", cfg.IssuerID, "SPIFFE ID the issuer must present (empty: any ID of the trust domain)")
	f.StringVar(&cfg.TrustDomain, "trust-domain", cfg.TrustDomain, "SPIFFE trust domain of the mesh")
	f.StringVar(&cfg.TokenFile, "token-file", cfg.TokenFile, "projected ServiceAccount token with audience \"meshfed\", re-read at every renewal")
	f.StringVar(&cfg.BundleFile, "bundle-file", cfg.BundleFile, "trust bundle (PEM) used to verify the issuer, e.g. the mounted meshfed-ca-bundle ConfigMap")
	f.StringVar(&cfg.OutputDir, "output-dir", cfg.OutputDir, "directory for certificate.pem, private_key.pem and ca_certificate.pem")
	f.Float64Var(&cfg.RenewFraction, "renew-fraction", cfg.RenewFraction, "renew after this fraction of the certificate's lifetime")
	f.DurationVar(&cfg.MinRetry, "min-retry", cfg.MinRetry, "first retry delay after a failed request")
	f.DurationVar(&cfg.MaxRetry, "max-retry", cfg.MaxRetry, "longest retry delay")
	return cmd
}
