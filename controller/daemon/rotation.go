package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/meshfed/meshfed/trust/ca"
)

// caReloader swaps the controller's CA at run time when the root or
// intermediate Secret changes (root rotation, see docs/certificates.md): it
// loads them, reissues or updates the intermediate (ca.EnsureIntermediate),
// sets the Authority, publishes the bundle, reissues the serving SVID and
// tells the SDS server to reissue. It runs on its own goroutine; informer
// handlers only signal it. A Secret it cannot use is logged and the CA in
// use keeps serving.
type caReloader struct {
	client    kubernetes.Interface
	namespace string
	ms        meshSettings
	caCfg     ca.Config
	authority *ca.Authority
	// onChange is called, on the reloader's goroutine, after the Authority
	// holds a new CA: it republishes the bundle and reissues what was
	// signed by the old one. It may block briefly; it must not call back.
	onChange func(ctx context.Context, inter *ca.Intermediate) error
	// repair reloads this often even without an event (the intermediate's
	// renewal at two thirds of its life happens here).
	repair time.Duration
	log    *slog.Logger

	pending bool // the Authority changed but onChange has not succeeded yet
}

// Run reloads on every change of the two Secrets until ctx ends.
func (r *caReloader) Run(ctx context.Context) error {
	kick := make(chan struct{}, 1)
	signal := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if s, ok := obj.(*corev1.Secret); ok && (s.Name == r.ms.RootSecret || s.Name == r.ms.IntermediateSecret) {
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	}
	f := informers.NewSharedInformerFactoryWithOptions(r.client, 0, informers.WithNamespace(r.namespace))
	inf := f.Core().V1().Secrets().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    signal,
		UpdateFunc: func(_, obj any) { signal(obj) },
		DeleteFunc: signal,
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	repair := time.NewTicker(r.repair)
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
			r.log.Error("CA Secrets not applied; the current CA keeps serving", "err", err, "retry", retry)
			retryC = time.After(retry)
			retry = min(2*retry, time.Minute)
			continue
		}
		retry = time.Second
	}
}

// reload reads the Secrets and, when they give a CA other than the one in
// use, installs it.
func (r *caReloader) reload(ctx context.Context) error {
	inter, err := currentCA(ctx, r.client, r.namespace, r.ms, r.caCfg)
	if err != nil {
		return err
	}
	cur := r.authority.Current()
	if cur.Certificate().Equal(inter.Certificate()) && cur.Bundle().Equal(inter.Bundle()) && !r.pending {
		return nil
	}
	r.authority.Set(inter)
	r.pending = true
	r.log.Info("CA changed: now signing with a new intermediate or trusting a new bundle",
		"intermediate", ca.Fingerprint(inter.Certificate()), "bundle", ca.Fingerprints(inter.Bundle()))
	if err := r.onChange(ctx, inter); err != nil {
		return fmt.Errorf("after the CA changed: %w", err)
	}
	r.pending = false
	return nil
}

// trustedBundle reads the root Secret: its signing root and the roots the
// cluster trusts (its root, bundle.crt and a next root).
func trustedBundle(ctx context.Context, client kubernetes.Interface, ns string, ms meshSettings, td spiffeid.TrustDomain) (*ca.RootState, error) {
	st, _, err := ca.LoadRootState(ctx, client, ns, ms.RootSecret, td)
	return st, err
}

// currentCA is the intermediate the Secrets call for now. Unlike loadCA at
// start it never generates a root: a missing root Secret means the
// intermediate Secret (signed offline) is the input.
func currentCA(ctx context.Context, client kubernetes.Interface, ns string, ms meshSettings, caCfg ca.Config) (*ca.Intermediate, error) {
	td, err := spiffeid.TrustDomainFromString(ms.TrustDomain)
	if err != nil {
		return nil, err
	}
	st, err := trustedBundle(ctx, client, ns, ms, td)
	switch {
	case apierrors.IsNotFound(err):
		return ca.LoadIntermediate(ctx, client, ns, ms.IntermediateSecret, td)
	case err != nil:
		return nil, err
	}
	inter, err := ca.EnsureIntermediate(ctx, client, ns, ms.IntermediateSecret, st.Root, st.Trusted, caCfg)
	if err != nil {
		return nil, fmt.Errorf("root secret %s/%s: %w", ns, ms.RootSecret, err)
	}
	return inter, nil
}

// rootTrust returns the trusted roots of the root Secret for loadCA at
// start, so a controller restarted in the middle of a rotation keeps the
// union rather than shrinking its bundle to the signing root.
func rootTrust(ctx context.Context, client kubernetes.Interface, ns string, ms meshSettings, root *ca.Root) *ca.RootState {
	st, err := trustedBundle(ctx, client, ns, ms, root.TrustDomain)
	if err != nil || !st.Root.Certificate.Equal(root.Certificate) {
		return &ca.RootState{Root: root, Trusted: root.Bundle()}
	}
	return st
}
