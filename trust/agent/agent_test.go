package agent_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/agent"
	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/internal/kubetest"
	"github.com/meshfed/meshfed/trust/issuer"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("meshfed.local")
	issuerID = spiffeid.RequireFromString("spiffe://meshfed.local/ns/meshfed-system/sa/meshfed-controller")
)

func startIssuer(t *testing.T, kube kubernetes.Interface, svidTTL time.Duration) (addr string, bundlePEM []byte) {
	t.Helper()
	root, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("east", 12*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := inter.IssueSVID(issuerID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := issuer.DefaultConfig()
	cfg.SVIDTTL = svidTTL
	cfg.Namespaces = issuer.MeshNamespaces{Client: kube, MeshName: "meshfed"}
	srv, err := issuer.NewServer(cfg, ca.NewAuthority(inter), issuer.NewTokenReviewer(kube, trust.DefaultAudience), serving)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	return lis.Addr().String(), inter.BundlePEM()
}

func TestAgentObtainsAndRenewsExactlyItsOwnSVID(t *testing.T) {
	kube := kubetest.StartAPIServer(t)
	kubetest.CreateServiceAccount(t, kube, "bookbuyer", "bookbuyer")
	kubetest.MeshNamespace(t, kube, "bookbuyer")
	addr, bundlePEM := startIssuer(t, kube, time.Minute)

	dir := t.TempDir()
	bundleFile := filepath.Join(dir, "bundle", "ca.crt")
	tokenFile := filepath.Join(dir, "token", "token")
	for _, d := range []string{filepath.Dir(bundleFile), filepath.Dir(tokenFile)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(bundleFile, bundlePEM, 0o644); err != nil {
		t.Fatal(err)
	}
	// The kubelet would project and rotate this file; the test writes a
	// fresh token before each request is possible, and counts reads below.
	writeToken := func() {
		tok := kubetest.MustToken(t, kube, "bookbuyer", "bookbuyer", trust.DefaultAudience)
		if err := os.WriteFile(tokenFile+".tmp", []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tokenFile+".tmp", tokenFile); err != nil {
			t.Fatal(err)
		}
	}
	writeToken()

	out := filepath.Join(dir, "certs")
	var mu sync.Mutex
	var serials []string
	updated := make(chan struct{}, 10)
	cfg := agent.DefaultConfig()
	cfg.IssuerAddress = addr
	cfg.IssuerID = issuerID.String()
	cfg.TokenFile = tokenFile
	cfg.BundleFile = bundleFile
	cfg.OutputDir = out
	cfg.RenewFraction = 0.05 // renew after ~3 s of the 1 m SVID
	cfg.OnUpdate = func(s *x509svid.SVID, _ *x509bundle.Bundle) {
		mu.Lock()
		serials = append(serials, s.Certificates[0].SerialNumber.String())
		mu.Unlock()
		updated <- struct{}{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, cfg) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()

	waitUpdate := func() {
		t.Helper()
		select {
		case <-updated:
		case <-time.After(30 * time.Second):
			t.Fatal("agent wrote no SVID within 30s")
		}
	}
	waitUpdate()
	svid, err := x509svid.Load(filepath.Join(out, agent.CertificateFile), filepath.Join(out, agent.PrivateKeyFile))
	if err != nil {
		t.Fatalf("files are not a valid SVID: %v", err)
	}
	if got := svid.ID.String(); got != "spiffe://meshfed.local/ns/bookbuyer/sa/bookbuyer" {
		t.Fatalf("agent got %s", got)
	}
	bundle, err := x509bundle.Load(td, filepath.Join(out, agent.CACertificateFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		t.Fatalf("SVID on disk does not verify against bundle on disk: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(out, agent.PrivateKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode = %v (%v), want 0600", fi.Mode().Perm(), err)
	}

	// grpc-go's file_watcher provider reads the same files.
	prov, err := pemfile.NewProvider(pemfile.Options{
		CertFile: filepath.Join(out, agent.CertificateFile),
		KeyFile:  filepath.Join(out, agent.PrivateKeyFile),
		RootFile: filepath.Join(out, agent.CACertificateFile),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prov.Close()
	kctx, kcancel := context.WithTimeout(ctx, 10*time.Second)
	km, err := prov.KeyMaterial(kctx)
	kcancel()
	if err != nil {
		t.Fatalf("file_watcher: %v", err)
	}
	if len(km.Certs) != 1 || km.Roots == nil {
		t.Fatalf("file_watcher key material: %d certs, roots %v", len(km.Certs), km.Roots != nil)
	}

	// Renewal re-reads the token file: rotate it, then expect a new SVID.
	writeToken()
	waitUpdate()
	mu.Lock()
	defer mu.Unlock()
	if len(serials) < 2 || serials[0] == serials[1] {
		t.Fatalf("no renewal: serials %v", serials)
	}
	entries, _ := os.ReadDir(out)
	versions := 0
	for _, e := range entries {
		if e.IsDir() {
			versions++
		}
	}
	if versions != 1 {
		t.Fatalf("output dir holds %d versions, want 1 (old ones removed)", versions)
	}
}

func TestAgentWithAnotherServiceAccountsTokenGetsThatIdentityOnly(t *testing.T) {
	kube := kubetest.StartAPIServer(t)
	kubetest.CreateServiceAccount(t, kube, "bookstore", "bookstore")
	kubetest.MeshNamespace(t, kube, "bookstore")
	addr, bundlePEM := startIssuer(t, kube, time.Hour)
	dir := t.TempDir()
	bundleFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(bundleFile, bundlePEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := agent.DefaultConfig()
	cfg.IssuerAddress = addr
	cfg.BundleFile = bundleFile
	cfg.OutputDir = filepath.Join(dir, "certs")
	cfg.TokenSource = func(ctx context.Context) (string, error) {
		return kubetest.Token(ctx, kube, "bookstore", "bookstore", trust.DefaultAudience)
	}
	svid, _, err := agent.FetchOnce(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID.String() != "spiffe://meshfed.local/ns/bookstore/sa/bookstore" {
		t.Fatalf("got %s", svid.ID)
	}
	// A wrong-audience token is refused and nothing is written.
	cfg.TokenSource = func(ctx context.Context) (string, error) {
		return kubetest.Token(ctx, kube, "bookstore", "bookstore", "https://kubernetes.default.svc")
	}
	if _, _, err := agent.FetchOnce(context.Background(), cfg); err == nil {
		t.Fatal("wrong-audience token accepted")
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	cfg := agent.Config{TrustDomain: "Bad Domain", RenewFraction: 2}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	t.Log(err)
}

// tokenRecorder is the authenticator of an issuer run by an attacker: it
// keeps every token it is sent.
type tokenRecorder struct {
	mu     sync.Mutex
	tokens []string
}

func (r *tokenRecorder) Authenticate(_ context.Context, token string) (issuer.Caller, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens = append(r.tokens, token)
	return issuer.Caller{Namespace: "bookthief", ServiceAccount: "bookthief"}, nil
}

// Meshed lets the posing issuer sign for anyone.
func (r *tokenRecorder) Meshed(context.Context, string) error { return nil }

func (r *tokenRecorder) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.tokens...)
}

// startPosingIssuer serves meshfed's issuer protocol over real TLS with a
// valid SVID of the trust domain for id, recording every token it receives.
func startPosingIssuer(t *testing.T, id spiffeid.ID) (addr string, bundlePEM []byte, rec *tokenRecorder) {
	t.Helper()
	root, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("east", 12*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := inter.IssueSVID(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rec = &tokenRecorder{}
	cfg := issuer.DefaultConfig()
	cfg.Namespaces = rec
	srv, err := issuer.NewServer(cfg, ca.NewAuthority(inter), rec, serving)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	return lis.Addr().String(), inter.BundlePEM(), rec
}

// TestAgentRefusesIssuerWithWrongSPIFFEID: a workload of the trust domain
// (bookthief, with its own valid SVID) serves the issuer protocol and gets
// the agent to dial it. The agent, left at its defaults, requires the
// controller's ID and never sends the token; the same agent talking to the
// same server under the controller's ID does send it (the control).
func TestAgentRefusesIssuerWithWrongSPIFFEID(t *testing.T) {
	const secret = "bookbuyer-token"
	fetch := func(addr string, bundlePEM []byte, cfg agent.Config) error {
		dir := t.TempDir()
		cfg.IssuerAddress = addr
		cfg.BundleFile = filepath.Join(dir, "ca.crt")
		cfg.OutputDir = filepath.Join(dir, "certs")
		cfg.TokenSource = func(context.Context) (string, error) { return secret, nil }
		if err := os.WriteFile(cfg.BundleFile, bundlePEM, 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _, err := agent.FetchOnce(ctx, cfg)
		return err
	}

	thief := spiffeid.RequireFromString("spiffe://meshfed.local/ns/bookthief/sa/bookthief")
	addr, bundlePEM, rec := startPosingIssuer(t, thief)
	if err := fetch(addr, bundlePEM, agent.DefaultConfig()); err == nil {
		t.Fatal("agent accepted an issuer presenting " + thief.String())
	} else {
		t.Logf("refused as wanted: %v", err)
	}
	// An issuer ID naming another mesh's controller is not the one served either.
	other := agent.DefaultConfig()
	other.MeshNamespace = "other-mesh"
	if err := fetch(addr, bundlePEM, other); err == nil {
		t.Fatal("agent for mesh namespace other-mesh accepted " + thief.String())
	}
	if got := rec.received(); len(got) != 0 {
		t.Fatalf("the posing issuer received %d tokens: %q", len(got), got)
	}

	// Control: the same server under the controller's ID receives the token,
	// so the refusal above is the ID check and nothing else.
	addr, bundlePEM, rec = startPosingIssuer(t, issuerID)
	_ = fetch(addr, bundlePEM, agent.DefaultConfig())
	if got := rec.received(); len(got) != 1 || got[0] != secret {
		t.Fatalf("issuer with the controller's ID received %q, want the token once", got)
	}
}

func TestAgentRefusesToRunWithoutAnIssuerID(t *testing.T) {
	cfg := agent.DefaultConfig()
	cfg.IssuerID, cfg.MeshNamespace = "", ""
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "issuer id is empty") {
		t.Fatalf("Validate = %v, want a refusal naming the missing issuer id", err)
	}
	if err := agent.Run(context.Background(), cfg); err == nil {
		t.Fatal("Run started without an issuer id")
	}
	cfg.IssuerID = "spiffe://other.domain/ns/meshfed-system/sa/meshfed-controller"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "not in trust domain") {
		t.Fatalf("Validate = %v, want a refusal of an issuer id of another trust domain", err)
	}
}
