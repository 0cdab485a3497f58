package federate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/controller/kube"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
)

// GVRs of the MCS objects the bridge reads and writes.
var (
	ServiceExportGVR = kube.ServiceExportGVR
	ServiceImportGVR = kube.ServiceImportGVR
	MeshConfigGVR    = deploy.MeshConfigGVR
)

// Labels on the ServiceImports the bridge writes. It deletes only
// ServiceImports that carry LabelManagedBy=ManagedBy.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "meshfed"
)

// Bridge connects one cluster's Kubernetes API with its federation member.
// Create it with New and start it with Run.
type Bridge struct {
	// writesLeft is what the current pass may still write to the API
	// server; writesDeferred says it ran out (Config.WriteBudget).
	writesLeft     int
	writesDeferred bool

	cfg     Config
	log     *slog.Logger
	metrics *metrics
	events  *events

	// informers are the caches read; own says the bridge runs them, regs
	// are its handlers on them.
	informers *kube.Informers
	own       bool
	regs      []registration
	services  corelisters.ServiceLister
	pods      corelisters.PodLister
	slices    cache.Indexer // EndpointSlices, indexed by Service (kube.SlicesOf)
	exports   cache.GenericLister
	imports   cache.GenericLister
	// importStore is the ServiceImports' informer cache (its keys).
	importStore cache.Store
	synced      []cache.InformerSynced

	// changed signals a change of the bridge's own objects (exports,
	// imports) or, with its own informers, of local services; local
	// signals a new local State (LocalChanged).
	changed chan struct{}
	local   chan struct{}

	// Owned by Run's goroutine.
	published         []catalog.ExportedService
	havePublished     bool
	publishedGateways []string  // the gateway addresses of the last catalog published
	gatewayGraceEnds  time.Time // see Config.GatewayGrace
	unusableIngress   string    // last reported (gatewayAddresses)
	remoteSince       time.Time // first unhandled federation signal
	catalogSeen       map[string]uint64
	reported          map[string]exportReport
	leftOut           map[string]string // cluster "\x00" key → conflict logged
	unreachable       map[string]string // cluster → why it has no gateway, logged
	exportsSeen       *firstSeen
	statusAt          time.Time
	// checked holds, per remote cluster, the services skipped from the
	// catalog version last checked; invalid those of the last snapshot
	// that had any.
	checked map[string]checkedCatalog
	// exportObjs are the ServiceExports read so far, by key, kept while
	// their resourceVersion stays: converting 10,000 of them from
	// unstructured on every pass costs more than the rest of the pass.
	exportObjs map[string]*readExport
	// exportByObj are the same, by the informer's object they were read
	// from on the last pass.
	exportByObj map[*unstructured.Unstructured]*readExport
	// exportMemos are the exports made on the last pass, by key.
	exportMemos map[string]*exportMemo
	// importsInSync are the ServiceImports the last pass found as wanted,
	// by key: a pass skips one whose resourceVersion and wanted spec are
	// the same, without converting it (applyImports).
	importsInSync map[string]importInSync
	// conditionsInSync are the ServiceExports whose conditions the last
	// pass found as wanted (updateExportConditions).
	conditionsInSync map[string]conditionsInSync
	invalid          map[string]checkedCatalog

	current atomic.Pointer[RemoteState]
	subsMu  sync.Mutex
	subs    map[chan struct{}]struct{}
	pushMu  sync.Mutex
	pending []pendingPush
}

type pendingPush struct {
	version uint64
	since   time.Time
}

// New returns a Bridge for cfg. It registers metrics and informers but
// starts nothing.
func New(cfg Config) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	b := &Bridge{
		cfg: cfg, log: log, metrics: m,
		changed:     make(chan struct{}, 1),
		local:       make(chan struct{}, 1),
		catalogSeen: map[string]uint64{},
		reported:    map[string]exportReport{},
		leftOut:     map[string]string{},
		exportsSeen: newFirstSeen(),
		checked:     map[string]checkedCatalog{},
		exportObjs:  map[string]*readExport{},
		exportMemos: map[string]*exportMemo{},
		subs:        map[chan struct{}]struct{}{},
	}
	b.current.Store(&RemoteState{Remote: map[string]mesh.ClusterCatalog{}})
	b.informers, b.own = cfg.Informers, cfg.Informers == nil
	if b.own {
		if b.informers, err = kube.NewInformers(cfg.Client, cfg.Dynamic, cfg.Namespace, cfg.Resync); err != nil {
			return nil, err
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { b.signal() },
		UpdateFunc: func(any, any) { b.signal() },
		DeleteFunc: func(any) { b.signal() },
	}
	core := b.informers.Core().Core().V1()
	slices := b.informers.Core().Discovery().V1().EndpointSlices()
	b.services, b.pods, b.slices = core.Services().Lister(), core.Pods().Lister(), slices.Informer().GetIndexer()
	se, si := b.informers.Resource(ServiceExportGVR), b.informers.Resource(ServiceImportGVR)
	b.exports, b.imports, b.importStore = se.Lister(), si.Lister(), si.Informer().GetStore()
	// Changes of the local services reach a bridge that shares the
	// controller's informers from the watcher, which debounces them,
	// through the Junction (LocalChanged); a bridge with informers of its
	// own (no watcher) watches them itself.
	watched := []cache.SharedIndexInformer{se.Informer(), si.Informer()}
	local := []cache.SharedIndexInformer{core.Services().Informer(), core.Pods().Informer(), slices.Informer()}
	if b.own {
		watched = append(watched, local...)
	} else {
		for _, inf := range local {
			b.synced = append(b.synced, inf.HasSynced)
		}
	}
	handlers := make([]cache.ResourceEventHandler, len(watched))
	for i := range watched {
		handlers[i] = handler
	}
	if !b.own && len(cfg.Gateways) == 0 && cfg.GatewayService != "" {
		// The gateway's Service is outside the meshed namespaces the
		// watcher passes on: its load balancer's addresses are watched here.
		watched = append(watched, core.Services().Informer())
		handlers = append(handlers, cache.FilteringResourceEventHandler{
			FilterFunc: func(obj any) bool {
				if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				s, ok := obj.(*corev1.Service)
				return ok && s.Namespace == cfg.Namespace && s.Name == cfg.GatewayService
			},
			Handler: handler,
		})
	}
	for i, inf := range watched {
		reg, err := inf.AddEventHandler(handlers[i])
		if err != nil {
			b.removeHandlers()
			return nil, err
		}
		b.regs = append(b.regs, registration{inf, reg})
		b.synced = append(b.synced, reg.HasSynced)
	}
	b.events = newEvents(cfg, log)
	return b, nil
}

// registration is one of the bridge's handlers on a shared informer.
type registration struct {
	inf cache.SharedIndexInformer
	reg cache.ResourceEventHandlerRegistration
}

// removeHandlers takes the bridge's handlers off the informers (shared
// ones outlive a bridge that a federation restart replaces).
func (b *Bridge) removeHandlers() {
	for _, r := range b.regs {
		if err := r.inf.RemoveEventHandler(r.reg); err != nil {
			b.log.Warn("federate: removing an informer handler", "err", err)
		}
	}
	b.regs = nil
}

func (b *Bridge) signal() {
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

// LocalChanged implements RemoteSource: the watcher has passed on a new
// local State, so the exports are read again at once (the watcher has
// debounced the change already). It never blocks.
func (b *Bridge) LocalChanged() {
	select {
	case b.local <- struct{}{}:
	default:
	}
}

// Remote returns the latest remote state. It never blocks; the value is
// shared and must not be modified.
func (b *Bridge) Remote() *RemoteState { return b.current.Load() }

// Subscribe returns a channel that receives a value whenever Remote
// changes, and a func to stop. Signals coalesce (room for one): after a
// signal, read Remote. The bridge never blocks on a slow subscriber.
func (b *Bridge) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	b.subsMu.Lock()
	b.subs[ch] = struct{}{}
	b.subsMu.Unlock()
	return ch, func() {
		b.subsMu.Lock()
		delete(b.subs, ch)
		b.subsMu.Unlock()
	}
}

// Pushed tells the bridge that a state built from RemoteState version (or
// a later one) has reached the proxies (the xDS server's ACK, or at least
// its snapshot update). It feeds the remote-change-to-push metric. Safe
// from any goroutine; it never blocks.
func (b *Bridge) Pushed(version uint64) {
	now := time.Now()
	b.pushMu.Lock()
	defer b.pushMu.Unlock()
	i := 0
	for ; i < len(b.pending) && b.pending[i].version <= version; i++ {
		b.metrics.remoteToPush.Observe(now.Sub(b.pending[i].since).Seconds())
	}
	b.pending = b.pending[i:]
}

// Run starts the informers, waits for them to sync, and reconciles until
// ctx ends. It returns after its goroutines have stopped.
func (b *Bridge) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if b.own {
		b.informers.Start(ctx)
		defer b.informers.Shutdown()
	}
	defer b.removeHandlers()
	defer b.events.shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), b.synced...) {
		return ctx.Err()
	}
	fedCh, stop := b.cfg.Federation.Subscribe()
	defer stop()

	debounce := time.NewTimer(0)
	defer debounce.Stop()
	var first time.Time
	arm := func() {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		d := min(b.cfg.Debounce, max(first.Add(b.cfg.MaxDelay).Sub(now), 0))
		debounce.Reset(d)
	}
	resync := time.NewTicker(b.cfg.Resync)
	defer resync.Stop()
	var statusC <-chan time.Time
	if b.cfg.MeshConfigName != "" || b.cfg.Board != nil {
		st := time.NewTicker(b.cfg.StatusInterval)
		defer st.Stop()
		statusC = st.C
	}
	defer b.cfg.Board.store(nil)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var gatewayCh <-chan struct{}
	var graceC <-chan time.Time
	if b.cfg.Presence != nil {
		gatewayCh = b.cfg.Presence.GatewayChanges()
		b.gatewayGraceEnds = time.Now().Add(b.cfg.GatewayGrace)
		grace := time.NewTimer(b.cfg.GatewayGrace)
		defer grace.Stop()
		graceC = grace.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.changed:
			arm()
		case <-b.local:
			if first.IsZero() {
				first = time.Now()
			}
			debounce.Reset(0)
		case <-fedCh:
			if b.remoteSince.IsZero() {
				b.remoteSince = time.Now()
			}
			arm()
		case <-gatewayCh:
			debounce.Reset(0)
		case <-graceC:
			debounce.Reset(0)
		case <-retry.C:
			arm()
		case <-resync.C:
			arm()
		case <-statusC:
			b.writeStatus(ctx)
		case <-debounce.C:
			first = time.Time{}
			if err := b.reconcile(ctx); errors.Is(err, errMoreToWrite) {
				retry.Reset(0)
			} else if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				b.log.Warn("federate: reconcile incomplete, retrying", "err", err)
				retry.Reset(time.Second)
			}
		}
	}
}

// localExports reads the ServiceExports and the Services they name. It
// returns the valid exports by key and sets each ServiceExport's Valid
// condition.
func (b *Bridge) localExports() (map[string]catalog.ExportedService, map[string]*mcsv1beta1.ServiceExport, map[string]string) {
	objs, err := b.exports.List(labels.Everything())
	if err != nil {
		b.log.Error("federate: listing ServiceExports", "err", err)
	}
	settings := mesh.Settings{ClusterName: b.cfg.ClusterName, Network: b.cfg.Network, TrustDomain: b.cfg.TrustDomain}
	valid := map[string]catalog.ExportedService{}
	all := map[string]*mcsv1beta1.ServiceExport{}
	invalid := map[string]string{} // key → reason: message
	seen := map[string]bool{}
	defer func() {
		byObj := make(map[*unstructured.Unstructured]*readExport, len(b.exportObjs))
		for key, r := range b.exportObjs {
			if !seen[key] {
				delete(b.exportObjs, key)
				continue
			}
			byObj[r.obj] = r
		}
		b.exportByObj = byObj
		for key := range b.exportMemos {
			if !seen[key] {
				delete(b.exportMemos, key)
			}
		}
	}()
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		r, err := b.readExport(u, seen)
		if err != nil {
			b.log.Warn("federate: unreadable ServiceExport", "namespace", u.GetNamespace(), "name", u.GetName(), "err", err)
			continue
		}
		se, key := r.se, r.key
		if se.DeletionTimestamp != nil {
			continue
		}
		all[key] = se
		svc, err := b.services.Services(se.Namespace).Get(se.Name)
		if apierrors.IsNotFound(err) {
			invalid[key] = string(mcsv1beta1.ServiceExportReasonNoService) + ": service " + key + " does not exist"
			continue
		} else if err != nil {
			invalid[key] = string(mcsv1beta1.ServiceExportReasonNoService) + ": " + err.Error()
			continue
		}
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			invalid[key] = string(mcsv1beta1.ServiceExportReasonInvalidServiceType) + ": ExternalName services cannot be exported"
			continue
		}
		sl := kube.SlicesOf(b.slices, se.Namespace, se.Name)
		m := b.exportMemos[key]
		if !m.current(b, se, svc, sl) {
			m = b.exportFrom(settings, se, svc, sl)
			b.exportMemos[key] = m
		}
		if m.invalid != "" {
			invalid[key] = m.invalid
			continue
		}
		valid[key] = m.exp
	}
	return valid, all, invalid
}

// exportMemo is one export as made from its inputs, and those inputs: the
// resourceVersions of the ServiceExport, its Service and their
// EndpointSlices, and the Pods its endpoints name as they were found. A
// pass that finds the same inputs reuses it, so that the thousands of
// exports an endpoint change does not touch cost a few lookups each, and
// keep the slices they share with the last catalog published.
type exportMemo struct {
	exportRV, serviceRV string
	sliceRVs            []string
	pods                []podSeen
	exp                 catalog.ExportedService
	invalid             string // why it is not exported; "" if it is
}

type podSeen struct {
	namespace, name string
	info            kube.PodInfo
	found           bool
}

// current reports whether m was made from these inputs (false for nil).
func (m *exportMemo) current(b *Bridge, se *mcsv1beta1.ServiceExport, svc *corev1.Service, sl []*discoveryv1.EndpointSlice) bool {
	if m == nil || m.exportRV != se.ResourceVersion || m.serviceRV != svc.ResourceVersion || se.ResourceVersion == "" ||
		svc.ResourceVersion == "" || len(m.sliceRVs) != len(sl) {
		return false
	}
	for i, s := range sl {
		if s.ResourceVersion != m.sliceRVs[i] || s.ResourceVersion == "" {
			return false
		}
	}
	for _, p := range m.pods {
		info, found := b.podInfo(p.namespace, p.name)
		if found != p.found || info != p.info {
			return false
		}
	}
	return true
}

// exportFrom makes the export of se (its Service svc, their slices sl),
// recording the inputs.
func (b *Bridge) exportFrom(settings mesh.Settings, se *mcsv1beta1.ServiceExport, svc *corev1.Service, sl []*discoveryv1.EndpointSlice) *exportMemo {
	m := &exportMemo{exportRV: se.ResourceVersion, serviceRV: svc.ResourceVersion}
	for _, s := range sl {
		m.sliceRVs = append(m.sliceRVs, s.ResourceVersion)
	}
	pods := func(ns, name string) (kube.PodInfo, bool) {
		info, found := b.podInfo(ns, name)
		m.pods = append(m.pods, podSeen{namespace: ns, name: name, info: info, found: found})
		return info, found
	}
	ms, err := kube.ServiceFrom(settings, svc, sl, pods)
	if err != nil {
		m.invalid = string(mcsv1beta1.ServiceExportReasonInvalidServiceType) + ": " + err.Error()
		return m
	}
	m.exp = exportFrom(ms, svc.Spec.ClusterIP == corev1.ClusterIPNone, se.CreationTimestamp.Time)
	fs, err := failStaticOverride(se.Annotations)
	if err != nil {
		m.invalid = "InvalidAnnotation: " + err.Error()
		return m
	}
	m.exp.FailStatic = fs
	return m
}

// readExport is one ServiceExport as read at one resourceVersion: the
// informer's object it was read from, its key and its conversion.
type readExport struct {
	resourceVersion string
	obj             *unstructured.Unstructured
	key             string
	se              *mcsv1beta1.ServiceExport
}

// readExport converts u, or returns the conversion made when u was last
// seen at the same resourceVersion; it marks u's key seen. The informer
// replaces an object that changes and never changes one it holds, so the
// same object as on the last pass is found by its address alone. The
// result is shared: callers copy it before changing it.
func (b *Bridge) readExport(u *unstructured.Unstructured, seen map[string]bool) (*readExport, error) {
	if r, ok := b.exportByObj[u]; ok {
		seen[r.key] = true
		return r, nil
	}
	key := u.GetNamespace() + "/" + u.GetName()
	seen[key] = true
	if r, ok := b.exportObjs[key]; ok && r.resourceVersion == u.GetResourceVersion() && r.resourceVersion != "" {
		r.obj = u
		return r, nil
	}
	var se mcsv1beta1.ServiceExport
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &se); err != nil {
		delete(b.exportObjs, key)
		return nil, err
	}
	r := &readExport{resourceVersion: u.GetResourceVersion(), obj: u, key: key, se: &se}
	b.exportObjs[key] = r
	return r, nil
}

// reportUnreachable logs each cluster on another network that lists no
// usable gateway, once per reason, and when it becomes reachable again.
func (b *Bridge) reportUnreachable(now map[string]string) {
	for c, why := range now {
		if b.unreachable[c] != why {
			b.log.Warn("federate: cluster unreachable from this network; its services get no endpoints here", "cluster", mesh.Quote(c), "reason", why)
			b.events.onMeshConfig(b.cfg, corev1.EventTypeWarning, ReasonClusterUnreachable, why+"; its services get no endpoints here")
		}
	}
	for c := range b.unreachable {
		if _, ok := now[c]; !ok {
			b.log.Info("federate: cluster reachable again", "cluster", mesh.Quote(c))
			b.events.onMeshConfig(b.cfg, corev1.EventTypeNormal, ReasonClusterReachable, "cluster "+mesh.Quote(c)+" is reachable again")
		}
	}
	b.unreachable = now
}

func (b *Bridge) podInfo(ns, name string) (kube.PodInfo, bool) {
	p, err := b.pods.Pods(ns).Get(name)
	if err != nil {
		return kube.PodInfo{}, false
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return kube.PodInfo{ServiceAccount: sa}, true
}

// servingGateways are the gateway addresses to publish: all of them while
// a gateway replica is connected (or nothing says, or within the grace
// after start), none otherwise.
func (b *Bridge) servingGateways() []string {
	if b.cfg.Presence != nil && b.cfg.Presence.GatewaysConnected() == 0 && !time.Now().Before(b.gatewayGraceEnds) {
		return nil
	}
	return b.gatewayAddresses()
}

// reconcile does one full pass: exports → Publish, remote state,
// conditions, imports. It returns an error when something must be retried.
func (b *Bridge) reconcile(ctx context.Context) error {
	start := time.Now()
	b.writesLeft, b.writesDeferred = b.cfg.WriteBudget, false
	remoteSince := b.remoteSince
	b.remoteSince = time.Time{}
	snap := b.validRemote(b.cfg.Federation.Snapshot())
	valid, all, invalid := b.localExports()
	b.exportsSeen.observe(snap, start, b.importedBefore)
	v := computeView(b.cfg.ClusterName, valid, snap, b.exportsSeen)
	b.reportLeftOut(v.leftOut)
	b.reportUnreachable(routeThroughGateways(&v.remote, b.cfg.Network, snap))

	var errs []error
	gateways := b.servingGateways()
	if !b.havePublished || !samePublished(v.published, b.published) || !slices.Equal(gateways, b.publishedGateways) {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		version, err := b.cfg.Federation.PublishWithGateways(pctx, v.published, gateways)
		cancel()
		if err != nil {
			b.metrics.publishes.WithLabelValues("error").Inc()
			errs = append(errs, fmt.Errorf("publish %d exported services: %w", len(v.published), err))
		} else {
			b.metrics.publishes.WithLabelValues("ok").Inc()
			if len(gateways) != len(b.publishedGateways) {
				if len(gateways) == 0 {
					b.log.Warn("federate: this cluster's gateway addresses are withdrawn from its catalog (no gateway replica connected, or no address): clusters on other networks stop routing to it", "gateways", b.publishedGateways)
				} else {
					b.log.Info("federate: this cluster's gateway addresses are in its catalog", "gateways", gateways, "replicas connected", b.cfg.Presence != nil && b.cfg.Presence.GatewaysConnected() > 0)
				}
			}
			b.published, b.publishedGateways, b.havePublished = v.published, gateways, true
			b.log.Info("federate: published catalog", "version", version, "services", len(v.published), "gateways", len(gateways))
		}
	}
	b.metrics.exports.WithLabelValues("published").Set(float64(len(v.published)))
	b.metrics.exports.WithLabelValues("invalid").Set(float64(len(invalid)))
	b.metrics.exports.WithLabelValues("conflict").Set(float64(len(v.conflicts)))

	// The remote state goes to the xDS server before the API server
	// writes below, which are paced by the client's rate limit: the first
	// pass over thousands of exports or imports must not hold back the
	// proxies' endpoints.
	b.setRemote(v.remote, snap, remoteSince)
	if err := b.updateExportConditions(ctx, all, invalid, v.conflicts); err != nil {
		errs = append(errs, err)
	}
	if b.cfg.WriteImports {
		if err := b.applyImports(ctx, v.imports); err != nil {
			errs = append(errs, err)
		}
	}
	if b.cfg.MeshConfigName != "" && time.Since(b.statusAt) > 2*time.Second {
		b.writeStatus(ctx)
	} else {
		b.publishStatus()
	}
	b.metrics.reconcile.Observe(time.Since(start).Seconds())
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if b.writesDeferred {
		return errMoreToWrite
	}
	return nil
}

// samePublished reports whether a and b list the same services alike
// (catalog.SameService; reused exports share their slices, which compare
// at once).
func samePublished(a, b []catalog.ExportedService) bool {
	return slices.EqualFunc(a, b, func(x, y catalog.ExportedService) bool { return catalog.SameService(&x, &y) })
}

// errMoreToWrite ends a pass that left writes for the next one
// (Config.WriteBudget).
var errMoreToWrite = errors.New("more writes to the API server than one pass makes")

// spend takes one write from the pass's budget; false: none is left, the
// write waits for the next pass.
func (b *Bridge) spend() bool {
	if b.writesLeft <= 0 {
		b.writesDeferred = true
		return false
	}
	b.writesLeft--
	return true
}

// setRemote hands out the remote state if it changed, and records how
// long remote changes took to get here.
func (b *Bridge) setRemote(rs RemoteState, snap *federation.RemoteView, remoteSince time.Time) {
	now := time.Now()
	if snap != nil {
		for name, cv := range snap.Clusters {
			if cv.Catalog == nil || b.catalogSeen[name] == cv.Catalog.Version {
				continue
			}
			b.catalogSeen[name] = cv.Catalog.Version
			if !cv.Catalog.GeneratedAt.IsZero() {
				b.metrics.catalogAge.Observe(max(now.Sub(cv.Catalog.GeneratedAt), 0).Seconds())
			}
		}
	}
	cur := b.current.Load()
	if reflect.DeepEqual(cur.Remote, rs.Remote) && reflect.DeepEqual(cur.Imports, rs.Imports) {
		return
	}
	rs.Version = cur.Version + 1
	since := remoteSince
	if since.IsZero() {
		since = now
	} else {
		b.metrics.remoteToView.WithLabelValues().Observe(now.Sub(since).Seconds())
	}
	b.pushMu.Lock()
	b.pending = append(b.pending, pendingPush{version: rs.Version, since: since})
	if len(b.pending) > 1000 { // nobody calls Pushed
		b.pending = b.pending[len(b.pending)-1000:]
	}
	b.pushMu.Unlock()
	b.current.Store(&rs)
	b.subsMu.Lock()
	for ch := range b.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	b.subsMu.Unlock()
}
