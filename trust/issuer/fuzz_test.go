package issuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"

	"github.com/meshfed/meshfed/trust/ca"
)

// fixedCaller authenticates every token as bookbuyer/bookbuyer and treats
// every namespace as meshed: FuzzSign exercises the CSR handling alone.
type fixedCaller struct{}

func (fixedCaller) Authenticate(context.Context, string) (Caller, error) {
	return Caller{Namespace: "bookbuyer", ServiceAccount: "bookbuyer"}, nil
}
func (fixedCaller) Meshed(context.Context, string) error { return nil }

func fuzzCSR(f *testing.F, tmpl *x509.CertificateRequest) []byte {
	f.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		f.Fatal(err)
	}
	return der
}

// FuzzSign sends arbitrary bytes as the CSR of an authenticated caller. The
// issuer either refuses them (InvalidArgument, PermissionDenied) or signs a
// leaf SVID for exactly the caller's identity, for the CSR's own key, that
// is not a CA and names nothing else.
func FuzzSign(f *testing.F) {
	td := spiffeid.RequireTrustDomainFromString("meshfed.local")
	root, err := ca.GenerateRoot(td, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	inter, err := root.NewIntermediate("east", time.Hour, nil)
	if err != nil {
		f.Fatal(err)
	}
	serving, err := inter.IssueSVID(spiffeid.RequireFromString("spiffe://meshfed.local/ns/meshfed-system/sa/meshfed-controller"), time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Namespaces = fixedCaller{}
	srv, err := NewServer(cfg, ca.NewAuthority(inter), fixedCaller{}, serving)
	if err != nil {
		f.Fatal(err)
	}
	want := "spiffe://meshfed.local/ns/bookbuyer/sa/bookbuyer"
	u := func(s string) *url.URL { p, _ := url.Parse(s); return p }
	f.Add(fuzzCSR(f, &x509.CertificateRequest{}))
	f.Add(fuzzCSR(f, &x509.CertificateRequest{URIs: []*url.URL{u(want)}}))
	f.Add(fuzzCSR(f, &x509.CertificateRequest{URIs: []*url.URL{u("spiffe://meshfed.local/ns/bookstore/sa/bookstore")}}))
	f.Add(fuzzCSR(f, &x509.CertificateRequest{URIs: []*url.URL{u(want), u(want)}}))
	f.Add(fuzzCSR(f, &x509.CertificateRequest{DNSNames: []string{"bookstore.bookstore.svc"}}))
	f.Add(fuzzCSR(f, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}))
	f.Add(fuzzCSR(f, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "meshfed intermediate CA"}}))
	f.Add([]byte{})
	f.Add([]byte("not a csr"))
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})

	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer token"))
	f.Fuzz(func(t *testing.T, csrDER []byte) {
		resp, err := srv.sign(ctx, &SignRequest{CSR: csrDER})
		if err != nil {
			if c := status.Code(err); c != codes.InvalidArgument && c != codes.PermissionDenied {
				t.Fatalf("refusal with code %v (%v), want InvalidArgument or PermissionDenied", c, err)
			}
			return
		}
		chain, roots, err := resp.Parse()
		if err != nil {
			t.Fatal(err)
		}
		bundle := inter.Bundle()
		if len(roots) != 1 || !bundle.HasX509Authority(roots[0]) {
			t.Fatalf("response bundle %d roots, not the CA's", len(roots))
		}
		id, _, err := x509svid.Verify(chain, bundle)
		if err != nil {
			t.Fatalf("issued chain does not verify: %v", err)
		}
		leaf := chain[0]
		if id.String() != want || resp.SPIFFEID != want || len(leaf.URIs) != 1 {
			t.Fatalf("issued %s (response %s, URIs %v), want exactly %s", id, resp.SPIFFEID, leaf.URIs, want)
		}
		if leaf.IsCA || len(leaf.DNSNames) > 0 || len(leaf.IPAddresses) > 0 || len(leaf.EmailAddresses) > 0 {
			t.Fatalf("issued leaf is CA %v or names more: DNS %v IP %v email %v", leaf.IsCA, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
		}
		csr, err := x509.ParseCertificateRequest(csrDER)
		if err != nil {
			t.Fatalf("signed an unparsable CSR: %v", err)
		}
		if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(csr.PublicKey) {
			t.Fatal("issued certificate is not for the CSR's key")
		}
	})
}

// FuzzTokenReviewStatus decodes arbitrary JSON as a TokenReview status (what
// the API server answers) and turns it into a caller. Accepted callers are
// authenticated ServiceAccounts of the configured audience with valid
// names; everything else is ErrUnauthenticated.
func FuzzTokenReviewStatus(f *testing.F) {
	seed := func(st authnv1.TokenReviewStatus) {
		b, err := json.Marshal(st)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	sa := authnv1.UserInfo{Username: "system:serviceaccount:bookbuyer:bookbuyer",
		Extra: map[string]authnv1.ExtraValue{podNameExtra: {"bookbuyer-1"}}}
	seed(authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"meshfed"}, User: sa})
	seed(authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"https://kubernetes.default.svc"}, User: sa})
	seed(authnv1.TokenReviewStatus{Authenticated: false, Error: "token expired"})
	seed(authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"meshfed"}, User: authnv1.UserInfo{Username: "system:node:node-1"}})
	seed(authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"meshfed"}, User: authnv1.UserInfo{Username: "system:serviceaccount:a/b:c"}})
	seed(authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"meshfed"}, User: authnv1.UserInfo{Username: "system:serviceaccount:kube-system:x:y"}})
	f.Add([]byte(`{"authenticated":true,"audiences":["meshfed"],"user":{"username":"system:serviceaccount:..:sa"}}`))
	f.Add([]byte(`{"authenticated":"yes"}`))
	f.Add([]byte(`null`))

	audiences := []string{"meshfed"}
	f.Fuzz(func(t *testing.T, data []byte) {
		var st authnv1.TokenReviewStatus
		if json.Unmarshal(data, &st) != nil {
			return
		}
		c, err := callerFromReview(st, audiences)
		if err != nil {
			if !strings.Contains(err.Error(), ErrUnauthenticated.Error()) {
				t.Fatalf("refusal %v does not wrap ErrUnauthenticated", err)
			}
			return
		}
		if !st.Authenticated {
			t.Fatal("accepted a review that was not authenticated")
		}
		if st.User.Username != "system:serviceaccount:"+c.Namespace+":"+c.ServiceAccount {
			t.Fatalf("caller %+v does not match user %q", c, st.User.Username)
		}
		found := false
		for _, a := range st.Audiences {
			found = found || a == "meshfed"
		}
		if !found {
			t.Fatalf("accepted audiences %q", st.Audiences)
		}
		td := spiffeid.RequireTrustDomainFromString("meshfed.local")
		if _, err := spiffeid.FromSegments(td, "ns", c.Namespace, "sa", c.ServiceAccount); err != nil {
			t.Fatalf("accepted caller %+v makes no SPIFFE ID: %v", c, err)
		}
	})
}
