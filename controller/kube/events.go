package kube

import (
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/meshfed/meshfed/mesh"
)

// ReasonRejected is the reason of the Warning Event put on an object that
// meshfed skips.
const ReasonRejected = "MeshfedRejected"

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

// eventReporter turns problems into Events and log lines, once per problem
// until it goes away (every rebuild finds the same problems again). Used
// from the worker goroutine only.
type eventReporter struct {
	log         *slog.Logger
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	uid         func(gvr schema.GroupVersionResource, ns, name string) (string, bool)
	namespace   string
	meshConfig  string
	reported    map[string]bool
	stopOnce    sync.Once
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
		reported:    map[string]bool{},
	}
}

func (r *eventReporter) report(problems []mesh.Problem) {
	now := map[string]bool{}
	for _, p := range problems {
		key := p.Error()
		now[key] = true
		if r.reported[key] {
			continue
		}
		r.log.Warn("kube: object skipped", "kind", string(p.Kind), "namespace", p.Namespace, "name", p.Name, "problem", p.Error())
		if ref := r.reference(p); ref != nil {
			r.recorder.Event(ref, corev1.EventTypeWarning, ReasonRejected, "meshfed skips this object: "+p.Error())
		}
	}
	r.reported = now
}

func (r *eventReporter) reference(p mesh.Problem) *corev1.ObjectReference {
	k, ok := kinds[p.Kind]
	if !ok {
		return nil
	}
	ns, name := p.Namespace, p.Name
	if p.Kind == mesh.ObjectSettings {
		ns, name = r.namespace, r.meshConfig
	}
	apiVersion := k.gvr.Version
	if k.gvr.Group != "" {
		apiVersion = k.gvr.Group + "/" + k.gvr.Version
	}
	ref := &corev1.ObjectReference{APIVersion: apiVersion, Kind: k.kind, Namespace: ns, Name: name}
	if uid, ok := r.uid(k.gvr, ns, name); ok {
		ref.UID = types.UID(uid)
	}
	return ref
}

func (r *eventReporter) shutdown() { r.stopOnce.Do(r.broadcaster.Shutdown) }
