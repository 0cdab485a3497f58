package helm

import (
	"bytes"
	"os"
	"path/filepath"
)

// WriteTemplates writes Templates into chartDir/templates and removes the
// generated files it no longer makes; hand-written files stay.
func WriteTemplates(chartDir string) error {
	t, err := Templates()
	if err != nil {
		return err
	}
	dir := filepath.Join(chartDir, "templates")
	old, err := ReadGenerated(chartDir)
	if err != nil {
		return err
	}
	for name := range old {
		if _, ok := t[name]; !ok {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return err
			}
		}
	}
	for _, name := range Files(t) {
		if err := os.WriteFile(filepath.Join(dir, name), t[name], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ReadGenerated reads the generated templates in chartDir/templates (those
// that start with the generator's header).
func ReadGenerated(chartDir string) (map[string][]byte, error) {
	dir := filepath.Join(chartDir, "templates")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		if bytes.HasPrefix(b, []byte(header)) {
			out[e.Name()] = b
		}
	}
	return out, nil
}
