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
)

// desiredConditions returns the MCS conditions of one ServiceExport:
// Valid, Conflict and Ready.
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
		return append(out,
			cond(mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionTrue, c.Reason, c.Message),
			cond(mcsv1beta1.ServiceExportConditionReady, metav1.ConditionFalse, string(mcsv1beta1.ServiceExportReasonFailed), "not exported: it conflicts with an older export in another cluster"))
	}
	return append(out,
		cond(mcsv1beta1.ServiceExportConditionConflict, metav1.ConditionFalse, string(mcsv1beta1.ServiceExportReasonNoConflicts), "no conflicting export in the federation"),
		cond(mcsv1beta1.ServiceExportConditionReady, metav1.ConditionTrue, string(mcsv1beta1.ServiceExportReasonExported), "published to the federation"))
}

// updateExportConditions writes the conditions of every ServiceExport that
// changed, and records an Event when an export becomes invalid or
// conflicting.
func (b *Bridge) updateExportConditions(ctx context.Context, all map[string]*mcsv1beta1.ServiceExport, invalid map[string]string, rejected map[string]conflict) error {
	var errs []error
	reported := map[string]string{}
	for key, se := range all {
		var c *conflict
		if rc, ok := rejected[key]; ok && invalid[key] == "" {
			c = &rc
		}
		problem := invalid[key]
		reason := ReasonExportInvalid
		if c != nil {
			problem, reason = c.Reason+": "+c.Message, ReasonExportConflict
		}
		if problem != "" {
			reported[key] = problem
			if b.reported[key] != problem {
				b.log.Warn("federate: ServiceExport skipped", "namespace", se.Namespace, "name", se.Name, "problem", problem)
				b.events.warn(se, reason, "meshfed does not export this service: "+problem)
			}
		}
		conds := append([]metav1.Condition(nil), se.Status.Conditions...)
		for _, d := range desiredConditions(se.Generation, invalid[key], c) {
			apimeta.SetStatusCondition(&conds, d)
		}
		if reflect.DeepEqual(conds, se.Status.Conditions) {
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
