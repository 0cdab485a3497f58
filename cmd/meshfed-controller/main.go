// Command meshfed-controller is meshfed's control plane for one cluster
// (controller/daemon). This package is wiring only: daemon.Main parses the
// flags and runs the controller until SIGTERM or SIGINT.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshfed/meshfed/controller/daemon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := daemon.Main(ctx, "meshfed-controller", os.Args[1:], os.Stderr); err != nil {
		if daemon.IsHelp(err) {
			return
		}
		fmt.Fprintln(os.Stderr, "meshfed-controller:", err)
		os.Exit(1)
	}
}
