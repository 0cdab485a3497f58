package issuer_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/internal/kubetest"
	"github.com/meshfed/meshfed/trust/issuer"
)

var td = spiffeid.RequireTrustDomainFromString("meshfed.local")

// issuerID is the identity the issuer presents to its clients.
var issuerID = spiffeid.RequireFromString("spiffe://meshfed.local/ns/meshfed-system/sa/meshfed-controller")

// startIssuer runs an issuer for client's cluster on 127.0.0.1 and returns
// its address and the authority it signs with.
func startIssuer(t testing.TB, client kubernetes.Interface) (string, *ca.Authority) {
	t.Helper()
	return startIssuerWith(t, client, nil)
}

// startIssuerWith is startIssuer with the gateway's ServiceAccount gw.
func startIssuerWith(t testing.TB, client kubernetes.Interface, gw *issuer.ServiceAccount) (string, *ca.Authority) {
	t.Helper()
	root, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("east", 12*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	auth := ca.NewAuthority(inter)
	serving, err := inter.IssueSVID(issuerID, time.Hour, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	cfg := issuer.DefaultConfig()
	cfg.Address = "127.0.0.1:0"
	cfg.Namespaces = issuer.MeshNamespaces{Client: client, MeshName: "meshfed"}
	cfg.Gateway = gw
	srv, err := issuer.NewServer(cfg, auth, issuer.NewTokenReviewer(client, trust.DefaultAudience), serving)
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
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("issuer: %v", err)
		}
	})
	return lis.Addr().String(), auth
}

func csr(t testing.TB, uris ...string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, _ := url.Parse(u)
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestIssuerSignsOnlyForTheReviewedServiceAccount(t *testing.T) {
	kube := kubetest.StartAPIServer(t)
	kubetest.CreateServiceAccount(t, kube, "bookbuyer", "bookbuyer")
	kubetest.CreateServiceAccount(t, kube, "bookstore", "bookstore")
	kubetest.MeshNamespace(t, kube, "bookbuyer")
	kubetest.MeshNamespace(t, kube, "bookstore")
	addr, auth := startIssuer(t, kube)

	cc, err := issuer.Dial(addr, auth, td, issuerID)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := issuer.NewClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	bookbuyer := kubetest.MustToken(t, kube, "bookbuyer", "bookbuyer", trust.DefaultAudience)
	wantID := "spiffe://meshfed.local/ns/bookbuyer/sa/bookbuyer"

	sign := func(t *testing.T, token string, csrDER []byte) {
		t.Helper()
		resp, err := client.Sign(ctx, token, csrDER)
		if err != nil {
			t.Fatalf("sign: %v", err)
		}
		chain, roots, err := resp.Parse()
		if err != nil {
			t.Fatal(err)
		}
		id, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, roots))
		if err != nil {
			t.Fatalf("issued SVID does not verify: %v", err)
		}
		if id.String() != wantID || resp.SPIFFEID != wantID {
			t.Fatalf("issued %s (response says %s), want %s", id, resp.SPIFFEID, wantID)
		}
	}
	t.Run("CSR without SAN gets the token's identity", func(t *testing.T) { sign(t, bookbuyer, csr(t)) })
	t.Run("CSR naming the token's identity", func(t *testing.T) { sign(t, bookbuyer, csr(t, wantID)) })

	refused := []struct {
		name  string
		token string
		csr   []byte
		code  codes.Code
	}{
		{"bookbuyer's token claiming bookstore/bookstore", bookbuyer, csr(t, "spiffe://meshfed.local/ns/bookstore/sa/bookstore"), codes.PermissionDenied},
		{"token for the API server's audience", kubetest.MustToken(t, kube, "bookbuyer", "bookbuyer", "https://kubernetes.default.svc"), csr(t), codes.Unauthenticated},
		{"token for another audience", kubetest.MustToken(t, kube, "bookstore", "bookstore", "vault"), csr(t), codes.Unauthenticated},
		{"no token", "", csr(t), codes.Unauthenticated},
		{"forged token", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6Ym9va3N0b3JlOmJvb2tzdG9yZSJ9.c2ln", csr(t), codes.Unauthenticated},
		{"not a CSR", bookbuyer, []byte("not a csr"), codes.InvalidArgument},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client.Sign(ctx, tc.token, tc.csr)
			if status.Code(err) != tc.code {
				t.Fatalf("got %v (resp %v), want code %v", err, resp, tc.code)
			}
			t.Logf("refused: %v", err)
		})
	}

	t.Run("token of a deleted ServiceAccount", func(t *testing.T) {
		kubetest.CreateServiceAccount(t, kube, "bookbuyer", "gone")
		tok := kubetest.MustToken(t, kube, "bookbuyer", "gone", trust.DefaultAudience)
		if err := kube.CoreV1().ServiceAccounts("bookbuyer").Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := client.Sign(ctx, tok, csr(t))
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("got %v, want Unauthenticated", err)
		}
	})

	t.Run("issuer keeps serving after refusals", func(t *testing.T) { sign(t, bookbuyer, csr(t)) })
}

func TestIssuerClientRefusesAnIssuerWithAnotherIdentity(t *testing.T) {
	root, _ := ca.GenerateRoot(td, time.Hour)
	inter, _ := root.NewIntermediate("east", time.Hour, nil)
	imposter, _ := inter.IssueSVID(spiffeid.RequireFromString("spiffe://meshfed.local/ns/bookbuyer/sa/bookbuyer"), time.Hour)
	cfg := issuer.DefaultConfig()
	cfg.Namespaces = denyAll{}
	srv, err := issuer.NewServer(cfg, ca.NewAuthority(inter), denyAll{}, imposter)
	if err != nil {
		t.Fatal(err)
	}
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Serve(ctx, lis) }()
	cc, _ := issuer.Dial(lis.Addr().String(), inter.Bundle(), td, issuerID)
	defer cc.Close()
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	_, err = issuer.NewClient(cc).Sign(cctx, "token", csr(t))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want the handshake to fail (Unavailable)", err)
	}
}

// denyAll is an Authenticator that accepts nobody.
type denyAll struct{}

func (denyAll) Meshed(context.Context, string) error { return issuer.ErrNotMeshed }

func (denyAll) Authenticate(context.Context, string) (issuer.Caller, error) {
	return issuer.Caller{}, issuer.ErrUnauthenticated
}

// TestIssuerRefusesUnmeshedNamespace: a Pod in kube-system (or any namespace
// the mesh does not monitor) holds a perfectly valid ServiceAccount token
// for audience "meshfed" and asks the issuer for an SVID. The issuer refuses
// and says which namespace and how to add it; once the namespace is added
// it signs, and once removed it refuses again.
func TestIssuerRefusesUnmeshedNamespace(t *testing.T) {
	kube := kubetest.StartAPIServer(t)
	kubetest.CreateServiceAccount(t, kube, "kube-system", "coredns")
	kubetest.CreateServiceAccount(t, kube, "scratch", "default")
	kubetest.CreateServiceAccount(t, kube, "bookstore", "bookstore")
	kubetest.MeshNamespace(t, kube, "bookstore")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A namespace of another mesh is outside this one too.
	if _, err := kube.CoreV1().Namespaces().Patch(ctx, "scratch", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"meshfed.io/monitored-by":"another-mesh"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	addr, auth := startIssuer(t, kube)
	cc, err := issuer.Dial(addr, auth, td, issuerID)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := issuer.NewClient(cc)

	for _, c := range []struct{ ns, sa string }{{"kube-system", "coredns"}, {"scratch", "default"}} {
		tok := kubetest.MustToken(t, kube, c.ns, c.sa, trust.DefaultAudience)
		resp, err := client.Sign(ctx, tok, csr(t))
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("%s/%s: got %v (resp %v), want PermissionDenied", c.ns, c.sa, err, resp)
		}
		msg := status.Convert(err).Message()
		if !strings.Contains(msg, `namespace "`+c.ns+`"`) || !strings.Contains(msg, "meshfed namespace add "+c.ns) {
			t.Errorf("%s/%s: refusal %q does not name the namespace and `meshfed namespace add`", c.ns, c.sa, msg)
		}
	}
	// The meshed namespace still gets its SVID (the refusals are about the
	// namespace, not a broken issuer).
	if _, err := client.Sign(ctx, kubetest.MustToken(t, kube, "bookstore", "bookstore", trust.DefaultAudience), csr(t)); err != nil {
		t.Fatalf("meshed bookstore refused: %v", err)
	}
	// Adding kube-system to the mesh is the user's explicit choice.
	kubetest.MeshNamespace(t, kube, "kube-system")
	if _, err := client.Sign(ctx, kubetest.MustToken(t, kube, "kube-system", "coredns", trust.DefaultAudience), csr(t)); err != nil {
		t.Fatalf("kube-system after namespace add: %v", err)
	}
	// Removing bookstore stops its SVIDs at once.
	if _, err := kube.CoreV1().Namespaces().Patch(ctx, "bookstore", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"meshfed.io/monitored-by":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Sign(ctx, kubetest.MustToken(t, kube, "bookstore", "bookstore", trust.DefaultAudience), csr(t)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("bookstore after namespace remove: got %v, want PermissionDenied", err)
	}
}

// TestIssuerSignsForTheGatewayAlone: the control plane's namespace is not
// part of the mesh, yet the east-west gateway's ServiceAccount there gets
// its SVID; no other account of that namespace does.
func TestIssuerSignsForTheGatewayAlone(t *testing.T) {
	kube := kubetest.StartAPIServer(t)
	kubetest.CreateServiceAccount(t, kube, "meshfed-system", "meshfed-gateway")
	kubetest.CreateServiceAccount(t, kube, "meshfed-system", "default")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr, auth := startIssuerWith(t, kube, &issuer.ServiceAccount{Namespace: "meshfed-system", Name: "meshfed-gateway"})
	cc, err := issuer.Dial(addr, auth, td, issuerID)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := issuer.NewClient(cc)
	resp, err := client.Sign(ctx, kubetest.MustToken(t, kube, "meshfed-system", "meshfed-gateway", trust.DefaultAudience), csr(t))
	if err != nil {
		t.Fatalf("gateway refused: %v", err)
	}
	leaf, err := x509.ParseCertificate(resp.CertificateChain[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := leaf.URIs[0].String(), "spiffe://"+td.Name()+"/ns/meshfed-system/sa/meshfed-gateway"; got != want {
		t.Errorf("gateway SVID for %s, want %s", got, want)
	}
	if _, err := client.Sign(ctx, kubetest.MustToken(t, kube, "meshfed-system", "default", trust.DefaultAudience), csr(t)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("another account of the control plane's namespace: got %v, want PermissionDenied", err)
	}
}
