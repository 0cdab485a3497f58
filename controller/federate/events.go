package federate

import (
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// events records Kubernetes Events on ServiceExports.
type events struct {
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	stopOnce    sync.Once
}

func newEvents(cfg Config, _ *slog.Logger) *events {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cfg.Client.CoreV1().Events("")})
	return &events{broadcaster: b, recorder: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: cfg.Component})}
}

func (e *events) warn(se *mcsv1beta1.ServiceExport, reason, msg string) {
	e.recorder.Event(exportRef(se), corev1.EventTypeWarning, reason, msg)
}

func (e *events) normal(se *mcsv1beta1.ServiceExport, reason, msg string) {
	e.recorder.Event(exportRef(se), corev1.EventTypeNormal, reason, msg)
}

func exportRef(se *mcsv1beta1.ServiceExport) *corev1.ObjectReference {
	return &corev1.ObjectReference{
		APIVersion: mcsv1beta1.GroupVersion.String(), Kind: "ServiceExport",
		Namespace: se.Namespace, Name: se.Name, UID: se.UID, ResourceVersion: se.ResourceVersion,
	}
}

// onMeshConfig records an Event on the MeshConfig: what concerns the
// federation as a whole rather than one export.
func (e *events) onMeshConfig(cfg Config, typ, reason, msg string) {
	if cfg.MeshConfigName == "" {
		return
	}
	e.recorder.Event(&corev1.ObjectReference{APIVersion: MeshConfigGVR.GroupVersion().String(), Kind: "MeshConfig",
		Namespace: cfg.Namespace, Name: cfg.MeshConfigName}, typ, reason, msg)
}

func (e *events) shutdown() { e.stopOnce.Do(e.broadcaster.Shutdown) }
