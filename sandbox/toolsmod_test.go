package sandbox

import (
	"os"
	"path/filepath"
	"testing"
)

// The tools modules a meshfed binary carries (toolsmod/) are tools/'s: a
// released binary builds the very versions a checkout does.
func TestEmbeddedToolsModulesMatchTools(t *testing.T) {
	for _, f := range toolsFiles {
		want, err := os.ReadFile(filepath.Join("..", "tools", filepath.FromSlash(f)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := embeddedTools.ReadFile("toolsmod/" + f + ".txt")
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("sandbox/toolsmod/%s.txt differs from tools/%s: copy it (cp tools/%s sandbox/toolsmod/%s.txt)", f, f, f, f)
		}
	}
	// Written out, the copy has the same key as tools/: the binaries a
	// checkout built are reused.
	dir, err := writeEmbeddedTools(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	got, err := toolsKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, err := toolsKey(filepath.Join("..", "tools"))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("key of the written copy %s, of tools/ %s", got, want)
	}
}
