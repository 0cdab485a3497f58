package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
)

// Main is meshfed-controller's command line: it parses args (without the
// program name) into a Config, logs to stderr at --log-level and runs the
// controller until ctx ends. It returns pflag.ErrHelp after --help.
// cmd/meshfed-controller and `meshfed controller` both call it.
func Main(ctx context.Context, name string, args []string, stderr io.Writer) error {
	cfg := DefaultConfig()
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelInfo
	if err := level.UnmarshalText([]byte(strings.ToUpper(cfg.LogLevel))); err != nil {
		return fmt.Errorf("--log-level %q: %w", cfg.LogLevel, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := Run(ctx, cfg, log); err != nil {
		log.Error(name+" stopped", "err", err)
		return err
	}
	log.Info(name + " stopped")
	return nil
}

// IsHelp reports whether err is Main's answer to --help.
func IsHelp(err error) bool { return errors.Is(err, pflag.ErrHelp) }
