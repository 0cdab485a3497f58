package kube

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/meshfed/meshfed/mesh"
)

// LabelMonitoredBy marks a namespace as part of a mesh (the value is the
// mesh name); `meshfed namespace add` sets it.
const LabelMonitoredBy = "meshfed.io/monitored-by"

// Watcher turns the cluster's objects into mesh.States for a Sink. Create
// it with New and start it with Run.
type Watcher struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	events  *eventReporter

	factory    informers.SharedInformerFactory
	dynFactory dynamicinformer.DynamicSharedInformerFactory
	mcFactory  dynamicinformer.DynamicSharedInformerFactory

	namespaces corelisters.NamespaceLister
	services   corelisters.ServiceLister
	pods       corelisters.PodLister
	slices     discoverylisters.EndpointSliceLister
	dyn        map[schema.GroupVersionResource]cache.GenericLister
	synced     []cache.InformerSynced

	changed chan struct{}
	// firstChange is the time (UnixNano) of the first change of the
	// pending burst; 0 when none is pending.
	firstChange atomic.Int64
	ready       atomic.Bool
	acks        ackTracker
}

// New returns a Watcher for cfg. It registers its metrics and informers but
// starts nothing.
func New(cfg Config) (*Watcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = discard
	}
	w := &Watcher{
		cfg:     cfg,
		log:     log,
		changed: make(chan struct{}, 1),
		dyn:     map[schema.GroupVersionResource]cache.GenericLister{},
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	w.metrics = m
	w.acks.metrics = m
	w.factory = informers.NewSharedInformerFactory(cfg.Client, cfg.Resync)
	w.dynFactory = dynamicinformer.NewDynamicSharedInformerFactory(cfg.Dynamic, cfg.Resync)
	w.mcFactory = dynamicinformer.NewFilteredDynamicSharedInformerFactory(cfg.Dynamic, cfg.Resync, cfg.Namespace, nil)

	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.signal() },
		UpdateFunc: func(oldObj, newObj any) { w.signalUpdate(oldObj, newObj) },
		DeleteFunc: func(any) { w.signal() },
	}
	add := func(inf cache.SharedIndexInformer) error {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
		w.synced = append(w.synced, inf.HasSynced)
		return nil
	}
	core := w.factory.Core().V1()
	w.namespaces = core.Namespaces().Lister()
	w.services = core.Services().Lister()
	w.pods = core.Pods().Lister()
	w.slices = w.factory.Discovery().V1().EndpointSlices().Lister()
	for _, inf := range []cache.SharedIndexInformer{
		core.Namespaces().Informer(), core.Services().Informer(), core.Pods().Informer(),
		core.ServiceAccounts().Informer(), w.factory.Discovery().V1().EndpointSlices().Informer(),
	} {
		if err := add(inf); err != nil {
			return nil, err
		}
	}
	for _, gvr := range []schema.GroupVersionResource{TrafficTargetGVR, HTTPRouteGroupGVR, TCPRouteGVR, TrafficSplitGVR, ServiceExportGVR} {
		gi := w.dynFactory.ForResource(gvr)
		w.dyn[gvr] = gi.Lister()
		if err := add(gi.Informer()); err != nil {
			return nil, err
		}
	}
	mc := w.mcFactory.ForResource(MeshConfigGVR)
	w.dyn[MeshConfigGVR] = mc.Lister()
	if err := add(mc.Informer()); err != nil {
		return nil, err
	}
	w.events = newEventReporter(cfg, log, w.lookupUID)
	return w, nil
}

// signal records a change; the worker picks it up.
func (w *Watcher) signal() {
	w.firstChange.CompareAndSwap(0, time.Now().UnixNano())
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// signalUpdate ignores informer resyncs that changed nothing (the periodic
// resync rebuilds on its own schedule), and Pod status churn that does not
// change what the mesh reads from Pods (the ServiceAccount).
func (w *Watcher) signalUpdate(oldObj, newObj any) {
	type versioned interface{ GetResourceVersion() string }
	o, ok1 := oldObj.(versioned)
	n, ok2 := newObj.(versioned)
	if ok1 && ok2 && o.GetResourceVersion() == n.GetResourceVersion() {
		return
	}
	if op, ok := oldObj.(*corev1.Pod); ok {
		if np, ok := newObj.(*corev1.Pod); ok && op.Spec.ServiceAccountName == np.Spec.ServiceAccountName {
			return
		}
	}
	w.signal()
}

// Ready reports whether a first State has been built and accepted by the
// Sink (the controller's /readyz).
func (w *Watcher) Ready() bool { return w.ready.Load() }

// OnAck is to be wired to the xDS server's OnAck hook: it measures the time
// from a Kubernetes change to each proxy's ACK of the configuration it led
// to. It does not block.
func (w *Watcher) OnAck(proxy, typeURL, version string) { w.acks.onAck(proxy, typeURL, version) }

// Run starts the informers, waits for their caches, then builds and sends a
// State after every burst of changes and every Resync, until ctx ends. It
// returns after its goroutines have stopped.
func (w *Watcher) Run(ctx context.Context) error {
	defer w.events.shutdown()
	w.factory.Start(ctx.Done())
	w.dynFactory.Start(ctx.Done())
	w.mcFactory.Start(ctx.Done())
	defer func() {
		w.factory.Shutdown()
		w.dynFactory.Shutdown()
		w.mcFactory.Shutdown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), w.synced...) {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("kube: informer caches did not sync")
	}
	w.log.Info("kube: caches synced", "mesh", w.cfg.MeshName)
	resync := time.NewTicker(w.cfg.Resync)
	defer resync.Stop()
	w.signal()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			w.signal()
			continue
		case <-w.changed:
		}
		if !w.debounce(ctx) {
			return nil
		}
		w.rebuild()
	}
}

// debounce waits until no change has arrived for Debounce, or MaxDelay has
// passed since the first change of the burst. It reports false if ctx ended.
func (w *Watcher) debounce(ctx context.Context) bool {
	first := time.Unix(0, w.firstChange.Load())
	quiet := time.NewTimer(w.cfg.Debounce)
	defer quiet.Stop()
	deadline := time.NewTimer(time.Until(first.Add(w.cfg.MaxDelay)))
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return true
		case <-quiet.C:
			return true
		case <-w.changed:
			quiet.Reset(w.cfg.Debounce)
		}
	}
}

// rebuild reads the listers into a State, sends it and reports problems.
func (w *Watcher) rebuild() {
	changeAt := w.firstChange.Swap(0)
	start := time.Now()
	state, problems := w.build()
	sinkProblems, err := w.cfg.Sink.Update(state)
	w.metrics.generation.Observe(time.Since(start).Seconds())
	if err != nil {
		w.metrics.updates.WithLabelValues("error").Inc()
		w.log.Error("kube: configuration not published; proxies keep their last configuration", "err", err)
	} else {
		w.metrics.updates.WithLabelValues("ok").Inc()
		w.ready.Store(true)
		if changeAt != 0 {
			w.acks.published(time.Unix(0, changeAt))
		}
	}
	problems = append(problems, sinkProblems...)
	w.events.report(problems)
	w.metrics.setRejected(problems)
}

// build reads every lister into one State. Objects that cannot be converted
// are left out and returned as problems.
func (w *Watcher) build() (mesh.State, []mesh.Problem) {
	var problems []mesh.Problem
	problem := func(kind mesh.ObjectKind, ns, name string, err error) {
		problems = append(problems, mesh.Problem{Kind: kind, Namespace: ns, Name: name, Err: err})
	}
	settings := mesh.Settings{MeshName: w.cfg.MeshName, ClusterName: w.cfg.ClusterName, TrustDomain: w.cfg.TrustDomain, Network: "default"}
	if obj, err := w.dyn[MeshConfigGVR].ByNamespace(w.cfg.Namespace).Get(w.cfg.MeshConfigName); err == nil {
		if s, err := settingsFrom(settings, obj.(*unstructured.Unstructured)); err != nil {
			problem(mesh.ObjectSettings, w.cfg.Namespace, w.cfg.MeshConfigName, err)
		} else {
			settings = s
		}
	}
	st := mesh.State{Settings: settings}

	members := map[string]bool{}
	if nss, err := w.namespaces.List(labels.SelectorFromSet(labels.Set{LabelMonitoredBy: w.cfg.MeshName})); err == nil {
		for _, ns := range nss {
			if ns.DeletionTimestamp == nil {
				members[ns.Name] = true
			}
		}
	}
	podInfo := func(ns, name string) (PodInfo, bool) {
		p, err := w.pods.Pods(ns).Get(name)
		if err != nil {
			return PodInfo{}, false
		}
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		return PodInfo{ServiceAccount: sa}, true
	}
	svcs, _ := w.services.List(labels.Everything())
	for _, svc := range svcs {
		if !members[svc.Namespace] || svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name})
		slices, _ := w.slices.EndpointSlices(svc.Namespace).List(sel)
		s, err := ServiceFrom(settings, svc, slices, podInfo)
		if err != nil {
			problem(mesh.ObjectService, svc.Namespace, svc.Name, err)
			continue
		}
		st.Services = append(st.Services, s)
	}
	sort.Slice(st.Services, func(i, j int) bool {
		a, b := st.Services[i], st.Services[j]
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
	})

	each := func(gvr schema.GroupVersionResource, kind mesh.ObjectKind, f func(*unstructured.Unstructured) error) {
		objs, _ := w.dyn[gvr].List(labels.Everything())
		sort.Slice(objs, func(i, j int) bool {
			a, b := objs[i].(*unstructured.Unstructured), objs[j].(*unstructured.Unstructured)
			return a.GetNamespace() < b.GetNamespace() || a.GetNamespace() == b.GetNamespace() && a.GetName() < b.GetName()
		})
		for _, o := range objs {
			u := o.(*unstructured.Unstructured)
			if !members[u.GetNamespace()] {
				continue
			}
			if err := f(u); err != nil {
				problem(kind, u.GetNamespace(), u.GetName(), err)
			}
		}
	}
	each(HTTPRouteGroupGVR, mesh.ObjectHTTPRouteGroup, func(u *unstructured.Unstructured) error {
		g, err := HTTPRouteGroupFrom(u)
		if err == nil {
			st.HTTPRouteGroups = append(st.HTTPRouteGroups, g)
		}
		return err
	})
	each(TCPRouteGVR, mesh.ObjectTCPRoute, func(u *unstructured.Unstructured) error {
		r, err := TCPRouteFrom(u)
		if err == nil {
			st.TCPRoutes = append(st.TCPRoutes, r)
		}
		return err
	})
	each(TrafficTargetGVR, mesh.ObjectTrafficTarget, func(u *unstructured.Unstructured) error {
		t, err := TrafficTargetFrom(settings.TrustDomain, u)
		if err == nil {
			st.TrafficTargets = append(st.TrafficTargets, t)
		}
		return err
	})
	each(TrafficSplitGVR, mesh.ObjectTrafficSplit, func(u *unstructured.Unstructured) error {
		t, err := TrafficSplitFrom(u)
		if err == nil {
			st.TrafficSplits = append(st.TrafficSplits, t)
		}
		return err
	})
	each(ServiceExportGVR, "serviceexport", func(u *unstructured.Unstructured) error {
		st.Exports = append(st.Exports, mesh.Export{Namespace: u.GetNamespace(), Name: u.GetName()})
		return nil
	})
	return st, problems
}

// lookupUID finds the UID of the object a problem names, so that its Event
// shows up in `kubectl describe`.
func (w *Watcher) lookupUID(gvr schema.GroupVersionResource, ns, name string) (string, bool) {
	if gvr.Group == "" && gvr.Resource == "services" {
		s, err := w.services.Services(ns).Get(name)
		if err != nil {
			return "", false
		}
		return string(s.UID), true
	}
	l, ok := w.dyn[gvr]
	if !ok {
		return "", false
	}
	o, err := l.ByNamespace(ns).Get(name)
	if err != nil {
		return "", false
	}
	return string(o.(*unstructured.Unstructured).GetUID()), true
}

// ackTracker measures change → ACK times. Its methods are called from the
// worker (published) and from xDS stream goroutines (onAck).
type ackTracker struct {
	metrics *metrics
	mu      sync.Mutex
	last    map[string]string // proxy|type → last version ACKed
	change  time.Time         // change behind the latest published State
	slowest time.Duration     // slowest ACK since then
}

func (a *ackTracker) published(change time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.change, a.slowest = change, 0
}

func (a *ackTracker) onAck(proxy, typeURL, version string) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		a.last = map[string]string{}
	}
	key := proxy + "|" + typeURL
	prev, seen := a.last[key]
	a.last[key] = version
	// The first ACK of a proxy is its connection, not a change reaching it.
	if !seen || prev == version || a.change.IsZero() {
		return
	}
	d := now.Sub(a.change)
	a.metrics.changeToAck.Observe(d.Seconds())
	if d > a.slowest {
		a.slowest = d
		a.metrics.lastChangeToAck.Set(d.Seconds())
	}
}
