package main

import (
	"errors"
	"flag"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/controller/daemon"
	"github.com/meshfed/meshfed/demo/bookapp"
)

// The roles a meshfed binary plays in `meshfed demo`, so that a released
// binary runs the demo with nothing else: the controller
// (meshfed-controller's flags) and the bookstore workload. Hidden: users
// run meshfed-controller in their clusters and the bookapp image.

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
