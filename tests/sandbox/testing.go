package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// StartForTest starts the named clusters for a test and stops them when the
// test ends. The control planes' output goes to a log file whose tail is
// printed if the test fails; a first build of the binaries reports its
// progress on standard error. It fails the test if the clusters cannot start.
func StartForTest(t testing.TB, clusters ...string) *Sandbox {
	t.Helper()
	return StartForTestWith(t, Config{Clusters: clusters})
}

// StartForTestWith is StartForTest with a full Config. Dir and Log are set
// by the test if empty.
func StartForTestWith(t testing.TB, cfg Config) *Sandbox {
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
	sb, err := Start(context.Background(), cfg)
	if err != nil {
		logFile.Close()
		t.Fatalf("sandbox: %v\n%s", err, tail(logPath, 30))
	}
	t.Cleanup(func() {
		if err := sb.Stop(); err != nil {
			t.Errorf("sandbox: stop: %v", err)
		}
		logFile.Close()
		if t.Failed() {
			t.Logf("sandbox log %s (last lines):\n%s", logPath, tail(logPath, 40))
		}
	})
	return sb
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
