package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
)

// testCA is a test-only certificate authority issuing SPIFFE SVIDs (until
// trust/ lands): real x509 certificates with URI SANs.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	serial  int64
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meshfed test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), serial: 1}
}

// issue returns PEM certificate and key for id (and 127.0.0.1 as IP SAN).
func (ca *testCA) issue(t *testing.T, id mesh.Identity) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(string(id))
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		URIs: []*url.URL{u}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// serverTLS is the xDS server's TLS config: its own SVID, client
// certificates required and verified against the root.
func (ca *testCA) serverTLS(t *testing.T, id mesh.Identity) *tls.Config {
	c, k := ca.issue(t, id)
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

// workloadBootstrap writes id's SVID files (as the meshfed agent would) and
// returns a grpc-go xDS bootstrap using them for the xDS channel and for
// the data plane's certificate providers.
func (ca *testCA) workloadBootstrap(t *testing.T, id mesh.Identity, xdsAddr string) []byte {
	t.Helper()
	dir := t.TempDir()
	c, k := ca.issue(t, id)
	files := map[string][]byte{"cert.pem": c, "key.pem": k, "ca.pem": ca.certPEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pemCfg := map[string]any{
		"certificate_file": filepath.Join(dir, "cert.pem"), "private_key_file": filepath.Join(dir, "key.pem"),
		"ca_certificate_file": filepath.Join(dir, "ca.pem"), "refresh_interval": "600s",
	}
	b, err := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      xdsAddr,
			"channel_creds":   []any{map[string]any{"type": "tls", "config": pemCfg}},
			"server_features": []string{"xds_v3"},
		}},
		// The node ID is a claim the server ignores; identity comes from the certificate.
		"node": map[string]any{"id": "claims-to-be-someone-else", "locality": map[string]any{"zone": "z1"}},
		"certificate_providers": map[string]any{
			generate.ProxylessIdentityProvider: map[string]any{"plugin_name": "file_watcher", "config": pemCfg},
			generate.ProxylessRootProvider:     map[string]any{"plugin_name": "file_watcher", "config": pemCfg},
		},
		"server_listener_resource_name_template": generate.ServerListenerNamePrefix + "%s",
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
