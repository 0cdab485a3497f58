package federation

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	members          *prometheus.GaugeVec
	catalogVersion   *prometheus.GaugeVec
	gossipBytes      *prometheus.CounterVec
	rejected         *prometheus.CounterVec
	propagation      prometheus.Histogram
	viewUpdate       prometheus.Histogram
	withdrawnService *prometheus.GaugeVec
	updatesSent      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	buckets := []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &metrics{
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshfed_federation_members",
			Help: "Federation members by state (alive, suspect, dead, left), as this member sees them.",
		}, []string{"state"}),
		catalogVersion: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshfed_federation_catalog_version",
			Help: "Version of each cluster's catalog held by this member (own cluster included).",
		}, []string{"cluster"}),
		gossipBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_federation_gossip_bytes_total",
			Help: "Bytes of gossip this member sent and received, by transport (udp packets, tcp streams).",
		}, []string{"direction", "transport"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_federation_catalogs_rejected_total",
			Help: "Catalogs and gossip claims rejected, by reason (decode, oversize, signature, chain, identity, invalid; old: an update older than the catalog held, replayed or late; far-future: a version claim far ahead of the held catalog; restart-note: a forged, out-of-date or replayed restart note).",
		}, []string{"reason"}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshfed_federation_catalog_propagation_seconds",
			Help:    "Time from a remote cluster signing a catalog version to this member's view holding it (needs synchronised clocks).",
			Buckets: buckets,
		}),
		viewUpdate: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshfed_federation_catalog_fetch_seconds",
			Help:    "Time from this member learning of a new remote catalog version to its view holding it.",
			Buckets: buckets,
		}),
		withdrawnService: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshfed_federation_withdrawn_services",
			Help: "Services of a remote cluster currently withdrawn by the failure policy.",
		}, []string{"cluster"}),
		updatesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_federation_catalog_updates_sent_total",
			Help: "Catalog updates this member sent, by role (owner: its own catalog; relay: another cluster's) and kind (delta, whole: the whole catalog, head: the signed head alone).",
		}, []string{"role", "kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.members, m.catalogVersion, m.gossipBytes, m.rejected, m.propagation, m.viewUpdate, m.withdrawnService, m.updatesSent)
	}
	return m
}
