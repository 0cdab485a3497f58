package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the xDS server's Prometheus metrics.
type metrics struct {
	connected    *prometheus.GaugeVec
	pushes       *prometheus.CounterVec
	pushedBytes  *prometheus.CounterVec
	pushAck      *prometheus.HistogramVec
	nacks        *prometheus.CounterVec
	generation   prometheus.Histogram
	snapshotsSet prometheus.Counter
	rejected     prometheus.Gauge
	authFailures prometheus.Counter
	// secretErrors and refusedSecrets: SDS (secrets.go).
	secretErrors   prometheus.Counter
	refusedSecrets prometheus.Counter
	// refusedRequests: requests and methods refused (limits.go).
	refusedRequests *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshfed_xds_connected_proxies", Help: "xDS streams open, by data-plane kind.",
		}, []string{"kind"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_xds_pushes_total", Help: "xDS responses sent, by resource type.",
		}, []string{"type"}),
		pushedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_xds_pushed_bytes_total", Help: "Serialized resource bytes sent, by resource type.",
		}, []string{"type"}),
		pushAck: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meshfed_xds_push_ack_seconds", Help: "Time from sending a response to its ACK, by resource type.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_xds_nacks_total", Help: "Responses a proxy rejected (it keeps its last good config), by resource type.",
		}, []string{"type"}),
		generation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshfed_xds_generation_seconds", Help: "Time to generate and publish snapshots for one mesh state.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		snapshotsSet: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshfed_xds_snapshots_set_total", Help: "Snapshots published to the cache.",
		}),
		rejected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshfed_xds_rejected_objects", Help: "Mesh objects skipped as invalid in the last state.",
		}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshfed_xds_auth_failures_total", Help: "xDS streams refused because the peer was not authenticated.",
		}),
		secretErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshfed_xds_secret_errors_total", Help: "Failures to get an identity's SDS secrets from the CA.",
		}),
		refusedSecrets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshfed_xds_refused_secret_requests_total", Help: "SDS secret names proxies asked for and are never served (another identity's, or any for a proxyless client).",
		}),
		refusedRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_xds_refused_requests_total",
			Help: "xDS requests refused, ending their stream, by reason (a method not served, a field over its limit, an unknown type).",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.pushes, m.pushedBytes, m.pushAck, m.nacks, m.generation, m.snapshotsSet, m.rejected, m.authFailures,
			m.secretErrors, m.refusedSecrets, m.refusedRequests)
	}
	return m
}
