package kube

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/mesh"
)

type metrics struct {
	rejected        *prometheus.GaugeVec
	rejectedReports *prometheus.CounterVec
	generation      prometheus.Histogram
	updates         *prometheus.CounterVec
	changeToAck     prometheus.Histogram
	lastChangeToAck prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rejected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshfed_controller_rejected_objects",
			Help: "Objects currently skipped as invalid, by kind (each has an Event).",
		}, []string{"kind"}),
		rejectedReports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_controller_rejected_object_reports_total",
			Help: "Problems reported as Events (a problem is reported once until it goes away).",
		}, []string{"kind"}),
		generation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshfed_controller_config_generation_seconds",
			Help:    "Time to build the mesh state from the informer caches and generate and publish xDS for it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_controller_state_updates_total",
			Help: "Mesh states handed to the xDS server, by result (ok, error).",
		}, []string{"result"}),
		changeToAck: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshfed_controller_change_to_ack_seconds",
			Help:    "Time from the first Kubernetes change of a burst to each proxy's ACK of a new configuration version published for it.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		lastChangeToAck: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshfed_controller_last_change_to_last_ack_seconds",
			Help: "For the latest published change: time from the Kubernetes change to the last proxy ACK seen so far.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.rejected, m.rejectedReports, m.generation, m.updates, m.changeToAck, m.lastChangeToAck} {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}

func (m *metrics) setRejected(problems []mesh.Problem) {
	counts := map[string]float64{}
	for _, k := range []mesh.ObjectKind{mesh.ObjectService, mesh.ObjectTrafficTarget, mesh.ObjectHTTPRouteGroup, mesh.ObjectTCPRoute, mesh.ObjectTrafficSplit, mesh.ObjectSettings} {
		counts[string(k)] = 0
	}
	seen := map[string]bool{}
	for _, p := range problems {
		key := string(p.Kind) + "/" + p.Namespace + "/" + p.Name
		if !seen[key] {
			seen[key] = true
			counts[string(p.Kind)]++
		}
	}
	for k, v := range counts {
		m.rejected.WithLabelValues(k).Set(v)
	}
}
