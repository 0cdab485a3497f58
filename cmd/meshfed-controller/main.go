// Command meshfed-controller is meshfed's control plane for one cluster: it
// reads the cluster's services and SMI policy (controller/kube), serves xDS
// to proxies and proxyless gRPC workloads (controller/xds/server), issues
// workload certificates (trust/issuer) under the cluster's intermediate CA
// (trust/ca), and serves metrics and /readyz.
//
// This package is wiring only: flags become config structs, and Run starts
// the parts and stops them when the process gets SIGTERM or SIGINT.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
)

func main() {
	cfg := defaultConfig()
	fs := pflag.NewFlagSet("meshfed-controller", pflag.ContinueOnError)
	cfg.register(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == pflag.ErrHelp {
			return
		}
		os.Exit(2)
	}
	level := slog.LevelInfo
	if err := level.UnmarshalText([]byte(strings.ToUpper(cfg.LogLevel))); err != nil {
		fmt.Fprintf(os.Stderr, "meshfed-controller: --log-level %q: %v\n", cfg.LogLevel, err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("meshfed-controller stopped", "err", err)
		os.Exit(1)
	}
	log.Info("meshfed-controller stopped")
}
