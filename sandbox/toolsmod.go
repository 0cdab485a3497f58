package sandbox

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The tools modules (tools/kube, tools/etcd) pin the Kubernetes and etcd
// versions the local clusters run. A meshfed binary carries a copy
// (toolsmod/, each file with a .txt suffix so that Go sees neither a module
// nor a package there), so that it builds them with no checkout; a test
// keeps the copy equal to tools/ (TestEmbeddedToolsModulesMatchTools).

//go:embed toolsmod
var embeddedTools embed.FS

// toolsFiles are the files of the tools modules, relative to tools/.
var toolsFiles = []string{"kube/go.mod", "kube/go.sum", "kube/tools.go", "etcd/go.mod", "etcd/go.sum", "etcd/main.go"}

// writeEmbeddedTools writes the embedded tools modules under dir (as
// dir/kube, dir/etcd) unless they are there already, and returns dir.
func writeEmbeddedTools(dir string) (string, error) {
	for _, f := range toolsFiles {
		b, err := fs.ReadFile(embeddedTools, "toolsmod/"+f+".txt")
		if err != nil {
			return "", fmt.Errorf("sandbox: embedded tools module: %w", err)
		}
		path := filepath.Join(dir, filepath.FromSlash(f))
		if cur, err := os.ReadFile(path); err == nil && string(cur) == string(b) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}
