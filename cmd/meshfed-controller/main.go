// Command meshfed-controller is meshfed's control plane for one cluster
// (controller/daemon). This package is wiring only: flags become a
// daemon.Config, and daemon.Run runs until SIGTERM or SIGINT.
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

	"github.com/meshfed/meshfed/controller/daemon"
)

func main() {
	cfg := daemon.DefaultConfig()
	fs := pflag.NewFlagSet("meshfed-controller", pflag.ContinueOnError)
	cfg.RegisterFlags(fs)
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
	if err := daemon.Run(ctx, cfg, log); err != nil {
		log.Error("meshfed-controller stopped", "err", err)
		os.Exit(1)
	}
	log.Info("meshfed-controller stopped")
}
