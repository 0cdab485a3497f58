package main

import (
	"errors"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/controller/daemon"
	"github.com/meshfed/meshfed/demo/bookapp"
	"github.com/meshfed/meshfed/localmesh/gateway"
)

// The roles a meshfed binary plays in `meshfed demo`, so that a released
// binary runs the demo with nothing else: the controller
// (meshfed-controller's flags), the bookstore workload, and the local
// clusters' stand-in for the gateway's Envoy with the link that joins two
// of their networks. Hidden: users run meshfed-controller in their
// clusters, the bookapp image and Envoy.

func newControllerCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "controller [meshfed-controller flags]",
		Short:              "Run meshfed-controller (the demo's local clusters use it)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			err := daemon.Main(ctx, "meshfed controller", args, cmd.ErrOrStderr())
			if daemon.IsHelp(err) {
				return nil
			}
			return err
		},
	}
}

func newBookappCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "bookapp [bookapp flags]",
		Short:              "Run the bookstore demo workload (the demo's local clusters use it)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			err := bookapp.Main(args)
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		},
	}
}

func newGatewayStandInCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "gateway-standin --link-dir DIR -c ENVOY_BOOTSTRAP [--log-level LEVEL]",
		Short:              "Run the local clusters' stand-in for the gateway's Envoy",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return gateway.Main(ctx, args, os.Stderr)
		},
	}
}

func newGatewayLinkCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "gateway-link --listen HOST:PORT --to GLOB",
		Short:              "Join one local network to another's gateway",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return gateway.LinkMain(ctx, args)
		},
	}
}
