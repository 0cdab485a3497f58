// Package controllerca is a cluster's CA as its controller runs it: loaded
// from the control plane's Secrets at start (a root kept in the cluster, or
// an intermediate signed offline when the root key is elsewhere), reloaded
// when those Secrets change (root rotation), and the controller's own
// serving certificate, issued from it and renewed. The CA itself (roots,
// intermediates, SVIDs, bundles) is trust/ca.
package controllerca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/mtls"
)

// Secrets says where a cluster's CA is kept: the root and intermediate
// Secrets in the control plane's namespace, and the trust domain.
type Secrets struct {
	Namespace, Root, Intermediate string
	TrustDomain                   string
}

// Load returns this cluster's intermediate: signed by the root kept in
// the root Secret (generated there if there is none), or, when this
// cluster holds no root key, the signed intermediate the user put into the
// intermediate Secret.
func Load(ctx context.Context, client kubernetes.Interface, s Secrets, caCfg ca.Config, log *slog.Logger) (*ca.Intermediate, error) {
	// A member without the root key (meshfed cluster join, or an
	// intermediate signed offline) has only the intermediate Secret: use it
	// and never generate a root of its own beside it.
	if _, err := client.CoreV1().Secrets(s.Namespace).Get(ctx, s.Root, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		td, err := spiffeid.TrustDomainFromString(s.TrustDomain)
		if err != nil {
			return nil, err
		}
		inter, err := ca.LoadIntermediate(ctx, client, s.Namespace, s.Intermediate, td)
		if err == nil {
			log.Info("using a signed intermediate; the root key is not in this cluster", "secret", s.Namespace+"/"+s.Intermediate)
			return inter, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("no root Secret %s/%s and the intermediate is unusable: %w", s.Namespace, s.Root, err)
		}
	}
	root, created, err := ca.LoadOrCreateRoot(ctx, client, s.Namespace, s.Root, caCfg)
	if err != nil {
		td, tdErr := spiffeid.TrustDomainFromString(s.TrustDomain)
		if tdErr != nil {
			return nil, tdErr
		}
		inter, ierr := ca.LoadIntermediate(ctx, client, s.Namespace, s.Intermediate, td)
		if ierr != nil {
			return nil, errors.Join(fmt.Errorf("root Secret %s/%s: %w", s.Namespace, s.Root, err),
				fmt.Errorf("intermediate Secret %s/%s: %w", s.Namespace, s.Intermediate, ierr))
		}
		log.Info("using a signed intermediate; the root key is not in this cluster", "secret", s.Namespace+"/"+s.Intermediate)
		return inter, nil
	}
	if created {
		log.Info("generated the federation root", "secret", s.Namespace+"/"+s.Root)
	}
	return ca.EnsureIntermediate(ctx, client, s.Namespace, s.Intermediate, root, rootTrust(ctx, client, s, root).Trusted, caCfg)
}

// ServingSVID issues the controller's own certificate: its SPIFFE ID plus
// the DNS names and IP addresses clients dial it by. trust/ca's IssueSVID
// takes DNS names only, and grpc-go's xDS "tls" channel credentials check
// the dialled address, so IP SANs are added here, signed with the cluster's
// intermediate key.
func ServingSVID(inter *ca.Intermediate, id spiffeid.ID, ttl time.Duration, names []string) (*x509svid.SVID, error) {
	var dns []string
	var ips []net.IP
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else if n != "" {
			dns = append(dns, n)
		}
	}
	if len(ips) == 0 {
		return inter.IssueSVID(id, ttl, dns...)
	}
	base, err := inter.IssueSVID(id, ttl, dns...)
	if err != nil {
		return nil, err
	}
	keyPEM, err := inter.KeyPEM()
	if err != nil {
		return nil, err
	}
	caKey, err := ca.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	tmpl := *base.Certificates[0]
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.IPAddresses = ips
	tmpl.URIs = []*url.URL{id.URL()}
	tmpl.Raw, tmpl.RawTBSCertificate, tmpl.Signature, tmpl.SubjectKeyId, tmpl.AuthorityKeyId = nil, nil, nil, nil, nil
	tmpl.ExtraExtensions, tmpl.Extensions = nil, nil
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, inter.Certificate(), base.PrivateKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: append([]*x509.Certificate{leaf}, inter.Chain()...), PrivateKey: base.PrivateKey}, nil
}

// RenewServing reissues the serving certificate at half its life.
func RenewServing(ctx context.Context, authority *ca.Authority, src *mtls.Source, id spiffeid.ID, names []string, log *slog.Logger) {
	for {
		cur, _ := src.GetX509SVID()
		wait := time.Minute
		if cur != nil {
			leaf := cur.Certificates[0]
			wait = time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, time.Second)):
		}
		inter := authority.Current()
		svid, err := ServingSVID(inter, id, time.Hour, names)
		if err != nil {
			log.Error("renewing the controller's serving certificate", "err", err)
			continue
		}
		src.SetSVID(svid)
		src.SetBundle(inter.Bundle())
	}
}

// ReloaderConfig configures a Reloader.
type ReloaderConfig struct {
	Client  kubernetes.Interface
	Secrets Secrets
	// CA is the configuration intermediates are issued with.
	CA        ca.Config
	Authority *ca.Authority
	// OnChange is called, on the reloader's goroutine, after the Authority
	// holds a new CA: it republishes the bundle and reissues what was
	// signed by the old one. It may block briefly; it must not call back.
	// An error is retried.
	OnChange func(ctx context.Context, inter *ca.Intermediate) error
	// Repair reloads this often even without an event (the intermediate's
	// renewal at two thirds of its life happens here).
	Repair time.Duration
	Log    *slog.Logger
}

// Reloader swaps the controller's CA at run time when the root or
// intermediate Secret changes (root rotation, docs/certificates.md): it
// loads them, reissues or updates the intermediate (ca.EnsureIntermediate),
// sets the Authority and calls OnChange. It runs on its own goroutine;
// informer handlers only signal it. A Secret it cannot use is logged and
// the CA in use keeps serving.
type Reloader struct {
	cfg     ReloaderConfig
	pending bool // the Authority changed but OnChange has not succeeded yet
}

// NewReloader returns a Reloader for cfg.
func NewReloader(cfg ReloaderConfig) (*Reloader, error) {
	if cfg.Client == nil || cfg.Authority == nil || cfg.OnChange == nil {
		return nil, errors.New("controllerca: Client, Authority and OnChange are required")
	}
	if cfg.Repair <= 0 {
		return nil, errors.New("controllerca: Repair must be positive")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Reloader{cfg: cfg}, nil
}

// Run reloads on every change of the two Secrets until ctx ends.
func (r *Reloader) Run(ctx context.Context) error {
	kick := make(chan struct{}, 1)
	s := r.cfg.Secrets
	signal := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if sec, ok := obj.(*corev1.Secret); ok && (sec.Name == s.Root || sec.Name == s.Intermediate) {
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	}
	f := informers.NewSharedInformerFactoryWithOptions(r.cfg.Client, 0, informers.WithNamespace(s.Namespace))
	inf := f.Core().V1().Secrets().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    signal,
		UpdateFunc: func(_, obj any) { signal(obj) },
		DeleteFunc: signal,
	}); err != nil {
		return err
	}
	ictx, stop := context.WithCancel(ctx)
	f.Start(ictx.Done())
	defer func() { stop(); f.Shutdown() }()
	repair := time.NewTicker(r.cfg.Repair)
	defer repair.Stop()
	retry := time.Second
	var retryC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-repair.C:
		case <-retryC:
		}
		retryC = nil
		if err := r.reload(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.cfg.Log.Error("CA Secrets not applied; the current CA keeps serving", "err", err, "retry", retry)
			retryC = time.After(retry)
			retry = min(2*retry, time.Minute)
			continue
		}
		retry = time.Second
	}
}

// reload reads the Secrets and, when they give a CA other than the one in
// use, installs it.
func (r *Reloader) reload(ctx context.Context) error {
	inter, err := Current(ctx, r.cfg.Client, r.cfg.Secrets, r.cfg.CA)
	if err != nil {
		return err
	}
	cur := r.cfg.Authority.Current()
	if cur.Certificate().Equal(inter.Certificate()) && cur.Bundle().Equal(inter.Bundle()) && !r.pending {
		return nil
	}
	r.cfg.Authority.Set(inter)
	r.pending = true
	r.cfg.Log.Info("CA changed: now signing with a new intermediate or trusting a new bundle",
		"intermediate", ca.Fingerprint(inter.Certificate()), "bundle", ca.Fingerprints(inter.Bundle()))
	if err := r.cfg.OnChange(ctx, inter); err != nil {
		return fmt.Errorf("after the CA changed: %w", err)
	}
	r.pending = false
	return nil
}

// trustedBundle reads the root Secret: its signing root and the roots the
// cluster trusts (its root, bundle.crt and a next root).
func trustedBundle(ctx context.Context, client kubernetes.Interface, s Secrets, td spiffeid.TrustDomain) (*ca.RootState, error) {
	st, _, err := ca.LoadRootState(ctx, client, s.Namespace, s.Root, td)
	return st, err
}

// Current is the intermediate the Secrets call for now. Unlike Load at
// start it never generates a root: a missing root Secret means the
// intermediate Secret (signed offline) is the input.
func Current(ctx context.Context, client kubernetes.Interface, s Secrets, caCfg ca.Config) (*ca.Intermediate, error) {
	td, err := spiffeid.TrustDomainFromString(s.TrustDomain)
	if err != nil {
		return nil, err
	}
	st, err := trustedBundle(ctx, client, s, td)
	switch {
	case apierrors.IsNotFound(err):
		return ca.LoadIntermediate(ctx, client, s.Namespace, s.Intermediate, td)
	case err != nil:
		return nil, err
	}
	inter, err := ca.EnsureIntermediate(ctx, client, s.Namespace, s.Intermediate, st.Root, st.Trusted, caCfg)
	if err != nil {
		return nil, fmt.Errorf("root secret %s/%s: %w", s.Namespace, s.Root, err)
	}
	return inter, nil
}

// rootTrust returns the trusted roots of the root Secret for Load at
// start, so a controller restarted in the middle of a rotation keeps the
// union rather than shrinking its bundle to the signing root.
func rootTrust(ctx context.Context, client kubernetes.Interface, s Secrets, root *ca.Root) *ca.RootState {
	st, err := trustedBundle(ctx, client, s, root.TrustDomain)
	if err != nil || !st.Root.Certificate.Equal(root.Certificate) {
		return &ca.RootState{Root: root, Trusted: root.Bundle()}
	}
	return st
}
