package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An API server that does not answer (a closed loopback port) fails the
// first check, named by the current context, with the command to look
// into it, and the command exits non-zero.
func TestCheckAgainstAnUnreachableClusterFailsNamingTheContext(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: lonely, context: {cluster: c, user: u}}]
current-context: lonely
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "check", "--kubeconfig", kc)
	if !errors.Is(err, errCheckFailed) {
		t.Fatalf("err %v, want errCheckFailed; output:\n%s", err, out)
	}
	if !strings.HasPrefix(out, "✘ [lonely] kubernetes-api: API server not reachable") ||
		!strings.Contains(out, "fix: check the kubeconfig and the cluster: `kubectl --context lonely cluster-info`") {
		t.Errorf("output:\n%s", out)
	}
}
