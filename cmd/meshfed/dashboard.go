package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/controller/debug"
	"github.com/meshfed/meshfed/deploy"
)

func newDashboardCommand(kf *kubeFlags) *cobra.Command {
	var meshNS string
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Serve meshfed's read-only web view of this cluster on a local port and print its URL",
		Long: `dashboard port-forwards, through the API server with your kubeconfig, to
meshfed-controller's debug API and prints the URL of its web view: the
federation's clusters and their health, the services here and those
imported, who may call whom, and the traffic split weights in force,
refreshed every second. It runs until interrupted (Ctrl-C).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg, err := kf.restConfig()
			if err != nil {
				return err
			}
			c, err := debug.Dial(ctx, cfg, meshNS)
			if err != nil {
				return err
			}
			defer c.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "meshfed web view: %s (from %s/%s; Ctrl-C to stop)\n", c.URL(), meshNS, c.Pod)
			<-ctx.Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&meshNS, "mesh-namespace", deploy.DefaultNamespace, "the control plane's namespace")
	return cmd
}
