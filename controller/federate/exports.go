package federate

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// Event reasons the bridge records on ServiceExports.
const (
	ReasonExportInvalid  = "ExportInvalid"
	ReasonExportConflict = "ExportConflict"
	// ReasonExportProblemGone (Normal) withdraws an earlier warning: the
	// export is valid again, or no remote export conflicts with it any more.
	ReasonExportProblemGone = "ExportProblemGone"
	// ReasonClusterUnreachable (Warning, on the MeshConfig): a cluster on
	// another network lists no usable east-west gateway;
	// ReasonClusterReachable (Normal) when that is over.
	ReasonClusterUnreachable = "ClusterUnreachable"
	ReasonClusterReachable   = "ClusterReachable"
)

// desiredConditions returns the MCS conditions of one ServiceExport:
// Valid, Conflict and Ready. A conflict never unpublishes the local export:
// the conflicting remote exports are left out of the clusterset service
// here instead.
func desiredConditions(generation int64, invalid string, c *conflict) []metav1.Condition {
	cond := func(t mcsv1beta1.ServiceExportConditionType, s metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: string(t), Status: s, Reason: reason, Message: msg, ObservedGeneration: generation}
	}
	if invalid != "" {
		reason, msg, _ := strings.Cut(invalid, ": ")
		return []metav1.Condition{
			cond(mcsv1beta1.ServiceExportConditionValid, metav1.ConditionFalse, reason, msg),
			cond(mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, string(mcsv1beta1.ServiceExportReasonFailed), "not exported: "+msg),
		}
	}
	out := []metav1.Condition{cond(mcsv1beta1.ServiceExportConditionValid, metav1.ConditionTrue, string(mcsv1beta1.ServiceExportReasonValid), "the service exists and can be exported")}
	if c != nil {
		out = append(out, cond(mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionTrue, c.Reason, c.Message))
	} else {
		out = append(out, cond(mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionFalse, string(mcsv1beta1.ServiceExportReasonNoConflicts), "no conflicting export in the federation"))
	}
	return append(out, cond(mcsv1beta1.ServiceExportConditionReady, metav1.ConditionTrue, string(mcsv1beta1.ServiceExportReasonExported), "published to the federation"))
}

// exportReport is a problem reported on one ServiceExport.
type exportReport struct {
	Reason  string // ReasonExportInvalid or ReasonExportConflict
	Problem string
}

// updateExportConditions writes the conditions of every ServiceExport that
// changed. It records a Warning Event when an export becomes invalid or
// conflicting, and a Normal Event when that problem is gone.
func (b *Bridge) updateExportConditions(ctx context.Context, all map[string]*mcsv1beta1.ServiceExport, invalid map[string]string, conflicts map[string]conflict) error {
	var errs []error
	reported := map[string]exportReport{}
	inSync := make(map[string]conditionsInSync, len(all))
	defer func() { b.conditionsInSync = inSync }()
	for key, se := range all {
		var c *conflict
		if rc, ok := conflicts[key]; ok && invalid[key] == "" {
			c = &rc
		}
		b.reportExport(se, key, invalid[key], c, reported)
		want := conditionsInSync{resourceVersion: se.ResourceVersion, invalid: invalid[key]}
		if c != nil {
			want.conflict = *c
		}
		if m, ok := b.conditionsInSync[key]; ok && m == want && want.resourceVersion != "" {
			inSync[key] = want
			continue
		}
		conds := append([]metav1.Condition(nil), se.Status.Conditions...)
		for _, d := range desiredConditions(se.Generation, invalid[key], c) {
			apimeta.SetStatusCondition(&conds, d)
		}
		if reflect.DeepEqual(conds, se.Status.Conditions) {
			inSync[key] = want
			continue
		}
		if !b.spend() {
			continue
		}
		upd := se.DeepCopy()
		upd.Status.Conditions = conds
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(upd)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		u.SetAPIVersion(mcsv1beta1.GroupVersion.String())
		u.SetKind("ServiceExport")
		if _, err := b.cfg.Dynamic.Resource(ServiceExportGVR).Namespace(se.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("serviceexport %s: status: %w", key, err))
		}
	}
	b.reported = reported
	return errors.Join(errs...)
}

// conditionsInSync is what a ServiceExport's conditions were found in
// sync with: its resourceVersion, and the problem and conflict they
// report. A pass skips an export whose three are the same.
type conditionsInSync struct {
	resourceVersion string
	invalid         string
	conflict        conflict
}

// reportExport logs and records an Event when the problem of ServiceExport
// key changed since the last reconcile, and notes it in reported.
func (b *Bridge) reportExport(se *mcsv1beta1.ServiceExport, key, invalid string, c *conflict, reported map[string]exportReport) {
	r := exportReport{Reason: ReasonExportInvalid, Problem: invalid}
	if c != nil {
		r = exportReport{Reason: ReasonExportConflict, Problem: c.Reason + ": " + c.Message}
	}
	prev, had := b.reported[key]
	switch {
	case r.Problem == "" && had:
		b.log.Info("federate: ServiceExport problem gone", "namespace", se.Namespace, "name", se.Name, "was", prev.Problem)
		if prev.Reason == ReasonExportConflict {
			b.events.normal(se, ReasonExportProblemGone, "no other cluster's export conflicts with this one any more")
		} else {
			b.events.normal(se, ReasonExportProblemGone, "meshfed exports this service now")
		}
	case r.Problem == "":
	case prev != r && r.Reason == ReasonExportConflict:
		reported[key] = r
		b.log.Warn("federate: ServiceExport in conflict, this cluster keeps its export", "namespace", se.Namespace, "name", se.Name, "conflict", r.Problem)
		b.events.warn(se, r.Reason, "another cluster exports this service differently: "+r.Problem)
	case prev != r:
		reported[key] = r
		b.log.Warn("federate: ServiceExport skipped", "namespace", se.Namespace, "name", se.Name, "problem", r.Problem)
		b.events.warn(se, r.Reason, "meshfed does not export this service: "+r.Problem)
	default:
		reported[key] = r
	}
}

// reportLeftOut logs each remote export that conflict resolution leaves
// out of the clusterset service here, once per conflict, and when it is
// no longer left out.
func (b *Bridge) reportLeftOut(leftOut []leftOutExport) {
	now := map[string]string{}
	for _, l := range leftOut {
		id := l.Cluster + "\x00" + l.Key
		now[id] = l.Message
		if b.leftOut[id] != l.Message {
			b.log.Warn("federate: another cluster's conflicting export left out of the clusterset service",
				"cluster", quote(l.Cluster), "service", quote(l.Key), "reason", l.Reason, "conflict", l.Message)
		}
	}
	for id := range b.leftOut {
		if _, ok := now[id]; !ok {
			cluster, key, _ := strings.Cut(id, "\x00")
			b.log.Info("federate: another cluster's export no longer left out", "cluster", quote(cluster), "service", quote(key))
		}
	}
	b.leftOut = now
}
