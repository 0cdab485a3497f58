package federate

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	remoteToView *prometheus.HistogramVec
	remoteToPush prometheus.Observer
	catalogAge   prometheus.Observer
	reconcile    prometheus.Observer
	publishes    *prometheus.CounterVec
	exports      *prometheus.GaugeVec
	imports      prometheus.Gauge
	// remoteInvalid counts, per remote cluster, the services of its
	// catalog the bridge skipped as invalid.
	remoteInvalid *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	toView := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "meshfed_federate_remote_change_to_state_seconds",
		Help:    "Time from the federation signalling a remote change to the bridge handing out the new remote state.",
		Buckets: buckets,
	}, nil)
	toPush := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meshfed_federate_remote_change_to_push_seconds",
		Help:    "Time from the federation signalling a remote change to the controller reporting the resulting state pushed to proxies (Bridge.Pushed).",
		Buckets: buckets,
	})
	age := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meshfed_federate_remote_catalog_age_seconds",
		Help:    "Age of a new remote catalog version (since its owner signed it) when the bridge first used it; includes clock skew between clusters.",
		Buckets: buckets,
	})
	rec := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meshfed_federate_reconcile_seconds",
		Help:    "Duration of one reconcile of exports, conditions, ServiceImports and the remote state.",
		Buckets: buckets,
	})
	pubs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshfed_federate_publishes_total",
		Help: "Catalog publications by result (ok, error).",
	}, []string{"result"})
	exp := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshfed_federate_exports",
		Help: "Local ServiceExports by state: published, invalid (e.g. no such service), conflict (published, but another cluster exports the name in a conflicting way).",
	}, []string{"state"})
	imp := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meshfed_federate_service_imports",
		Help: "ServiceImports the bridge wants in this cluster.",
	})
	inv := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshfed_federate_remote_services_invalid",
		Help: "Services of a remote cluster's catalog that the bridge skipped as invalid (bad names, addresses, identities); the rest of the catalog is served.",
	}, []string{"cluster"})
	m := &metrics{remoteToView: toView, remoteToPush: toPush, catalogAge: age, reconcile: rec, publishes: pubs, exports: exp, imports: imp, remoteInvalid: inv}
	if reg != nil {
		for _, c := range []prometheus.Collector{toView, toPush, age, rec, pubs, exp, imp, inv} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
