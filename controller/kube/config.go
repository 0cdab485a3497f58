package kube

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/mesh"
)

// Sink receives every State the watcher builds. Update is called from the
// watcher's goroutine only, one call at a time; it may block for as long as
// generating configuration takes and must not call back into the Watcher.
// It returns the objects it skipped as invalid (the watcher reports them)
// and an error when nothing of the State could be served.
// *server.Server (controller/xds/server) implements it.
type Sink interface {
	Update(mesh.State) ([]mesh.Problem, error)
}

// ProblemNotifier is implemented by a Sink that judges the mesh again
// without a new State from the watcher (when another cluster's catalog
// changes, say). The watcher reports Problems, with its own conversion
// problems, whenever ProblemsChanged fires. Problems returns the latest
// judgement's problems and is safe to call from any goroutine.
type ProblemNotifier interface {
	Problems() []mesh.Problem
	ProblemsChanged() <-chan struct{}
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(mesh.State) ([]mesh.Problem, error)

// Update implements Sink.
func (f SinkFunc) Update(s mesh.State) ([]mesh.Problem, error) { return f(s) }

// Config configures a Watcher.
type Config struct {
	// Client and Dynamic talk to the cluster's API server.
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// MeshName is the mesh whose namespaces are watched: those labelled
	// meshfed.io/monitored-by=<MeshName>.
	MeshName string
	// Namespace is the control plane's namespace, where the MeshConfig is.
	Namespace string
	// MeshConfigName names the MeshConfig object in Namespace.
	MeshConfigName string
	// ClusterName and TrustDomain are used until a MeshConfig is found
	// (the MeshConfig's values win).
	ClusterName string
	TrustDomain string
	// LeadingDelay is how long the watcher waits before building a change
	// that follows a quiet period (no change for at least Debounce); 0
	// builds it at once. An isolated change (one EndpointSlice update)
	// therefore pays no debounce. A change arriving during that wait, or
	// within Debounce of the previous change, makes a burst.
	LeadingDelay time.Duration
	// Debounce is how long the watcher waits for a burst of changes to
	// end before building it (a burst is coalesced into one build);
	// MaxDelay bounds the wait from the first change of a burst, so a
	// steady stream of changes is built at least every MaxDelay.
	Debounce time.Duration
	MaxDelay time.Duration
	// Resync is how often the state is rebuilt and re-sent even with no
	// change (repairs anything missed); also the informers' resync period.
	Resync time.Duration
	// Sink receives each State.
	Sink Sink
	// Registerer receives the watcher's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives rejected objects and failures; nil discards.
	Logger *slog.Logger
	// Component is the source of the Events the watcher records.
	Component string
	// Informers, if set, are the controller's shared informers
	// (NewInformers), started by their owner; the watcher only adds its
	// handlers. If nil, the watcher makes and runs its own.
	Informers *Informers
	// MissingReferenceGrace is how long a problem that is only a missing
	// reference (a TrafficSplit backend or root service, or a
	// TrafficTarget's route, that exists nowhere in the federation) lasts
	// before its Warning Event: objects applied in any order, and services
	// another cluster supplies moments later (federation startup), raise
	// no Warning. Other problems are reported at once. The object is not
	// served meanwhile either way.
	MissingReferenceGrace time.Duration
}

// DefaultConfig returns a Config for mesh "meshfed" in "meshfed-system"
// that builds an isolated change at once, debounces bursts by 100 ms
// bounded at 1 s, resyncs every 5 minutes, and reports a missing
// reference after 30 s (the federation's default withdraw delay). Client,
// Dynamic and Sink must still be set.
func DefaultConfig() Config {
	return Config{
		MeshName:       "meshfed",
		Namespace:      "meshfed-system",
		MeshConfigName: "meshfed-mesh-config",
		TrustDomain:    "meshfed.local",
		LeadingDelay:   0,
		Debounce:       100 * time.Millisecond,
		MaxDelay:       time.Second,
		Resync:         5 * time.Minute,
		Component:      "meshfed-controller",

		MissingReferenceGrace: 30 * time.Second,
	}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("kube: Client is nil"))
	}
	if c.Dynamic == nil {
		errs = append(errs, errors.New("kube: Dynamic is nil"))
	}
	if c.Sink == nil {
		errs = append(errs, errors.New("kube: Sink is nil"))
	}
	if c.MeshName == "" {
		errs = append(errs, errors.New("kube: MeshName is empty"))
	}
	if c.Namespace == "" {
		errs = append(errs, errors.New("kube: Namespace is empty"))
	}
	if c.MeshConfigName == "" {
		errs = append(errs, errors.New("kube: MeshConfigName is empty"))
	}
	if c.Debounce <= 0 {
		errs = append(errs, fmt.Errorf("kube: Debounce %v: must be positive", c.Debounce))
	}
	if c.LeadingDelay < 0 || c.LeadingDelay > c.Debounce {
		errs = append(errs, fmt.Errorf("kube: LeadingDelay %v: must be between 0 and Debounce %v", c.LeadingDelay, c.Debounce))
	}
	if c.MaxDelay < c.Debounce {
		errs = append(errs, fmt.Errorf("kube: MaxDelay %v: must be at least Debounce %v", c.MaxDelay, c.Debounce))
	}
	if c.MissingReferenceGrace < 0 {
		errs = append(errs, fmt.Errorf("kube: MissingReferenceGrace %v: must not be negative", c.MissingReferenceGrace))
	}
	if c.Resync <= 0 {
		errs = append(errs, fmt.Errorf("kube: Resync %v: must be positive", c.Resync))
	}
	return errors.Join(errs...)
}

// discard is a logger that drops everything.
var discard = slog.New(slog.DiscardHandler)
