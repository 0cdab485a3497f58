// Package sandboxtest starts local clusters (package sandbox) for a test
// and stops them when it ends; it is the only part of the local clusters
// that links the testing package.
package sandboxtest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshfed/meshfed/sandbox"
)

// Start starts the named clusters for a test and stops them when the
// test ends. The control planes' output goes to a log file whose tail is
// printed if the test fails; a first build of the binaries reports its
// progress on standard error. It fails the test if the clusters cannot start.
func Start(t testing.TB, clusters ...string) *sandbox.Sandbox {
	t.Helper()
	return StartWith(t, sandbox.Config{Clusters: clusters})
}

// StartWith is Start with a full Config. Dir and Log are set
// by the test if empty.
func StartWith(t testing.TB, cfg sandbox.Config) *sandbox.Sandbox {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	logPath := filepath.Join(cfg.Dir, "sandbox.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	if cfg.Log == nil {
		cfg.Log = logFile
	}
	if cfg.Assets.Progress == nil {
		cfg.Assets.Progress = os.Stderr
	}
	sb, err := sandbox.Start(context.Background(), cfg)
	if err != nil {
		logFile.Close()
		t.Fatalf("sandbox: %v\n%s", err, sandbox.LogTail(logPath, 30))
	}
	t.Cleanup(func() {
		if err := sb.Stop(); err != nil {
			t.Errorf("sandbox: stop: %v", err)
		}
		logFile.Close()
		if t.Failed() {
			t.Logf("sandbox log %s (last lines):\n%s", logPath, sandbox.LogTail(logPath, 40))
		}
	})
	return sb
}
