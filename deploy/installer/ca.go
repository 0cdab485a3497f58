package installer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/trust/ca"
)

// Secret names the controller reads its CA from (MeshConfig
// spec.certificate defaults).
const (
	RootSecretName         = deploy.RootSecretName
	IntermediateSecretName = deploy.IntermediateSecretName
)

// Errors InstallCA reports when a cluster cannot take another's root.
var (
	// ErrNoPeerRoot: the other cluster keeps no root Secret (its root key
	// is offline); give a signed intermediate instead.
	ErrNoPeerRoot = errors.New("the other cluster keeps no root key")
	// ErrDifferentRoot: this cluster already has a root of its own.
	ErrDifferentRoot = errors.New("this cluster already has a different root")
)

// CASource says where a cluster's certificate authority comes from at
// install time. At most one way may be chosen; none generates a new root.
type CASource struct {
	// RootFrom, if set, is a client for a cluster that holds the
	// federation root. Its root is read into memory, signs an intermediate
	// for this cluster, and only that intermediate is installed: the root
	// key never leaves the cluster (or offline store) that holds it.
	RootFrom kubernetes.Interface
	// RootFromNamespace is the control plane namespace in that cluster.
	// Default meshfed-system.
	RootFromNamespace string
	// Signed intermediate (PEM), for a root kept offline: the chain
	// (intermediate first), its key and the trust bundle.
	IntermediateChain, IntermediateKey, TrustBundle []byte
	// ReplaceRoot, with RootFrom: this cluster was installed with a root of
	// its own, different from RootFrom's. Its root and intermediate Secrets
	// are deleted first so that it takes RootFrom's root; its controller
	// and workloads must be restarted afterwards. Without it such a cluster
	// is refused with ErrDifferentRoot.
	ReplaceRoot bool
}

func (s CASource) validate() error {
	inter := len(s.IntermediateChain) > 0 || len(s.IntermediateKey) > 0 || len(s.TrustBundle) > 0
	var errs []error
	if s.RootFrom != nil && inter {
		errs = append(errs, errors.New("take the root from another cluster or give a signed intermediate, not both"))
	}
	if inter && (len(s.IntermediateChain) == 0 || len(s.IntermediateKey) == 0 || len(s.TrustBundle) == 0) {
		errs = append(errs, errors.New("a signed intermediate needs its certificate chain, its key and the trust bundle"))
	}
	if s.ReplaceRoot && s.RootFrom == nil {
		errs = append(errs, errors.New("replacing this cluster's root needs the other cluster's root to take instead"))
	}
	return errors.Join(errs...)
}

// InstallCA puts the federation's trust into the control plane namespace
// before the controller starts: an intermediate signed with another
// cluster's root, a signed intermediate given by the user, or — if neither
// is given and none is there — a new root.
// Inputs are checked (trust domain, CA flags, key match, chain) and refused
// with the reason; an existing valid root is kept. It returns what it did.
func (c *Client) InstallCA(ctx context.Context, o deploy.Options, src CASource) (string, error) {
	if err := src.validate(); err != nil {
		return "", err
	}
	td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
	if err != nil {
		return "", fmt.Errorf("trust domain %q: %w", o.TrustDomain, err)
	}
	cfg := ca.DefaultConfig()
	cfg.TrustDomain, cfg.ClusterName = o.TrustDomain, o.ClusterName
	switch {
	case src.RootFrom != nil:
		dropped, err := c.dropOwnRoot(ctx, o, src)
		if err != nil {
			return "", err
		}
		msg, err := c.signWithPeerRoot(ctx, o, src, td, cfg)
		if dropped && err == nil {
			msg = fmt.Sprintf("dropped %s's own root and intermediate (restart its controller and workloads); %s", o.ClusterName, msg)
		}
		return msg, err
	case len(src.IntermediateChain) > 0:
		inter, err := ca.ParseIntermediate(td, src.IntermediateChain, src.IntermediateKey, src.TrustBundle, time.Now())
		if err != nil {
			return "", fmt.Errorf("signed intermediate: %w", err)
		}
		key, err := inter.KeyPEM()
		if err != nil {
			return "", err
		}
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: IntermediateSecretName, Namespace: o.Namespace, Labels: o.Labels()},
			Type:       corev1.SecretTypeTLS,
			Data: map[string][]byte{
				corev1.TLSCertKey: inter.ChainPEM(), corev1.TLSPrivateKeyKey: key, ca.BundleKey: inter.BundlePEM(),
			},
		}
		secrets := c.kube.CoreV1().Secrets(o.Namespace)
		if old, err := secrets.Get(ctx, s.Name, metav1.GetOptions{}); err == nil {
			s.ResourceVersion = old.ResourceVersion
			_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
			if err != nil {
				return "", fmt.Errorf("intermediate secret %s/%s: %w", o.Namespace, s.Name, err)
			}
			return "signed intermediate updated; the root key is not in this cluster", nil
		}
		if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return "", fmt.Errorf("intermediate secret %s/%s: %w", o.Namespace, s.Name, err)
		}
		return "signed intermediate installed; the root key is not in this cluster", nil
	default:
		if _, err := c.kube.CoreV1().Secrets(o.Namespace).Get(ctx, IntermediateSecretName, metav1.GetOptions{}); err == nil {
			if _, err := ca.LoadRoot(ctx, c.kube, o.Namespace, RootSecretName, td); err != nil {
				return "existing intermediate kept", nil
			}
		}
		_, created, err := ca.LoadOrCreateRoot(ctx, c.kube, o.Namespace, RootSecretName, cfg)
		if err != nil {
			return "", err
		}
		if created {
			return "new federation root generated", nil
		}
		return "existing root kept", nil
	}
}

// dropOwnRoot, when src.ReplaceRoot is set and this cluster's root
// differs from the peer's, deletes this cluster's root and intermediate
// Secrets so that signWithPeerRoot installs an intermediate under the
// peer's root (the controller then signs with it after a restart). It does
// nothing when either root Secret cannot be read: signWithPeerRoot reports
// that case.
func (c *Client) dropOwnRoot(ctx context.Context, o deploy.Options, src CASource) (bool, error) {
	if !src.ReplaceRoot {
		return false, nil
	}
	mine, err1 := c.kube.CoreV1().Secrets(o.Namespace).Get(ctx, RootSecretName, metav1.GetOptions{})
	theirs, err2 := src.RootFrom.CoreV1().Secrets(src.rootFromNamespace()).Get(ctx, RootSecretName, metav1.GetOptions{})
	if err1 != nil || err2 != nil || string(mine.Data[ca.RootCertKey]) == string(theirs.Data[ca.RootCertKey]) {
		return false, nil
	}
	for _, name := range []string{RootSecretName, IntermediateSecretName} {
		if err := c.kube.CoreV1().Secrets(o.Namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("replace root: Secret %s/%s: %w", o.Namespace, name, err)
		}
	}
	return true, nil
}

func (s CASource) rootFromNamespace() string {
	if s.RootFromNamespace == "" {
		return deploy.DefaultNamespace
	}
	return s.RootFromNamespace
}

// signWithPeerRoot signs an intermediate for this cluster with the root of
// the cluster src.RootFrom points at and installs it; the root key stays in
// this process's memory and is never written here. An intermediate already
// signed by that root and not due for renewal is kept.
func (c *Client) signWithPeerRoot(ctx context.Context, o deploy.Options, src CASource, td spiffeid.TrustDomain, cfg ca.Config) (string, error) {
	peer, _, err := ca.LoadRootState(ctx, src.RootFrom, src.rootFromNamespace(), RootSecretName, td)
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("sign an intermediate with the other cluster's root: %w: %w", ErrNoPeerRoot, err)
	}
	if err != nil {
		return "", fmt.Errorf("sign an intermediate with the other cluster's root: %w", err)
	}
	existing, err := ca.LoadRoot(ctx, c.kube, o.Namespace, RootSecretName, td)
	switch {
	case err == nil && existing.Certificate.Equal(peer.Root.Certificate):
		return fmt.Sprintf("this cluster still holds a copy of the federation root key from an earlier join in Secret %s/%s; delete it to keep the key in one place (see docs/certificates.md)", o.Namespace, RootSecretName), nil
	case err == nil:
		return "", fmt.Errorf("%w in %s/%s; rotate it (bundle union) instead of replacing it", ErrDifferentRoot, o.Namespace, RootSecretName)
	case !apierrors.IsNotFound(err):
		return "", err
	}
	if cur, err := ca.LoadIntermediate(ctx, c.kube, o.Namespace, IntermediateSecretName, td); err == nil {
		root, rerr := ca.IssuerRoot(cur, cur.Bundle())
		if rerr == nil && !peer.Trusted.HasX509Authority(root) {
			return "", fmt.Errorf("%w: the intermediate in %s/%s chains to root %s, which the other cluster does not trust; rotate (bundle union) instead of replacing it",
				ErrDifferentRoot, o.Namespace, IntermediateSecretName, ca.Fingerprint(root))
		}
		if rerr == nil && root.Equal(peer.Root.Certificate) && !cur.NeedsRenewal(time.Now()) && cur.Bundle().Equal(peer.Trusted) {
			return "intermediate already signed by the federation root; the root key is not in this cluster", nil
		}
	}
	inter, err := peer.Root.NewIntermediate(o.ClusterName, cfg.IntermediateTTL, peer.Trusted)
	if err != nil {
		return "", err
	}
	if err := ca.SaveIntermediate(ctx, c.kube, o.Namespace, IntermediateSecretName, inter); err != nil {
		return "", err
	}
	return "intermediate signed with the federation root; the root key is not in this cluster", nil
}
