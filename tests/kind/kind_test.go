// Package kind runs meshfed end to end on real clusters: scripts/kind-e2e.sh
// builds meshfed's images, creates two kind clusters, installs and
// federates meshfed, applies the bookstore demo with Envoy sidecars and
// checks that the Pods came out injected and that bookbuyer's calls
// succeed. It runs only where docker, kind, kubectl and go are on PATH (and
// docker reaches a daemon), and is skipped elsewhere with a message naming
// what is missing; it takes about ten minutes when it runs.
package kind

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// skippedMark is what the script prints when it cannot run here.
const skippedMark = "kind-e2e: skipped"

func TestBookstoreThroughEnvoyOnKindClusters(t *testing.T) {
	var missing []string
	for _, tool := range []string{"docker", "kind", "kubectl", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		t.Skipf("needs %s on PATH: scripts/kind-e2e.sh runs meshfed on real kind clusters", strings.Join(missing, ", "))
	}
	if testing.Short() {
		t.Skip("-short: scripts/kind-e2e.sh creates two kind clusters (about ten minutes)")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "kind-e2e.sh"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, script)
	// On timeout, SIGTERM lets the script's trap delete the clusters once
	// its current command ends; after WaitDelay it is killed, and
	// `kind delete cluster --name meshfed-e2e-east` (and -west) is left to do.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Minute
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = io.MultiWriter(out, testWriter{t}), io.MultiWriter(out, testWriter{t})
	err = cmd.Run()
	if strings.Contains(out.String(), skippedMark) {
		t.Skip(lastLine(out.String(), skippedMark))
	}
	if err != nil {
		t.Fatalf("scripts/kind-e2e.sh: %v", err)
	}
}

// testWriter passes the script's output to the test log as it comes.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// lockedBuffer is written by the script's stdout and stderr at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lastLine is the last line of s that contains mark.
func lastLine(s, mark string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], mark) {
			return lines[i]
		}
	}
	return mark
}
