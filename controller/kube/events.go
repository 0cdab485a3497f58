package kube

import (
	"log/slog"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/meshfed/meshfed/mesh"
)

// Reasons of the Events meshfed puts on the objects it reads.
const (
	// ReasonRejected is the reason of the Warning Event put on an object
	// that meshfed skips.
	ReasonRejected = "MeshfedRejected"
	// ReasonAccepted is the reason of the Normal Event put on an object
	// that had a ReasonRejected Warning when meshfed serves it again.
	ReasonAccepted = "MeshfedAccepted"
)

// kinds maps problem kinds to the API objects they name.
var kinds = map[mesh.ObjectKind]struct {
	gvr  schema.GroupVersionResource
	kind string
}{
	mesh.ObjectService:        {schema.GroupVersionResource{Version: "v1", Resource: "services"}, "Service"},
	mesh.ObjectTrafficTarget:  {TrafficTargetGVR, "TrafficTarget"},
	mesh.ObjectHTTPRouteGroup: {HTTPRouteGroupGVR, "HTTPRouteGroup"},
	mesh.ObjectTCPRoute:       {TCPRouteGVR, "TCPRoute"},
	mesh.ObjectTrafficSplit:   {TrafficSplitGVR, "TrafficSplit"},
	mesh.ObjectSettings:       {MeshConfigGVR, "MeshConfig"},
}

// objectKey names the object a problem is about.
type objectKey struct {
	kind      mesh.ObjectKind
	namespace string
	name      string
}

func keyOf(p mesh.Problem) objectKey { return objectKey{p.Kind, p.Namespace, p.Name} }

// eventReporter turns problems into Events and log lines, once per problem
// until it goes away (every judgement finds the same problems again). A
// problem that is only a missing reference (mesh.IsMissingReference) is
// reported once it has lasted grace, so that objects applied in any order,
// or supplied by another cluster a moment later, raise no Warning. When an
// object that had a Warning has no problem any more, a Normal Event says
// it is in force again. Used from the worker goroutine only.
type eventReporter struct {
	log         *slog.Logger
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	uid         func(gvr schema.GroupVersionResource, ns, name string) (string, bool)
	namespace   string
	meshConfig  string
	grace       time.Duration
	now         func() time.Time

	// since is when each current problem (by message) was first seen.
	since map[string]time.Time
	// reported are the problems (by message) with a Warning Event.
	reported map[string]bool
	// warned are the objects with a Warning Event and no Event since
	// saying they are in force again.
	warned   map[objectKey]bool
	stopOnce sync.Once
}

func newEventReporter(cfg Config, log *slog.Logger, uid func(schema.GroupVersionResource, string, string) (string, bool)) *eventReporter {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cfg.Client.CoreV1().Events("")})
	return &eventReporter{
		log:         log,
		broadcaster: b,
		recorder:    b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: cfg.Component}),
		uid:         uid,
		namespace:   cfg.Namespace,
		meshConfig:  cfg.MeshConfigName,
		grace:       cfg.MissingReferenceGrace,
		now:         time.Now,
		since:       map[string]time.Time{},
		reported:    map[string]bool{},
		warned:      map[objectKey]bool{},
	}
}

// report takes the current problems (all of them: the last judgement's)
// and records what changed. It returns when a problem still in its grace
// period falls due (report must be called again then), or zero.
func (r *eventReporter) report(problems []mesh.Problem) time.Time {
	now := r.now()
	since := make(map[string]time.Time, len(problems))
	reported := map[string]bool{}
	failing := map[objectKey]bool{}
	var due time.Time
	for _, p := range problems {
		msg := p.Error()
		failing[keyOf(p)] = true
		first, ok := r.since[msg]
		if !ok {
			first = now
		}
		since[msg] = first
		if r.reported[msg] {
			reported[msg] = true
			continue
		}
		if at := first.Add(r.grace); mesh.IsMissingReference(p.Err) && now.Before(at) {
			if due.IsZero() || at.Before(due) {
				due = at
			}
			continue
		}
		reported[msg] = true
		r.warned[keyOf(p)] = true
		r.log.Warn("kube: object skipped", "kind", string(p.Kind), "namespace", p.Namespace, "name", p.Name, "problem", msg)
		if ref, _ := r.reference(p.Kind, p.Namespace, p.Name); ref != nil {
			r.recorder.Event(ref, corev1.EventTypeWarning, ReasonRejected, "meshfed skips this object: "+msg)
		}
	}
	r.since, r.reported = since, reported
	r.withdraw(failing)
	return due
}

// withdraw puts a Normal Event on every warned object that has no problem
// any more and still exists.
func (r *eventReporter) withdraw(failing map[objectKey]bool) {
	var back []objectKey
	for k := range r.warned {
		if !failing[k] {
			back = append(back, k)
		}
	}
	sort.Slice(back, func(i, j int) bool {
		a, b := back[i], back[j]
		return a.kind < b.kind || a.kind == b.kind && (a.namespace < b.namespace || a.namespace == b.namespace && a.name < b.name)
	})
	for _, k := range back {
		delete(r.warned, k)
		ref, exists := r.reference(k.kind, k.namespace, k.name)
		if ref == nil || !exists {
			continue // deleted: nothing to tell
		}
		r.log.Info("kube: object in force again", "kind", string(k.kind), "namespace", k.namespace, "name", k.name)
		r.recorder.Event(ref, corev1.EventTypeNormal, ReasonAccepted, "meshfed serves this object again: the problem reported earlier is resolved and the object is in force again")
	}
}

// reference returns the object a problem names, and whether it exists.
func (r *eventReporter) reference(kind mesh.ObjectKind, ns, name string) (*corev1.ObjectReference, bool) {
	k, ok := kinds[kind]
	if !ok {
		return nil, false
	}
	if kind == mesh.ObjectSettings {
		ns, name = r.namespace, r.meshConfig
	}
	apiVersion := k.gvr.Version
	if k.gvr.Group != "" {
		apiVersion = k.gvr.Group + "/" + k.gvr.Version
	}
	ref := &corev1.ObjectReference{APIVersion: apiVersion, Kind: k.kind, Namespace: ns, Name: name}
	uid, exists := r.uid(k.gvr, ns, name)
	if exists {
		ref.UID = types.UID(uid)
	}
	return ref, exists
}

func (r *eventReporter) shutdown() { r.stopOnce.Do(r.broadcaster.Shutdown) }
