package kube

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	corelisters "k8s.io/client-go/listers/core/v1"
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

	// informers are the caches read; own says the watcher runs them.
	informers *Informers
	own       bool

	namespaces corelisters.NamespaceLister
	services   corelisters.ServiceLister
	pods       corelisters.PodLister
	slices     cache.Indexer // EndpointSlices, indexed by indexByService
	dyn        map[schema.GroupVersionResource]cache.GenericLister
	synced     []cache.InformerSynced

	changed chan struct{}
	// mu guards pending, written by informer handlers and read by the
	// worker.
	mu      sync.Mutex
	pending pending
	ready   atomic.Bool
	acks    ackTracker

	// converted is the worker's cache of converted Services.
	converted *serviceCache
	// The worker's last conversion problems and the Sink's last problems,
	// reported together.
	convProblems, sinkProblems []mesh.Problem
}

// pending is what the informer handlers tell the worker about the changes
// it has not built yet.
type pending struct {
	// first is the time of the first change not yet built; zero when none.
	first time.Time
	// last is the time of the latest change, built or not.
	last time.Time
	// quiet is whether the change at first came after at least Debounce
	// without changes (it is built after LeadingDelay, not Debounce).
	quiet bool
	changes
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
		cfg:       cfg,
		log:       log,
		changed:   make(chan struct{}, 1),
		dyn:       map[schema.GroupVersionResource]cache.GenericLister{},
		converted: newServiceCache(),
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	w.metrics = m
	w.acks.metrics = m
	w.informers, w.own = cfg.Informers, cfg.Informers == nil
	if w.own {
		if w.informers, err = NewInformers(cfg.Client, cfg.Dynamic, cfg.Namespace, cfg.Resync); err != nil {
			return nil, err
		}
	}

	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.signalOther() },
		UpdateFunc: func(oldObj, newObj any) { w.signalUpdate(oldObj, newObj) },
		DeleteFunc: func(any) { w.signalOther() },
	}
	add := func(inf cache.SharedIndexInformer, h cache.ResourceEventHandler) error {
		reg, err := inf.AddEventHandler(h)
		if err != nil {
			return err
		}
		w.synced = append(w.synced, reg.HasSynced)
		return nil
	}
	core := w.informers.Core().Core().V1()
	w.namespaces = core.Namespaces().Lister()
	w.services = core.Services().Lister()
	w.pods = core.Pods().Lister()
	sliceInf := w.informers.Core().Discovery().V1().EndpointSlices().Informer()
	w.slices = sliceInf.GetIndexer()
	serviceHandler := keyedHandler(w, func(obj any) []string {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			return nil
		}
		return []string{key}
	})
	sliceHandler := keyedHandler(w, func(obj any) []string {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		keys, _ := sliceServiceKey(obj)
		if keys == nil {
			keys = []string{}
		}
		return keys
	})
	podHandler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.podChanged(obj) },
		UpdateFunc: func(oldObj, newObj any) { w.podUpdated(oldObj, newObj) },
		DeleteFunc: func(obj any) { w.podChanged(obj) },
	}
	if err := add(core.Pods().Informer(), podHandler); err != nil {
		return nil, err
	}
	if err := add(core.Services().Informer(), serviceHandler); err != nil {
		return nil, err
	}
	if err := add(sliceInf, sliceHandler); err != nil {
		return nil, err
	}
	for _, inf := range []cache.SharedIndexInformer{core.Namespaces().Informer(), core.ServiceAccounts().Informer()} {
		if err := add(inf, handler); err != nil {
			return nil, err
		}
	}
	for _, gvr := range []schema.GroupVersionResource{TrafficTargetGVR, HTTPRouteGroupGVR, TCPRouteGVR, TrafficSplitGVR} {
		gi := w.informers.Resource(gvr)
		w.dyn[gvr] = gi.Lister()
		if err := add(gi.Informer(), handler); err != nil {
			return nil, err
		}
	}
	mc := w.informers.Resource(MeshConfigGVR)
	w.dyn[MeshConfigGVR] = mc.Lister()
	if err := add(mc.Informer(), handler); err != nil {
		return nil, err
	}
	w.events = newEventReporter(cfg, log, w.lookupUID)
	return w, nil
}

// signal records a change that may concern any Service; the worker
// picks it up.
func (w *Watcher) signal() { w.record(func(c *changes) { c.all = true }) }

// signalOther records a change of an object that is not a Service,
// EndpointSlice or Pod (policy, namespaces, MeshConfig): the Services'
// own inputs are unchanged.
func (w *Watcher) signalOther() { w.record(func(*changes) {}) }

// record records a change (mark says what changed) and wakes the worker.
func (w *Watcher) record(mark func(*changes)) {
	now := time.Now()
	w.mu.Lock()
	if w.pending.first.IsZero() {
		w.pending.first = now
		w.pending.quiet = w.pending.last.IsZero() || now.Sub(w.pending.last) >= w.cfg.Debounce
	}
	w.pending.last = now
	mark(&w.pending.changes)
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// keyedHandler records changes of the Services that keys names
// ("ns/name") for each object; nil means it cannot tell (check them all).
func keyedHandler(w *Watcher, keys func(obj any) []string) cache.ResourceEventHandlerFuncs {
	mark := func(objs ...any) {
		w.record(func(c *changes) {
			for _, o := range objs {
				ks := keys(o)
				if ks == nil {
					c.all = true
				}
				for _, k := range ks {
					c.markService(k)
				}
			}
		})
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { mark(obj) },
		UpdateFunc: func(oldObj, newObj any) {
			if !sameVersion(oldObj, newObj) {
				mark(oldObj, newObj)
			}
		},
		DeleteFunc: func(obj any) { mark(obj) },
	}
}

// take returns the pending changes and clears them.
func (w *Watcher) take() pending {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.pending
	w.pending = pending{last: p.last}
	return p
}

// burst returns the time of the first pending change and whether it came
// after a quiet period.
func (w *Watcher) burst() (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending.first, w.pending.quiet
}

// signalUpdate ignores informer resyncs that changed nothing (the periodic
// resync rebuilds on its own schedule), and updates of a custom resource
// that left its spec as it was (a status write, such as the federation's
// member list in the MeshConfig's status, which the watcher never reads).
func (w *Watcher) signalUpdate(oldObj, newObj any) {
	if sameVersion(oldObj, newObj) || sameSpec(oldObj, newObj) {
		return
	}
	w.signalOther()
}

// sameSpec reports whether two versions of a custom resource have the same
// generation, which the API server raises on every change of the spec.
func sameSpec(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*unstructured.Unstructured)
	n, ok2 := newObj.(*unstructured.Unstructured)
	return ok1 && ok2 && n.GetGeneration() != 0 && o.GetGeneration() == n.GetGeneration() && n.GetDeletionTimestamp() == nil
}

func sameVersion(oldObj, newObj any) bool {
	type versioned interface{ GetResourceVersion() string }
	o, ok1 := oldObj.(versioned)
	n, ok2 := newObj.(versioned)
	return ok1 && ok2 && o.GetResourceVersion() == n.GetResourceVersion()
}

// podChanged records an added or deleted Pod: the Services whose endpoints
// name it are converted again.
func (w *Watcher) podChanged(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		w.signal()
		return
	}
	w.record(func(c *changes) { c.pods = append(c.pods, key) })
}

// podUpdated ignores Pod status churn that does not change what the mesh
// reads from Pods (the ServiceAccount).
func (w *Watcher) podUpdated(oldObj, newObj any) {
	if sameVersion(oldObj, newObj) {
		return
	}
	if op, ok := oldObj.(*corev1.Pod); ok {
		if np, ok := newObj.(*corev1.Pod); ok && op.Spec.ServiceAccountName == np.Spec.ServiceAccountName {
			return
		}
	}
	w.podChanged(newObj)
}

// dropManagedFields is every informer's transform: the watcher never reads
// managedFields or kubectl's last-applied-configuration, often the largest
// parts of an object in the cache.
func dropManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a[corev1.LastAppliedConfigAnnotation] != "" {
			a = maps.Clone(a)
			delete(a, corev1.LastAppliedConfigAnnotation)
			m.SetAnnotations(a)
		}
	}
	return obj, nil
}

// slimPod is the Pod informer's transform: of a Pod the watcher reads only
// its name and ServiceAccount (podInfo, podUpdated), and Pods are usually
// the most numerous and largest objects it caches.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: p.Namespace, Name: p.Name, UID: p.UID,
			ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{ServiceAccountName: p.Spec.ServiceAccountName},
	}, nil
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
	if w.own {
		ictx, stop := context.WithCancel(ctx)
		w.informers.Start(ictx)
		defer func() {
			stop()
			w.informers.Shutdown()
		}()
	}
	if !cache.WaitForCacheSync(ctx.Done(), w.synced...) {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("kube: informer caches did not sync")
	}
	w.log.Info("kube: caches synced", "mesh", w.cfg.MeshName)
	resync := time.NewTicker(w.cfg.Resync)
	defer resync.Stop()
	notifier, _ := w.cfg.Sink.(ProblemNotifier)
	var rejudged <-chan struct{}
	if notifier != nil {
		rejudged = notifier.ProblemsChanged()
	}
	recheck := time.NewTimer(time.Hour)
	recheck.Stop()
	defer recheck.Stop()
	report := func() {
		recheck.Stop()
		if due := w.report(); !due.IsZero() {
			recheck.Reset(time.Until(due))
		}
	}
	w.signal()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			w.signal()
			continue
		case <-rejudged:
			w.sinkProblems = notifier.Problems()
			report()
			continue
		case <-recheck.C:
			report()
			continue
		case <-w.changed:
		}
		if first, _ := w.burst(); first.IsZero() {
			continue // woken for changes an earlier build already read
		}
		if !w.debounce(ctx) {
			return nil
		}
		w.rebuild()
		report()
	}
}

// debounce waits before a build. A change that came after a quiet period
// (no change for Debounce) waits LeadingDelay, so an isolated change is
// built at once. Further changes make it a burst: then it waits until no
// change has arrived for Debounce, or MaxDelay has passed since the first
// change of the burst. It reports false if ctx ended.
func (w *Watcher) debounce(ctx context.Context) bool {
	first, quiet := w.burst()
	wait := w.cfg.Debounce
	if quiet {
		if w.cfg.LeadingDelay == 0 {
			return true
		}
		wait = w.cfg.LeadingDelay
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	deadline := time.NewTimer(time.Until(first.Add(w.cfg.MaxDelay)))
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return true
		case <-timer.C:
			return true
		case <-w.changed:
			timer.Reset(w.cfg.Debounce)
		}
	}
}

// rebuild reads the listers into a State and sends it; the caller
// reports the problems.
func (w *Watcher) rebuild() {
	p := w.take()
	start := time.Now()
	state, problems := w.build(p.changes)
	sinkProblems, err := w.cfg.Sink.Update(state)
	w.convProblems, w.sinkProblems = problems, sinkProblems
	w.metrics.generation.Observe(time.Since(start).Seconds())
	if err != nil {
		w.metrics.updates.WithLabelValues("error").Inc()
		w.log.Error("kube: configuration not published; proxies keep their last configuration", "err", err)
	} else {
		w.metrics.updates.WithLabelValues("ok").Inc()
		w.ready.Store(true)
		if !p.first.IsZero() {
			w.acks.published(p.first)
		}
	}
}

// report reports the last conversion and Sink problems; it returns when
// it must be called again for a problem still in its grace period.
func (w *Watcher) report() time.Time {
	problems := append(append([]mesh.Problem(nil), w.convProblems...), w.sinkProblems...)
	w.metrics.setRejected(problems)
	return w.events.report(problems)
}

// build reads every lister into one State. Objects that cannot be converted
// are left out and returned as problems. Services are converted only when
// they, their EndpointSlices or Pods changed (ch: the changes since the
// last build); the others are reused from the last build (serviceCache).
func (w *Watcher) build(ch changes) (mesh.State, []mesh.Problem) {
	var problems []mesh.Problem
	problem := func(kind mesh.ObjectKind, ns, name string, err error) {
		problems = append(problems, mesh.Problem{Kind: kind, Namespace: ns, Name: name, Err: err})
	}
	settings := mesh.Settings{MeshName: w.cfg.MeshName, ClusterName: w.cfg.ClusterName, TrustDomain: w.cfg.TrustDomain, Network: mesh.DefaultNetwork}
	if obj, err := w.dyn[MeshConfigGVR].ByNamespace(w.cfg.Namespace).Get(w.cfg.MeshConfigName); err == nil {
		s, err := settingsFrom(settings, obj.(*unstructured.Unstructured))
		if err != nil {
			problem(mesh.ObjectSettings, w.cfg.Namespace, w.cfg.MeshConfigName, err)
		}
		settings = s
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
	for ns := range members {
		st.MeshedNamespaces = append(st.MeshedNamespaces, ns)
	}
	sort.Strings(st.MeshedNamespaces)
	var meshed []*corev1.Service
	svcs, _ := w.services.List(labels.Everything())
	for _, svc := range svcs {
		if members[svc.Namespace] && svc.Spec.Type != corev1.ServiceTypeExternalName {
			meshed = append(meshed, svc)
		}
	}
	var svcProblems []mesh.Problem
	st.Services, svcProblems = w.converted.build(settings, meshed, serviceInputs{slices: w.slicesOf, pods: w.podInfo}, ch)
	problems = append(problems, svcProblems...)

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
	return st, problems
}

// slicesOf returns the EndpointSlices of Service ns/name.
func (w *Watcher) slicesOf(ns, name string) []*discoveryv1.EndpointSlice {
	return SlicesOf(w.slices, ns, name)
}

// podInfo returns what the mesh reads from Pod ns/name.
func (w *Watcher) podInfo(ns, name string) (PodInfo, bool) {
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
