package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshfed/meshfed/trust/ca"
)

// File names in OutputDir, as grpc-go's file_watcher provider is pointed at
// them (see ProviderConfig).
const (
	CertificateFile   = "certificate.pem"
	PrivateKeyFile    = "private_key.pem"
	CACertificateFile = "ca_certificate.pem"
	dataLink          = "..data"
)

// WriteFiles writes svid (certificate chain and key) and bundle into dir as a
// set, atomically: a new hidden version directory, then one rename of the
// "..data" symlink. The previous version is removed afterwards.
func WriteFiles(dir string, svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return fmt.Errorf("agent: encode SVID %s: %w", svid.ID, err)
	}
	bundlePEM := ca.EncodeCertificatesPEM(bundle.X509Authorities())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("agent: output dir %s: %w", dir, err)
	}
	version, err := os.MkdirTemp(dir, "..version-")
	if err != nil {
		return fmt.Errorf("agent: output dir %s: %w", dir, err)
	}
	if err := os.Chmod(version, 0o755); err != nil {
		return fmt.Errorf("agent: output dir %s: %w", dir, err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CACertificateFile, bundlePEM, 0o644},
		{PrivateKeyFile, keyPEM, 0o600},
		{CertificateFile, certPEM, 0o644},
	}
	for _, f := range files {
		if err := writeSynced(filepath.Join(version, f.name), f.data, f.mode); err != nil {
			_ = os.RemoveAll(version)
			return fmt.Errorf("agent: write %s: %w", f.name, err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, dataLink))
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(version), tmpLink); err != nil {
		return fmt.Errorf("agent: link %s: %w", version, err)
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, dataLink)); err != nil {
		return fmt.Errorf("agent: swap %s: %w", dataLink, err)
	}
	for _, f := range files {
		if err := ensureLink(dir, f.name); err != nil {
			return err
		}
	}
	if old != "" && old != filepath.Base(version) && strings.HasPrefix(old, "..version-") {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

func writeSynced(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ensureLink makes dir/name a symlink to ..data/name, replacing whatever was
// there (also atomically, by rename).
func ensureLink(dir, name string) error {
	path := filepath.Join(dir, name)
	want := filepath.Join(dataLink, name)
	if cur, err := os.Readlink(path); err == nil && cur == want {
		return nil
	}
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(want, tmp); err != nil {
		return fmt.Errorf("agent: link %s: %w", name, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("agent: link %s: %w", name, err)
	}
	return nil
}

// ProviderConfig returns the "certificate_providers" entry of a gRPC xDS
// bootstrap file that points grpc-go's file_watcher provider at dir:
//
//	"certificate_providers": {
//	  "meshfed": {
//	    "plugin_name": "file_watcher",
//	    "config": {
//	      "certificate_file":    "<dir>/certificate.pem",
//	      "private_key_file":    "<dir>/private_key.pem",
//	      "ca_certificate_file": "<dir>/ca_certificate.pem",
//	      "refresh_interval":    "10s"
//	    }
//	  }
//	}
//
// The xDS server's clusters and listeners then name instance "meshfed".
func ProviderConfig(dir, refreshInterval string) json.RawMessage {
	cfg := map[string]any{
		"plugin_name": "file_watcher",
		"config": map[string]string{
			"certificate_file":    filepath.Join(dir, CertificateFile),
			"private_key_file":    filepath.Join(dir, PrivateKeyFile),
			"ca_certificate_file": filepath.Join(dir, CACertificateFile),
			"refresh_interval":    refreshInterval,
		},
	}
	b, _ := json.Marshal(cfg)
	return b
}

// Ready says whether dir holds an SVID and bundle (as WriteFiles writes
// them) and every file in also exists: what a workload needs before it
// starts. An injected agent's startup probe runs it.
func Ready(dir string, also ...string) error {
	for _, f := range append([]string{filepath.Join(dir, CertificateFile), filepath.Join(dir, PrivateKeyFile), filepath.Join(dir, CACertificateFile)}, also...) {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("agent: not ready: %w", err)
		}
	}
	return nil
}
