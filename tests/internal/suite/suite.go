// Package suite starts the federations of local clusters the end-to-end
// suites (tests/federated, tests/networks) run on, the same way for each.
package suite

import (
	"context"
	"os"
	"testing"

	"github.com/meshfed/meshfed/localmesh"
	"github.com/meshfed/meshfed/localmesh/workloads"
)

// Start starts a federation for t with cfg, whose Dir and Logf it sets:
// the logs stay in MESHFED_TEST_DIR when set (one suite at a time), else in
// a temporary directory. It skips t, saying why, where this machine cannot
// make user and network namespaces; stops everything when t ends; and on
// failure says where the logs are.
func Start(ctx context.Context, t *testing.T, cfg localmesh.Config) *localmesh.Harness {
	t.Helper()
	if err := workloads.CanCreateUserNetworks(); err != nil {
		t.Skipf("the suite needs unprivileged user and network namespaces: %v", err)
	}
	cfg.Dir = os.Getenv("MESHFED_TEST_DIR")
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.Logf = t.Logf
	h, err := localmesh.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Stop(); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs: %s and the controllers' logs beside it (set MESHFED_TEST_DIR to keep them)", h.LogPath())
		}
	})
	return h
}
