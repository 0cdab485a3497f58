// Package bundle copies the mesh's trust bundle (the roots every meshed
// workload verifies the controller and its peers with) into a ConfigMap in
// every namespace of the mesh, where Pods mount it (meshfed-ca-bundle,
// key ca.crt). It only updates them: `meshfed namespace add` creates each
// one, and the controller's RBAC allows no more. It owns only those ConfigMaps: the bundle itself comes from
// trust/ca, the namespaces from `meshfed namespace add`.
package bundle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/trust/ca"
)

// Config configures a Publisher.
type Config struct {
	// Client talks to the cluster's API server.
	Client kubernetes.Interface
	// MeshName selects the namespaces: those labelled
	// meshfed.io/monitored-by=<MeshName>.
	MeshName string
	// ConfigMapName is the ConfigMap written in each namespace.
	// Default "meshfed-ca-bundle".
	ConfigMapName string
	// Bundle returns the current trust bundle. It is called from the
	// Publisher's worker goroutine and must not block.
	Bundle func() *x509bundle.Bundle
	// Resync rewrites every namespace's ConfigMap this often, repairing
	// edits. Default 5 minutes.
	Resync time.Duration
	// Log receives one line per failed write; nil discards.
	Log *slog.Logger
}

// DefaultConfig returns the defaults; Client, MeshName and Bundle must be
// set.
func DefaultConfig() Config {
	return Config{ConfigMapName: "meshfed-ca-bundle", Resync: 5 * time.Minute}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("bundle: Client is required"))
	}
	if c.MeshName == "" {
		errs = append(errs, errors.New("bundle: MeshName is required"))
	}
	if c.ConfigMapName == "" {
		errs = append(errs, errors.New("bundle: ConfigMapName is required"))
	}
	if c.Bundle == nil {
		errs = append(errs, errors.New("bundle: Bundle is required"))
	}
	if c.Resync <= 0 {
		errs = append(errs, fmt.Errorf("bundle: Resync %s must be positive", c.Resync))
	}
	return errors.Join(errs...)
}

// Publisher keeps the ConfigMaps. One worker goroutine writes them.
type Publisher struct {
	cfg   Config
	queue workqueue.TypedRateLimitingInterface[string]
	nsInf cache.SharedIndexInformer
	f     informers.SharedInformerFactory
}

// New returns a Publisher; start it with Run.
func New(cfg Config) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	f := informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = deploy.LabelMonitoredBy + "=" + cfg.MeshName
		}))
	p := &Publisher{
		cfg: cfg,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "meshfed-bundle"}),
		nsInf: f.Core().V1().Namespaces().Informer(),
		f:     f,
	}
	_, err := p.nsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.enqueue(obj) },
		UpdateFunc: func(_, obj any) { p.enqueue(obj) },
	})
	return p, err
}

func (p *Publisher) enqueue(obj any) {
	if ns, ok := obj.(*corev1.Namespace); ok {
		p.queue.Add(ns.Name)
	}
}

// Notify asks for every namespace's ConfigMap to be rewritten, e.g. after
// the bundle changed (root rotation). It does not block.
func (p *Publisher) Notify() {
	for _, name := range p.nsInf.GetStore().ListKeys() {
		p.queue.Add(name)
	}
}

// Run writes the ConfigMaps until ctx ends and returns after its
// goroutines have stopped.
func (p *Publisher) Run(ctx context.Context) error {
	defer p.queue.ShutDown()
	p.f.Start(ctx.Done())
	defer p.f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), p.nsInf.HasSynced) {
		return ctx.Err()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for p.next(ctx) {
		}
	}()
	<-ctx.Done()
	p.queue.ShutDown()
	<-done
	return nil
}

func (p *Publisher) next(ctx context.Context) bool {
	ns, quit := p.queue.Get()
	if quit {
		return false
	}
	defer p.queue.Done(ns)
	err := ca.UpdateBundle(ctx, p.cfg.Client, ns, p.cfg.ConfigMapName, p.cfg.Bundle())
	if apierrors.IsNotFound(err) {
		// The controller may not create ConfigMaps outside its namespace
		// (its RBAC names this one for get and update only), nor watch
		// them: it tries again with growing delays (the namespace may
		// have been labelled just before its ConfigMap was created), and
		// says so once.
		if p.queue.NumRequeues(ns) == 0 {
			p.cfg.Log.Warn("trust bundle ConfigMap missing: run `meshfed namespace add "+ns+"` to create it; retrying",
				"namespace", ns, "configmap", p.cfg.ConfigMapName)
		}
		p.queue.AddRateLimited(ns)
		return true
	}
	if err != nil {
		if ctx.Err() == nil {
			p.cfg.Log.Warn("trust bundle not written", "namespace", ns, "configmap", p.cfg.ConfigMapName, "err", err)
		}
		p.queue.AddRateLimited(ns)
		return true
	}
	p.queue.Forget(ns)
	return true
}
