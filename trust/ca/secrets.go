package ca

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Keys of the Secrets and ConfigMap meshfed keeps its CA in.
//
// Root Secret (type Opaque), present only in a cluster that holds the root key:
//
//	ca.crt  the root certificate (PEM)
//	ca.key  the root private key (PEM, PKCS#8)
//
// Intermediate Secret (type kubernetes.io/tls), one per cluster:
//
//	tls.crt the intermediate CA certificate, then any further intermediates
//	        (PEM); a trailing root is tolerated and dropped
//	tls.key the intermediate's private key (PEM)
//	ca.crt  the trust bundle: every root the cluster accepts (PEM)
//
// Bundle ConfigMap, readable by workloads (public material only):
//
//	ca.crt  the trust bundle (PEM)
const (
	RootCertKey         = "ca.crt"
	RootKeyKey          = "ca.key"
	IntermediateCertKey = corev1.TLSCertKey
	IntermediateKeyKey  = corev1.TLSPrivateKeyKey
	BundleKey           = "ca.crt"
)

var managedLabels = map[string]string{"app.kubernetes.io/managed-by": "meshfed"}

// LoadOrCreateRoot returns the root kept in Secret namespace/name, generating
// and storing a new one when the Secret does not exist. created says which
// happened. A Secret that exists but does not hold a valid root for
// cfg.TrustDomain is an error; it is never overwritten.
func LoadOrCreateRoot(ctx context.Context, client kubernetes.Interface, namespace, name string, cfg Config) (root *Root, created bool, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, false, fmt.Errorf("root secret %s/%s: %w", namespace, name, err)
	}
	td := cfg.trustDomain()
	root, err = LoadRoot(ctx, client, namespace, name, td)
	if err == nil || !apierrors.IsNotFound(err) {
		return root, false, err
	}
	root, err = GenerateRoot(td, cfg.RootTTL)
	if err != nil {
		return nil, false, err
	}
	if err := SaveRoot(ctx, client, namespace, name, root); err != nil {
		if apierrors.IsAlreadyExists(err) { // another installer won the race
			root, err = LoadRoot(ctx, client, namespace, name, td)
			return root, false, err
		}
		return nil, false, err
	}
	return root, true, nil
}

// LoadRoot reads and validates the root in Secret namespace/name. A missing
// Secret is reported with an error that satisfies apierrors.IsNotFound. Use
// it with a client for another cluster to let a second cluster take the
// first one's root.
func LoadRoot(ctx context.Context, client kubernetes.Interface, namespace, name string, td spiffeid.TrustDomain) (*Root, error) {
	s, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("root secret %s/%s: %w", namespace, name, err)
	}
	root, err := ParseRoot(td, s.Data[RootCertKey], s.Data[RootKeyKey], time.Now())
	if err != nil {
		return nil, fmt.Errorf("root secret %s/%s: %w", namespace, name, err)
	}
	return root, nil
}

// SaveRoot creates Secret namespace/name holding root. It does not replace an
// existing Secret.
func SaveRoot(ctx context.Context, client kubernetes.Interface, namespace, name string, root *Root) error {
	keyPEM, err := root.KeyPEM()
	if err != nil {
		return fmt.Errorf("root secret %s/%s: %w", namespace, name, err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: managedLabels},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{RootCertKey: root.CertificatePEM(), RootKeyKey: keyPEM},
	}
	if _, err := client.CoreV1().Secrets(namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("root secret %s/%s: %w", namespace, name, err)
	}
	return nil
}

// LoadIntermediate reads and validates a cluster's intermediate from Secret
// namespace/name. This is the input when the user signs intermediates with
// an offline root and gives meshfed only the result.
func LoadIntermediate(ctx context.Context, client kubernetes.Interface, namespace, name string, td spiffeid.TrustDomain) (*Intermediate, error) {
	s, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("intermediate secret %s/%s: %w", namespace, name, err)
	}
	ca, err := ParseIntermediate(td, s.Data[IntermediateCertKey], s.Data[IntermediateKeyKey], s.Data[BundleKey], time.Now())
	if err != nil {
		return nil, fmt.Errorf("intermediate secret %s/%s: %w", namespace, name, err)
	}
	return ca, nil
}

// EnsureIntermediate returns the cluster's intermediate from Secret
// namespace/name, signing a new one with root and storing it when the Secret
// is missing, unreadable, not signed by root (the root was rotated), or past
// two thirds of its lifetime. bundle is the set of roots the cluster trusts
// (nil: root alone; root is always added). When only the bundle changed, the
// intermediate is kept and the Secret's ca.crt is updated. It is idempotent.
func EnsureIntermediate(ctx context.Context, client kubernetes.Interface, namespace, name string, root *Root, bundle *x509bundle.Bundle, cfg Config) (*Intermediate, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("intermediate secret %s/%s: %w", namespace, name, err)
	}
	if bundle == nil {
		bundle = root.Bundle()
	}
	bundle, err := Union(bundle, root.Bundle())
	if err != nil {
		return nil, fmt.Errorf("intermediate secret %s/%s: %w", namespace, name, err)
	}
	secrets := client.CoreV1().Secrets(namespace)
	existing, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("intermediate secret %s/%s: %w", namespace, name, err)
	}
	now := time.Now()
	if err == nil {
		cur, perr := ParseIntermediate(root.TrustDomain, existing.Data[IntermediateCertKey], existing.Data[IntermediateKeyKey], existing.Data[BundleKey], now)
		if perr == nil && cur.Certificate().CheckSignatureFrom(root.Certificate) == nil && !pastRenewal(cur.Certificate().NotBefore, cur.Certificate().NotAfter, now) {
			if cur.Bundle().Equal(bundle) {
				return cur, nil
			}
			next, err := cur.WithBundle(bundle)
			if err != nil {
				return nil, fmt.Errorf("intermediate secret %s/%s: %w", namespace, name, err)
			}
			return next, writeIntermediate(ctx, client, namespace, name, next, existing)
		}
	} else {
		existing = nil
	}
	next, err := root.NewIntermediate(cfg.ClusterName, cfg.IntermediateTTL, bundle)
	if err != nil {
		return nil, fmt.Errorf("intermediate secret %s/%s: %w", namespace, name, err)
	}
	return next, writeIntermediate(ctx, client, namespace, name, next, existing)
}

// SaveIntermediate creates or replaces Secret namespace/name with inter (its
// chain, key and trust bundle), keeping the Secret's annotations. It is how a
// cluster that does not hold the root key receives an intermediate signed
// elsewhere (meshfed cluster join, root rotation).
func SaveIntermediate(ctx context.Context, client kubernetes.Interface, namespace, name string, inter *Intermediate) error {
	existing, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		existing = nil
	case err != nil:
		return fmt.Errorf("intermediate secret %s/%s: %w", namespace, name, err)
	}
	return writeIntermediate(ctx, client, namespace, name, inter, existing)
}

// NeedsRenewal reports whether inter is past two thirds of its lifetime,
// when it should be replaced.
func (ca *Intermediate) NeedsRenewal(now time.Time) bool {
	c := ca.Certificate()
	return pastRenewal(c.NotBefore, c.NotAfter, now)
}

func pastRenewal(notBefore, notAfter, now time.Time) bool {
	return now.After(notBefore.Add(notAfter.Sub(notBefore) * 2 / 3))
}

func writeIntermediate(ctx context.Context, client kubernetes.Interface, namespace, name string, ca *Intermediate, existing *corev1.Secret) error {
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return fmt.Errorf("intermediate secret %s/%s: %w", namespace, name, err)
	}
	data := map[string][]byte{
		IntermediateCertKey: ca.ChainPEM(),
		IntermediateKeyKey:  keyPEM,
		BundleKey:           ca.BundlePEM(),
	}
	secrets := client.CoreV1().Secrets(namespace)
	if existing == nil {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: managedLabels},
			Type:       corev1.SecretTypeTLS,
			Data:       data,
		}
		_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
	} else {
		s := existing.DeepCopy()
		s.Data = data
		_, err = secrets.Update(ctx, s, metav1.UpdateOptions{}) // resourceVersion guards against a concurrent writer
	}
	if err != nil {
		return fmt.Errorf("intermediate secret %s/%s: write: %w", namespace, name, err)
	}
	return nil
}

// UpdateBundle writes bundle into the existing ConfigMap namespace/name under
// "ca.crt". It never creates one: in a meshed namespace `meshfed namespace
// add` creates it, and the controller is allowed only to update it. A
// missing ConfigMap is an error that satisfies apierrors.IsNotFound.
func UpdateBundle(ctx context.Context, client kubernetes.Interface, namespace, name string, bundle *x509bundle.Bundle) error {
	data := map[string]string{BundleKey: string(EncodeCertificatesPEM(bundle.X509Authorities()))}
	cms := client.CoreV1().ConfigMaps(namespace)
	cm, err := cms.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		if maps.Equal(cm.Data, data) {
			return nil
		}
		cm = cm.DeepCopy()
		cm.Data = data
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("bundle configmap %s/%s: %w", namespace, name, err)
	}
	return nil
}

// PublishBundle writes bundle into ConfigMap namespace/name under "ca.crt",
// creating or updating it. Workloads mount it to verify the issuer before
// they hold an SVID of their own.
func PublishBundle(ctx context.Context, client kubernetes.Interface, namespace, name string, bundle *x509bundle.Bundle) error {
	data := map[string]string{BundleKey: string(EncodeCertificatesPEM(bundle.X509Authorities()))}
	cms := client.CoreV1().ConfigMaps(namespace)
	cm, err := cms.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: managedLabels}, Data: data}
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
	case err == nil:
		cm = cm.DeepCopy()
		cm.Data = data
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("bundle configmap %s/%s: %w", namespace, name, err)
	}
	return nil
}
