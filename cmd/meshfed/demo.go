package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/demo"
)

func newDemoCommand() *cobra.Command {
	var cfg demo.Config
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run two federated local clusters with the bookstore across them, and show live who reaches what",
		Long: `demo starts two local clusters (east and west: real etcd, kube-apiserver and
kube-controller-manager), runs a real meshfed-controller process for each,
federates them, applies the demo's manifests (docs/example/manifests, carried
in the binary: bookbuyer, bookthief and
bookstore-v1 in east; bookstore-v2 in west, exported; TrafficTargets; a 50/50
TrafficSplit in east) and runs every demo Pod as a local process with mTLS
certificates from meshfed agent. Each cluster's pods are on a network of
their own (network namespaces made without root): east reaches west only
through west's east-west gateway, played by a stand-in for Envoy
(--flat-network puts both on one network, with no gateways). It then shows, live, each client's RPCs per second to each
backend and cluster and its denied RPCs, and the commands to change them.
Ctrl-C stops everything.

With --check it runs the same scenario unattended, checks the outcomes and
exits non-zero on any miss.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.OutOrStdout()
			// This binary plays the controller and the workloads too.
			self, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Self = self
			return demo.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&cfg.Check, "check", false, "run the scenario unattended, check its outcomes, exit non-zero on any miss")
	f.StringVar(&cfg.Dir, "dir", "", "where the demo keeps its clusters, logs and sockets (default: ~/.cache/meshfed/demo)")
	f.BoolVar(&cfg.FlatNetwork, "flat-network", false, "put both clusters' pods on one network, with no east-west gateways")
	f.DurationVar(&cfg.Interval, "interval", 50*time.Millisecond, "pause between a client's RPCs")
	return cmd
}
