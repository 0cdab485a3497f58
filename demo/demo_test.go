package demo_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/localmesh/workloads"
)

// `meshfed demo --check` as a user runs it from a released binary: meshfed
// built on its own, run from an empty directory outside any checkout. The
// binary plays the controller and the bookstore workloads and carries the
// manifests and the tools modules; it finds the sandbox's binaries in the
// cache (or builds them from its copy of the tools modules). The whole
// demo runs — two federated clusters of real parts, real controller
// processes, the bookstore as real mTLS gRPC processes — and every
// expectation of the scenario is checked.
func TestDemoCheckFromAReleasedBinary(t *testing.T) {
	if err := workloads.CanCreateUserNetworks(); err != nil {
		t.Skipf("the demo needs unprivileged user and network namespaces: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "meshfed")
	build := exec.Command("go", "build", "-o", bin, "./cmd/meshfed")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/meshfed: %v\n%s", err, out)
	}
	empty := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "demo", "--check", "--dir", filepath.Join(t.TempDir(), "demo"))
	cmd.Dir = empty
	cmd.Env = withoutToolsDir(os.Environ())
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("meshfed demo --check output:\n%s", out.String())
	if err != nil {
		t.Fatalf("meshfed demo --check: %v", err)
	}
	if strings.Contains(out.String(), "building meshfed") {
		t.Error("the released binary built meshfed from a checkout instead of playing the roles itself")
	}
}

// withoutToolsDir drops MESHFED_TOOLS_DIR, so the binary cannot be pointed
// at a checkout.
func withoutToolsDir(env []string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, "MESHFED_TOOLS_DIR=") {
			out = append(out, e)
		}
	}
	return out
}
