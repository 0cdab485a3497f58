// Package rotation rotates a federation's root CA by bundle union, one
// phase at a time, across every cluster, without a failed handshake
// (docs/certificates.md): add (every cluster trusts old and new roots),
// reissue (every intermediate is reissued under the new root), finish (the
// old root is dropped). It works on each cluster's CA Secrets through the
// cluster's API server and waits for each controller to apply a phase (its
// published bundle and intermediate); `meshfed certificate` is its command
// line.
package rotation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/trust/ca"
)

// FileWatcherRefresh bounds how long after the agent wrote a renewed SVID
// a proxyless workload's grpc-go file_watcher has it in use:
// controller/bootstrap's default refresh is 10 s; a minute leaves room for
// workloads whose bootstrap sets a longer one.
const FileWatcherRefresh = time.Minute

// DefaultTimeout is how long a phase waits for each controller to apply
// it (`meshfed certificate rotate --timeout`): a running controller applies
// a change of its CA Secrets within seconds.
const DefaultTimeout = 2 * time.Minute

// ClusterConfig says where one cluster's CA is.
type ClusterConfig struct {
	// Name is the cluster's name (MeshConfig spec.clusterName).
	Name   string
	Client kubernetes.Interface
	// Namespace is the control plane's; RootSecret, IntermediateSecret and
	// BundleConfigMap are there.
	Namespace                                       string
	RootSecret, IntermediateSecret, BundleConfigMap string
	TrustDomain                                     spiffeid.TrustDomain
	// SVIDTTL is the cluster's workload certificate lifetime: how long a
	// phase takes to settle in every workload.
	SVIDTTL time.Duration
}

// Open reads a cluster's CA state: its root Secret, or its intermediate
// Secret when it holds no root key.
func Open(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	c := &Cluster{client: cfg.Client, name: cfg.Name, td: cfg.TrustDomain, rootSecret: cfg.RootSecret, interSecret: cfg.IntermediateSecret,
		svidTTL: cfg.SVIDTTL, namespace: cfg.Namespace, bundleConfigMap: cfg.BundleConfigMap}
	if err := c.load(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Cluster is one cluster's CA as the rotation sees it.
type Cluster struct {
	client                  kubernetes.Interface
	name                    string
	td                      spiffeid.TrustDomain
	rootSecret, interSecret string
	svidTTL                 time.Duration
	// keeper: the cluster holds the root key (its root Secret). A member
	// without it (meshfed cluster join) has only its intermediate Secret:
	// state is read from there (Root without a key, the intermediate's
	// issuer; Trusted, its bundle) and secret is the intermediate Secret.
	keeper                     bool
	state                      *ca.RootState
	secret                     *corev1.Secret
	namespace, bundleConfigMap string
}

// String is the cluster's name.
func (c *Cluster) String() string { return c.name }

// load reads the cluster's root Secret, or its intermediate Secret when it
// holds no root key.
func (c *Cluster) load(ctx context.Context) error {
	st, s, err := ca.LoadRootState(ctx, c.client, c.namespace, c.rootSecret, c.td)
	if apierrors.IsNotFound(err) {
		return c.loadMember(ctx)
	}
	if err != nil {
		return fmt.Errorf("cluster %s: %w", c.name, err)
	}
	c.keeper, c.state, c.secret = true, st, s
	return nil
}

// loadMember reads the intermediate Secret of a cluster without the root
// key: the root its intermediate chains to, the roots it trusts and the
// rotation annotations.
func (c *Cluster) loadMember(ctx context.Context) error {
	s, err := c.client.CoreV1().Secrets(c.namespace).Get(ctx, c.interSecret, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("cluster %s: neither root Secret %s nor intermediate Secret %s/%s: %w", c.name, c.rootSecret, c.namespace, c.interSecret, err)
	}
	inter, err := ca.ParseIntermediate(c.td, s.Data[ca.IntermediateCertKey], s.Data[ca.IntermediateKeyKey], s.Data[ca.BundleKey], time.Now())
	if err != nil {
		return fmt.Errorf("cluster %s: intermediate Secret %s/%s: %w", c.name, c.namespace, c.interSecret, err)
	}
	root, err := ca.IssuerRoot(inter, inter.Bundle())
	if err != nil {
		return fmt.Errorf("cluster %s: intermediate Secret %s/%s: %w", c.name, c.namespace, c.interSecret, err)
	}
	st := &ca.RootState{Root: &ca.Root{TrustDomain: c.td, Certificate: root}, Trusted: inter.Bundle(), Phase: s.Annotations[ca.RotationPhaseAnnotation]}
	if t := s.Annotations[ca.RotationTimeAnnotation]; t != "" {
		if st.AppliedAt, err = time.Parse(time.RFC3339, t); err != nil {
			return fmt.Errorf("cluster %s: intermediate Secret %s/%s: annotation %s %q: %w", c.name, c.namespace, c.interSecret, ca.RotationTimeAnnotation, t, err)
		}
	}
	c.keeper, c.state, c.secret = false, st, s
	return nil
}

// nextRootCert is the root the cluster will sign with after the reissue
// phase: the keeper's next root; for a member in the add phase, the root it
// trusts besides the one it signs with.
func (c *Cluster) nextRootCert() *x509.Certificate {
	if c.state.Next != nil {
		return c.state.Next.Certificate
	}
	if !c.keeper && c.stage() == ca.PhaseAdd {
		for _, r := range c.state.Trusted.X509Authorities() {
			if !r.Equal(c.state.Root.Certificate) {
				return r
			}
		}
	}
	return c.state.Root.Certificate
}

// stage is where the cluster's root Secret is in a rotation: "" (not
// rotating), PhaseAdd (a next root waits), PhaseReissue (signing with the
// new root, still trusting the old).
func (c *Cluster) stage() string {
	if !c.keeper {
		// A member's phase is the annotation the rotation wrote with its
		// intermediate Secret, while it trusts more than one root.
		if len(c.state.Trusted.X509Authorities()) > 1 && (c.state.Phase == ca.PhaseAdd || c.state.Phase == ca.PhaseReissue) {
			return c.state.Phase
		}
		return ""
	}
	switch {
	case c.state.Next != nil:
		return ca.PhaseAdd
	case c.state.Rotating():
		return ca.PhaseReissue
	}
	return ""
}

// settle is how long after a phase was applied every workload of the
// cluster is sure to hold what it handed out: every SVID issued before it
// has expired (agents renew at half life, so most turn over in half that),
// and grpc-go's file_watcher has re-read the files.
func (c *Cluster) settle() time.Duration { return c.svidTTL + FileWatcherRefresh }

// update rewrites the root Secret (a member's intermediate Secret) with change applied and the phase
// annotation set (the applied-at time cleared until the controller confirms).
func (c *Cluster) update(ctx context.Context, phase string, change func(data map[string][]byte)) error {
	s := c.secret.DeepCopy()
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	change(s.Data)
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[ca.RotationPhaseAnnotation] = phase
	delete(s.Annotations, ca.RotationTimeAnnotation)
	if _, err := c.client.CoreV1().Secrets(c.namespace).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("cluster %s: Secret %s/%s: %w", c.name, c.namespace, c.secret.Name, err)
	}
	return c.load(ctx)
}

// confirm records that the cluster's controller applied the phase.
func (c *Cluster) confirm(ctx context.Context, phase string) error {
	if c.state.Phase == phase && !c.state.AppliedAt.IsZero() {
		return nil
	}
	s := c.secret.DeepCopy()
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[ca.RotationPhaseAnnotation] = phase
	s.Annotations[ca.RotationTimeAnnotation] = time.Now().UTC().Format(time.RFC3339)
	if _, err := c.client.CoreV1().Secrets(c.namespace).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("cluster %s: Secret %s/%s: %w", c.name, c.namespace, c.secret.Name, err)
	}
	return c.load(ctx)
}

// caView is what a cluster's controller has applied: the bundle it
// published and the root its intermediate chains to.
type caView struct {
	published *x509bundle.Bundle
	inter     *ca.Intermediate
	issuer    *x509.Certificate
	err       error
}

func (c *Cluster) view(ctx context.Context) caView {
	var v caView
	cm, err := c.client.CoreV1().ConfigMaps(c.namespace).Get(ctx, c.bundleConfigMap, metav1.GetOptions{})
	if err != nil {
		v.err = err
		return v
	}
	if v.published, err = ca.ParseBundle(c.td, []byte(cm.Data[ca.BundleKey]), time.Now()); err != nil {
		v.err = fmt.Errorf("configmap %s/%s: %w", c.namespace, c.bundleConfigMap, err)
		return v
	}
	if v.inter, err = ca.LoadIntermediate(ctx, c.client, c.namespace, c.interSecret, c.td); err != nil {
		v.err = err
		return v
	}
	v.issuer, v.err = ca.IssuerRoot(v.inter, v.inter.Bundle())
	return v
}

// waitApplied polls until the cluster's controller publishes want as its
// bundle and signs with an intermediate under issuer.
func (c *Cluster) waitApplied(ctx context.Context, want *x509bundle.Bundle, issuer *x509.Certificate, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		v := c.view(ctx)
		if v.err == nil && sameRoots(v.published, want) && sameRoots(v.inter.Bundle(), want) && v.issuer.Equal(issuer) {
			return nil
		}
		why := "bundle or intermediate not updated yet"
		if v.err != nil {
			why = v.err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster %s: the controller has not applied the change within %v (%s); is meshfed-controller running? its log says why", c.name, timeout, why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// sameRoots compares bundles as sets of roots, in any order.
func sameRoots(a, b *x509bundle.Bundle) bool {
	if len(a.X509Authorities()) != len(b.X509Authorities()) {
		return false
	}
	for _, r := range a.X509Authorities() {
		if !b.HasX509Authority(r) {
			return false
		}
	}
	return true
}

// PrintStatus writes a table of each cluster's rotation phase, signing,
// next and trusted roots, the bundle its controller published and the root
// its intermediate chains to. What cannot be read is shown as "?" or the
// error, so the table is printed whatever state the clusters are in.
func PrintStatus(ctx context.Context, w io.Writer, clusters []*Cluster) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tPHASE\tSIGNING ROOT\tNEXT ROOT\tTRUSTED (root Secret)\tPUBLISHED BUNDLE\tINTERMEDIATE ISSUER\tSVID TTL")
	for _, c := range clusters {
		phase := c.state.Phase
		if phase == "" {
			phase = "-"
		}
		if c.state.AppliedAt.IsZero() && c.state.Phase != "" {
			phase += " (not confirmed)"
		} else if !c.state.AppliedAt.IsZero() {
			phase += " at " + c.state.AppliedAt.Local().Format(time.TimeOnly)
		}
		next := "-"
		if c.state.Next != nil {
			next = ca.Fingerprint(c.state.Next.Certificate)
		}
		v := c.view(ctx)
		published, issuer := "?", "?"
		if v.published != nil {
			published = strings.Join(ca.Fingerprints(v.published), ",")
		}
		if v.issuer != nil {
			issuer = ca.Fingerprint(v.issuer)
		} else if v.err != nil {
			issuer = "error: " + v.err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%v\n", c.name, phase, ca.Fingerprint(c.state.Root.Certificate), next,
			strings.Join(ca.Fingerprints(c.state.Trusted), ","), published, issuer, c.svidTTL)
	}
	tw.Flush()
}

// Rotation runs one phase over the federation's clusters.
type Rotation struct {
	clusters []*Cluster
	wait     bool
	timeout  time.Duration
	out      io.Writer
}

// Options tune a Rotation.
type Options struct {
	// Wait waits until the previous phase has settled in every workload
	// instead of refusing to start the next one.
	Wait bool
	// Timeout bounds the wait for each controller to apply a phase.
	// Default DefaultTimeout.
	Timeout time.Duration
	// Out receives a line per step.
	Out io.Writer
}

// New returns a Rotation over clusters (every cluster of the federation).
func New(clusters []*Cluster, o Options) (*Rotation, error) {
	if len(clusters) == 0 {
		return nil, errors.New("rotation: no clusters")
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return &Rotation{clusters: clusters, wait: o.Wait, timeout: o.Timeout, out: o.Out}, nil
}

// Run runs phase: ca.PhaseAdd, ca.PhaseReissue or ca.PhaseFinish.
func (r *Rotation) Run(ctx context.Context, phase string) error {
	switch phase {
	case ca.PhaseAdd:
		return r.Add(ctx)
	case ca.PhaseReissue:
		return r.Reissue(ctx)
	case ca.PhaseFinish:
		return r.Finish(ctx)
	}
	return fmt.Errorf("--phase %q: want add, reissue or finish", phase)
}

// sameRoot checks that every cluster signs with one root (a federation).
func (r *Rotation) sameRoot(get func(*Cluster) *x509.Certificate, what string) error {
	first := get(r.clusters[0])
	for _, c := range r.clusters[1:] {
		if !get(c).Equal(first) {
			return fmt.Errorf("clusters %s and %s have different %s (%s, %s): are they one federation?", r.clusters[0], c,
				what, ca.Fingerprint(first), ca.Fingerprint(get(c)))
		}
	}
	return nil
}

// settled returns nil once every cluster's previous phase was applied long
// enough ago for every workload to hold what it handed out, waiting for it
// with --wait.
func (r *Rotation) settled(ctx context.Context, prev, next string) error {
	var ready time.Time
	var longest time.Duration
	for _, c := range r.clusters {
		if c.state.Phase == prev && c.state.AppliedAt.IsZero() {
			return fmt.Errorf("cluster %s: --phase=%s was not confirmed (its controller had not applied it); run --phase=%s again", c, prev, prev)
		}
		if c.state.Phase != prev {
			continue // already past prev
		}
		longest = max(longest, c.settle())
	}
	for _, c := range r.clusters {
		if c.state.Phase == prev {
			ready = later(ready, c.state.AppliedAt.Add(longest))
		}
	}
	left := time.Until(ready)
	if left <= 0 {
		return nil
	}
	if !r.wait {
		return fmt.Errorf("too early for --phase=%s: workloads may still hold certificates from before --phase=%s until %s (the longest SVID lifetime, %v, plus %v for grpc-go's file watcher); run it then, or pass --wait",
			next, prev, ready.Local().Format(time.DateTime), longest-FileWatcherRefresh, FileWatcherRefresh)
	}
	fmt.Fprintf(r.out, "waiting %v, until %s, for every workload to renew after --phase=%s\n", left.Round(time.Second), ready.Local().Format(time.TimeOnly), prev)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(left):
		return nil
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Add makes a new root (once: a re-run takes it from the clusters that
// have it) and has every cluster trust it beside the old one: the keepers
// get it with its key as their next root, the members only its
// certificate in their bundle. It returns when every controller publishes
// the union.
func (r *Rotation) Add(ctx context.Context) error {
	for _, c := range r.clusters {
		if c.stage() == ca.PhaseReissue {
			return fmt.Errorf("cluster %s already signs with the new root (--phase=reissue ran); next is --phase=finish", c)
		}
	}
	if err := r.sameRoot(func(c *Cluster) *x509.Certificate { return c.state.Root.Certificate }, "signing roots"); err != nil {
		return err
	}
	// The next root is made once: a re-run after a partial add takes it
	// from the clusters that have it.
	var next *ca.Root
	for _, c := range r.clusters {
		if c.state.Next == nil {
			continue
		}
		if next != nil && !next.Certificate.Equal(c.state.Next.Certificate) {
			return fmt.Errorf("cluster %s waits for a different next root (%s) than another cluster (%s); remove %s and %s from the root Secrets and run --phase=add again",
				c, ca.Fingerprint(c.state.Next.Certificate), ca.Fingerprint(next.Certificate), ca.NextRootCertKey, ca.NextRootKeyKey)
		}
		next = c.state.Next
	}
	if r.keeper() == nil {
		return errors.New("no cluster named holds the root key (root Secret): name the cluster that keeps it with --contexts/--kubeconfigs; with a root kept offline, sign new intermediates there (docs/certificates.md)")
	}
	if next == nil {
		root := r.clusters[0].state.Root
		var err error
		if next, err = ca.GenerateRoot(root.TrustDomain, ca.DefaultConfig().RootTTL); err != nil {
			return err
		}
		fmt.Fprintf(r.out, "generated the new root %s\n", ca.Fingerprint(next.Certificate))
	}
	keyPEM, err := next.KeyPEM()
	if err != nil {
		return err
	}
	// Keepers first: a re-run after a partial add finds the next root there.
	for _, c := range r.ordered() {
		if c.state.Next != nil || (!c.keeper && c.stage() == ca.PhaseAdd) {
			if !c.state.Trusted.HasX509Authority(next.Certificate) {
				return fmt.Errorf("cluster %s waits for a different next root than %s; restore its bundle and run --phase=add again", c, ca.Fingerprint(next.Certificate))
			}
			continue
		}
		union, err := ca.Union(c.state.Trusted, next.Bundle())
		if err != nil {
			return fmt.Errorf("cluster %s: %w", c, err)
		}
		if !c.keeper {
			// Only the new root's certificate: the key stays with the keepers.
			if err := c.update(ctx, ca.PhaseAdd, func(d map[string][]byte) {
				d[ca.BundleKey] = ca.EncodeCertificatesPEM(union.X509Authorities())
			}); err != nil {
				return err
			}
			continue
		}
		if err := c.update(ctx, ca.PhaseAdd, func(d map[string][]byte) {
			d[ca.NextRootCertKey], d[ca.NextRootKeyKey] = next.CertificatePEM(), keyPEM
			d[ca.RootBundleKey] = ca.EncodeCertificatesPEM(union.X509Authorities())
		}); err != nil {
			return err
		}
	}
	for _, c := range r.clusters {
		if err := c.waitApplied(ctx, c.state.Trusted, c.state.Root.Certificate, r.timeout); err != nil {
			return err
		}
		if err := c.confirm(ctx, ca.PhaseAdd); err != nil {
			return err
		}
		fmt.Fprintf(r.out, "%s: trusts %s; still signs with %s\n", c, strings.Join(ca.Fingerprints(c.state.Trusted), " and "), ca.Fingerprint(c.state.Root.Certificate))
	}
	return r.nextStep(ca.PhaseAdd, ca.PhaseReissue)
}

// keeper returns a cluster that holds the root key, or nil.
func (r *Rotation) keeper() *Cluster {
	for _, c := range r.clusters {
		if c.keeper {
			return c
		}
	}
	return nil
}

// ordered returns the clusters with those holding the root key first.
func (r *Rotation) ordered() []*Cluster {
	out := make([]*Cluster, 0, len(r.clusters))
	for _, keepers := range []bool{true, false} {
		for _, c := range r.clusters {
			if c.keeper == keepers {
				out = append(out, c)
			}
		}
	}
	return out
}

// reissueMember signs a new intermediate for a member without the root key
// with root (held in this process's memory only) and writes it into the
// member's intermediate Secret, trusting what it trusts now.
func (c *Cluster) reissueMember(ctx context.Context, root *ca.Root) error {
	inter, err := root.NewIntermediate(c.name, ca.DefaultConfig().IntermediateTTL, c.state.Trusted)
	if err != nil {
		return fmt.Errorf("cluster %s: %w", c, err)
	}
	keyPEM, err := inter.KeyPEM()
	if err != nil {
		return err
	}
	return c.update(ctx, ca.PhaseReissue, func(d map[string][]byte) {
		d[ca.IntermediateCertKey], d[ca.IntermediateKeyKey] = inter.ChainPEM(), keyPEM
		d[ca.BundleKey] = inter.BundlePEM()
	})
}

func (r *Rotation) nextStep(done, next string) error {
	var at time.Time
	for _, c := range r.clusters {
		at = later(at, c.state.AppliedAt.Add(c.settle()))
	}
	fmt.Fprintf(r.out, "--phase=%s applied in every cluster. Run --phase=%s at or after %s (or now with --wait).\n", done, next, at.Local().Format(time.DateTime))
	return nil
}

// Reissue, once the add phase has settled in every workload, has every
// cluster sign under the new root: a keeper's next root becomes its signing
// root (its controller reissues its intermediate), and a member gets an
// intermediate signed in this process's memory. Both roots stay trusted.
// It returns when every controller signs under the new root.
func (r *Rotation) Reissue(ctx context.Context) error {
	for _, c := range r.clusters {
		if c.stage() == "" {
			return fmt.Errorf("cluster %s has no new root to reissue under; run --phase=add first", c)
		}
	}
	if err := r.settled(ctx, ca.PhaseAdd, ca.PhaseReissue); err != nil {
		return err
	}
	// After add every cluster waits for the same next root; after a partial
	// reissue, some already sign with it.
	if err := r.sameRoot((*Cluster).nextRootCert, "new roots"); err != nil {
		return err
	}
	// The new root with its key, from a keeper (before or after its own
	// reissue), signs the members' intermediates in this process's memory.
	keeper := r.keeper()
	if keeper == nil {
		return errors.New("no cluster named holds the root key (root Secret): name the cluster that keeps it with --contexts/--kubeconfigs")
	}
	signer := keeper.state.Next
	if signer == nil {
		signer = keeper.state.Root
	}
	for _, c := range r.ordered() {
		if c.stage() != ca.PhaseAdd {
			continue
		}
		if !c.keeper {
			if err := c.reissueMember(ctx, signer); err != nil {
				return err
			}
			continue
		}
		next, trusted := c.state.Next, c.state.Trusted
		keyPEM, err := next.KeyPEM()
		if err != nil {
			return err
		}
		if err := c.update(ctx, ca.PhaseReissue, func(d map[string][]byte) {
			d[ca.RootCertKey], d[ca.RootKeyKey] = next.CertificatePEM(), keyPEM
			d[ca.RootBundleKey] = ca.EncodeCertificatesPEM(trusted.X509Authorities())
			delete(d, ca.NextRootCertKey)
			delete(d, ca.NextRootKeyKey)
		}); err != nil {
			return err
		}
	}
	for _, c := range r.clusters {
		if err := c.waitApplied(ctx, c.state.Trusted, c.state.Root.Certificate, r.timeout); err != nil {
			return err
		}
		if err := c.confirm(ctx, ca.PhaseReissue); err != nil {
			return err
		}
		fmt.Fprintf(r.out, "%s: intermediate reissued under %s; trusts %s\n", c, ca.Fingerprint(c.state.Root.Certificate), strings.Join(ca.Fingerprints(c.state.Trusted), " and "))
	}
	return r.nextStep(ca.PhaseReissue, ca.PhaseFinish)
}

// Finish, once the reissue phase has settled in every workload, drops the
// old root from every cluster's trusted set. It returns when every
// controller publishes the new root alone; a re-run after it changes
// nothing.
func (r *Rotation) Finish(ctx context.Context) error {
	rotating := false
	for _, c := range r.clusters {
		switch c.stage() {
		case ca.PhaseAdd:
			return fmt.Errorf("cluster %s still signs with the old root; run --phase=reissue first", c)
		case ca.PhaseReissue:
			rotating = true
		default:
			if c.state.Phase != ca.PhaseFinish {
				return fmt.Errorf("cluster %s is not rotating its root; start with --phase=add", c)
			}
		}
	}
	if err := r.sameRoot(func(c *Cluster) *x509.Certificate { return c.state.Root.Certificate }, "signing roots"); err != nil {
		return err
	}
	if rotating {
		if err := r.settled(ctx, ca.PhaseReissue, ca.PhaseFinish); err != nil {
			return err
		}
	}
	for _, c := range r.clusters {
		if c.stage() != ca.PhaseReissue {
			continue
		}
		if !c.keeper {
			only := ca.EncodeCertificatesPEM([]*x509.Certificate{c.state.Root.Certificate})
			if err := c.update(ctx, ca.PhaseFinish, func(d map[string][]byte) { d[ca.BundleKey] = only }); err != nil {
				return err
			}
			continue
		}
		if err := c.update(ctx, ca.PhaseFinish, func(d map[string][]byte) { delete(d, ca.RootBundleKey) }); err != nil {
			return err
		}
	}
	for _, c := range r.clusters {
		if err := c.waitApplied(ctx, c.state.Root.Bundle(), c.state.Root.Certificate, r.timeout); err != nil {
			return err
		}
		if err := c.confirm(ctx, ca.PhaseFinish); err != nil {
			return err
		}
		fmt.Fprintf(r.out, "%s: trusts only %s\n", c, ca.Fingerprint(c.state.Root.Certificate))
	}
	var by time.Time
	for _, c := range r.clusters {
		by = later(by, c.state.AppliedAt.Add(c.settle()))
	}
	fmt.Fprintf(r.out, "Rotation finished. Workloads drop the old root from their bundle files at their next renewal, by %s.\n", by.Local().Format(time.DateTime))
	return nil
}
