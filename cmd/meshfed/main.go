// Command meshfed is meshfed's command line: it installs the control plane
// into clusters, adds namespaces to a mesh, federates clusters, runs local
// sandbox clusters and the demo. It only wires flags to meshfed's packages.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
}
