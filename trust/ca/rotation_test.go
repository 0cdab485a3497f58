package ca_test

import (
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"

	"github.com/meshfed/meshfed/trust/ca"
)

// TestRootSecretRotationKeysGiveTheTrustedSet covers the root Secret's
// layout during a rotation: the trusted set is ca.crt ∪ bundle.crt ∪
// next.crt, a Secret without the rotation keys reads as before, and a
// malformed or foreign bundle.crt is refused rather than half-applied.
func TestRootSecretRotationKeysGiveTheTrustedSet(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("meshfed.local")
	oldRoot, err := ca.GenerateRoot(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	newRoot, _ := ca.GenerateRoot(td, time.Hour)
	foreign, _ := ca.GenerateRoot(spiffeid.RequireTrustDomainFromString("other.example"), time.Hour)
	secret := func(root *ca.Root, extra map[string][]byte) *corev1.Secret {
		key, _ := root.KeyPEM()
		d := map[string][]byte{ca.RootCertKey: root.CertificatePEM(), ca.RootKeyKey: key}
		for k, v := range extra {
			d[k] = v
		}
		return &corev1.Secret{Data: d}
	}
	newKey, _ := newRoot.KeyPEM()
	both := append(oldRoot.CertificatePEM(), newRoot.CertificatePEM()...)

	for _, tc := range []struct {
		name     string
		s        *corev1.Secret
		trusted  []*ca.Root
		rotating bool
		next     bool
		err      bool
	}{
		{name: "plain root secret", s: secret(oldRoot, nil), trusted: []*ca.Root{oldRoot}},
		{name: "add: next root waits", s: secret(oldRoot, map[string][]byte{ca.RootBundleKey: both, ca.NextRootCertKey: newRoot.CertificatePEM(), ca.NextRootKeyKey: newKey}),
			trusted: []*ca.Root{oldRoot, newRoot}, rotating: true, next: true},
		{name: "next root alone is trusted", s: secret(oldRoot, map[string][]byte{ca.NextRootCertKey: newRoot.CertificatePEM(), ca.NextRootKeyKey: newKey}),
			trusted: []*ca.Root{oldRoot, newRoot}, rotating: true, next: true},
		{name: "reissue: new root signs, old still trusted", s: secret(newRoot, map[string][]byte{ca.RootBundleKey: both}),
			trusted: []*ca.Root{oldRoot, newRoot}, rotating: true},
		{name: "malformed bundle.crt", s: secret(oldRoot, map[string][]byte{ca.RootBundleKey: []byte("not PEM")}), err: true},
		{name: "bundle.crt of another trust domain", s: secret(oldRoot, map[string][]byte{ca.RootBundleKey: foreign.CertificatePEM()}), err: true},
		{name: "next key does not match", s: secret(oldRoot, map[string][]byte{ca.NextRootCertKey: newRoot.CertificatePEM(), ca.NextRootKeyKey: mustKey(t, oldRoot)}), err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := ca.ParseRootSecret(td, tc.s, time.Now())
			if tc.err {
				if err == nil || !errors.Is(err, ca.ErrInvalidCA) {
					t.Fatalf("want an ErrInvalidCA refusal, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := len(st.Trusted.X509Authorities()); got != len(tc.trusted) {
				t.Fatalf("trusted %v, want %d roots", ca.Fingerprints(st.Trusted), len(tc.trusted))
			}
			for _, r := range tc.trusted {
				if !st.Trusted.HasX509Authority(r.Certificate) {
					t.Errorf("root %s not trusted", ca.Fingerprint(r.Certificate))
				}
			}
			if st.Rotating() != tc.rotating || (st.Next != nil) != tc.next {
				t.Errorf("rotating=%v next=%v, want %v %v", st.Rotating(), st.Next != nil, tc.rotating, tc.next)
			}
		})
	}
}

func mustKey(t *testing.T, r *ca.Root) []byte {
	t.Helper()
	k, err := r.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
