package debug_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshfed/meshfed/controller/debug"
	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/xds/server"
	"github.com/meshfed/meshfed/mesh"
)

type source struct{ secret *tlsv3.Secret }

func (source) Proxies() []server.ProxyStatus { return nil }

func (source) State() (mesh.State, bool) { return mesh.State{}, false }

func (s source) Resources(key string) (map[string]map[string]types.Resource, error) {
	return map[string]map[string]types.Resource{resourcev3.SecretType: {s.secret.GetName(): s.secret}}, nil
}

type noFederation struct{}

func (noFederation) Load() (federate.Status, bool) { return federate.Status{}, false }

// The debug API shows a secret's name, SPIFFE ID and expiry, never its key.
func TestSecretsAreShownAsMetadataOnly(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := url.Parse("spiffe://meshfed.local/ns/bookstore/sa/bookstore")
	notAfter := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{id}, NotBefore: time.Now(), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	secret := &tlsv3.Secret{Name: "meshfed-identity", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: keyPEM}},
	}}}
	srv := httptest.NewServer(debug.Handler("east", source{secret}, noFederation{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + debug.PathConfig + "?key=" + url.QueryEscape("spiffe://meshfed.local/ns/bookstore/sa/bookstore|sidecar"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got debug.Config
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(got)
	if strings.Contains(string(raw), "PRIVATE") || strings.Contains(string(raw), string(keyDER[:16])) || len(got.Resources["sds"]) != 1 {
		t.Fatalf("the debug API shows more than metadata: %s", raw)
	}
	var info debug.SecretInfo
	if err := json.Unmarshal(got.Resources["sds"][0], &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != "meshfed-identity" || info.SPIFFEID != id.String() || !info.NotAfter.Equal(notAfter) {
		t.Errorf("secret shown as %+v", info)
	}

	// The federation's view says when federation is off.
	resp, err = http.Get(srv.URL + debug.PathFederation)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var fed debug.Federation
	if err := json.NewDecoder(resp.Body).Decode(&fed); err != nil || fed.Federated || fed.Cluster != "east" {
		t.Errorf("federation view with federation off: %+v, %v", fed, err)
	}
}

func TestFindProxyPrefersThePodsOwnStream(t *testing.T) {
	ps := []server.ProxyStatus{
		{Key: "a", Identity: "spiffe://td/ns/bookbuyer/sa/bookbuyer", NodeID: "bookbuyer/other"},
		{Key: "b", Identity: "spiffe://td/ns/bookbuyer/sa/bookbuyer", NodeID: "bookbuyer/mine"},
		{Key: "c", Identity: "spiffe://td/ns/bookthief/sa/bookbuyer", NodeID: "bookthief/mine"},
	}
	if p, err := debug.FindProxy(ps, "bookbuyer", "mine", "bookbuyer"); err != nil || p.Key != "b" {
		t.Errorf("the Pod's own stream: %v, %v", p.Key, err)
	}
	if p, err := debug.FindProxy(ps, "bookbuyer", "gone", "bookbuyer"); err != nil || p.Key != "a" {
		t.Errorf("a stream of the same identity: %v, %v", p.Key, err)
	}
	if _, err := debug.FindProxy(ps, "bookstore", "x", "bookstore"); err == nil || !strings.Contains(err.Error(), "bookstore/bookstore") {
		t.Errorf("no proxy of the identity: want an error naming it, got %v", err)
	}
	for _, c := range []struct {
		t    server.TypeStatus
		want string
	}{
		{server.TypeStatus{Sent: "3", Acked: "3"}, debug.Synced},
		{server.TypeStatus{Sent: "4", Acked: "3"}, debug.Pending},
		{server.TypeStatus{Sent: "4", Acked: "3", NACK: &server.NACK{Version: "4"}}, debug.NACKed},
		{server.TypeStatus{}, debug.NotSent},
	} {
		if got := debug.SyncState(c.t); got != c.want {
			t.Errorf("SyncState(%+v) = %s, want %s", c.t, got, c.want)
		}
	}
}

// The controller's Go profiles are served with the rest of the debug API.
func TestProfilesAreServed(t *testing.T) {
	srv := httptest.NewServer(debug.Handler("east", source{}, noFederation{}))
	defer srv.Close()
	for path, want := range map[string]string{
		debug.PathProfiles:                       "goroutine",
		debug.PathProfiles + "goroutine?debug=1": "goroutine profile: total",
		debug.PathProfiles + "profile?seconds=1": "\x1f\x8b", // a gzipped profile
		debug.PathProfiles + "heap?gc=1":         "\x1f\x8b",
		debug.PathProfiles + "trace?seconds=0.1": "go ",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b := new(strings.Builder)
		_, err = io.Copy(b, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(b.String(), want) {
			t.Errorf("GET %s: %d, %v; want 200 with %q, got %.80q", path, resp.StatusCode, err, want, b.String())
		}
	}
}
