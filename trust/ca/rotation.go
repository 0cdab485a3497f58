package ca

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Keys a root Secret holds while its root is being rotated, beside ca.crt
// and ca.key (which always hold the root that signs the cluster's
// intermediate, so LoadRoot and install read the Secret as before):
//
//	bundle.crt  the roots the cluster trusts (PEM); absent means ca.crt alone
//	next.crt    the root that will replace ca.crt (PEM), only between the
//	next.key    "add" and "reissue" phases, with its key
//
// The trusted set a controller uses is ca.crt ∪ bundle.crt ∪ next.crt, so a
// Secret in which a root signs is always trusted and a new root is trusted
// from the moment it is written.
const (
	RootBundleKey   = "bundle.crt"
	NextRootCertKey = "next.crt"
	NextRootKeyKey  = "next.key"
)

// Annotations on the root Secret that record a rotation's progress. The
// phase is written with the Secret's new contents; the time is written
// once every controller of the cluster has applied them.
const (
	RotationPhaseAnnotation = "meshfed.io/root-rotation-phase"
	RotationTimeAnnotation  = "meshfed.io/root-rotation-applied-at"
)

// Rotation phases, in order.
const (
	PhaseAdd     = "add"
	PhaseReissue = "reissue"
	PhaseFinish  = "finish"
)

// RootState is what a root Secret says about a cluster's roots.
type RootState struct {
	// Root signs the cluster's intermediate (ca.crt, ca.key).
	Root *Root
	// Next is the root that will replace Root; nil outside a rotation's
	// add phase.
	Next *Root
	// Trusted is every root the cluster accepts: Root, Next and the
	// bundle.crt roots.
	Trusted *x509bundle.Bundle
	// Phase and AppliedAt are the rotation annotations; empty and zero when
	// absent.
	Phase     string
	AppliedAt time.Time
}

// Rotating reports whether the Secret is between the add and finish phases:
// a next root waits, or roots other than Root are still trusted.
func (s *RootState) Rotating() bool {
	return s.Next != nil || len(s.Trusted.X509Authorities()) > 1
}

// ParseRootSecret reads a root Secret with the rotation keys; see the
// constants above for the layout. A malformed bundle.crt or next root is an
// error: a controller keeps its current CA rather than guess.
func ParseRootSecret(td spiffeid.TrustDomain, s *corev1.Secret, now time.Time) (*RootState, error) {
	root, err := ParseRoot(td, s.Data[RootCertKey], s.Data[RootKeyKey], now)
	if err != nil {
		return nil, err
	}
	st := &RootState{Root: root, Phase: s.Annotations[RotationPhaseAnnotation]}
	if t := s.Annotations[RotationTimeAnnotation]; t != "" {
		if st.AppliedAt, err = time.Parse(time.RFC3339, t); err != nil {
			return nil, fmt.Errorf("%w: annotation %s %q: %w", ErrInvalidCA, RotationTimeAnnotation, t, err)
		}
	}
	bundles := []*x509bundle.Bundle{root.Bundle()}
	if len(s.Data[RootBundleKey]) > 0 {
		b, err := ParseBundle(td, s.Data[RootBundleKey], now)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", RootBundleKey, err)
		}
		bundles = append(bundles, b)
	}
	if len(s.Data[NextRootCertKey]) > 0 || len(s.Data[NextRootKeyKey]) > 0 {
		if st.Next, err = ParseRoot(td, s.Data[NextRootCertKey], s.Data[NextRootKeyKey], now); err != nil {
			return nil, fmt.Errorf("next root: %w", err)
		}
		bundles = append(bundles, st.Next.Bundle())
	}
	if st.Trusted, err = Union(bundles...); err != nil {
		return nil, err
	}
	return st, nil
}

// LoadRootState reads and parses root Secret namespace/name. A missing
// Secret is reported with an error that satisfies apierrors.IsNotFound.
func LoadRootState(ctx context.Context, client kubernetes.Interface, namespace, name string, td spiffeid.TrustDomain) (*RootState, *corev1.Secret, error) {
	s, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("root secret %s/%s: %w", namespace, name, err)
	}
	st, err := ParseRootSecret(td, s, time.Now())
	if err != nil {
		return nil, s, fmt.Errorf("root secret %s/%s: %w", namespace, name, err)
	}
	return st, s, nil
}

// Fingerprint is the SHA-256 of a certificate's DER, in hex, shortened to
// 16 characters for display.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])[:16]
}

// Fingerprints lists the fingerprints of a bundle's roots.
func Fingerprints(b *x509bundle.Bundle) []string {
	var out []string
	for _, r := range b.X509Authorities() {
		out = append(out, Fingerprint(r))
	}
	return out
}

// IssuerRoot returns the root of bundle that inter's chain ends at, or an
// error when none signed it.
func IssuerRoot(inter *Intermediate, bundle *x509bundle.Bundle) (*x509.Certificate, error) {
	top := inter.chain[len(inter.chain)-1]
	for _, r := range bundle.X509Authorities() {
		if top.CheckSignatureFrom(r) == nil {
			return r, nil
		}
	}
	return nil, errors.New("intermediate is signed by no root of the bundle")
}
