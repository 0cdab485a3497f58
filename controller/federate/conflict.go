package federate

import (
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/catalog"
)

// MCS conflict resolution as meshfed applies it in each cluster.
//
// The MCS KEP gives precedence to the oldest export. The export time of
// another cluster is only its claim, and a member could backdate it to take
// a name from everyone else. So each cluster resolves conflicts with what it
// knows first hand:
//   - its own export always takes precedence: a remote export never evicts
//     it;
//   - a remote export counts as made when this cluster first saw it, or
//     later if its owner says so (max(claimed, first seen)); a backdated
//     claim gains nothing;
//   - same time: the smaller cluster name.
//
// First-seen times live in memory. After a restart, the remote exports the
// ServiceImport lists count from its creation (Bridge.importedBefore), so
// that a restart does not hand a name to a backdated newcomer.
//
// A losing remote export is left out of the clusterset service (and logged);
// the local ServiceExport it conflicts with reports it in its Conflict
// condition and an Event.

// exporter is one cluster's export of a name.
type exporter struct {
	Cluster string
	Service catalog.ExportedService
	// Local marks this cluster's own export, which takes precedence over
	// every remote one.
	Local bool
	// At is when the export counts as made: a local one's ServiceExport
	// creation, a remote one's claimed time bounded by firstSeen. Zero:
	// unknown (counts as newest).
	At time.Time
}

// localExporter is this cluster's own export of es.
func localExporter(cluster string, es catalog.ExportedService) exporter {
	return exporter{Cluster: cluster, Service: es, Local: true, At: es.ExportedAt}
}

// remoteExporter is another cluster's export of es, its time bounded by
// when this cluster first saw it.
func remoteExporter(cluster string, es catalog.ExportedService, seen *firstSeen) exporter {
	return exporter{Cluster: cluster, Service: es, At: seen.bound(cluster, es)}
}

// precedes reports whether a takes precedence over b: the local export
// first, then the older export (an unknown time counts as newest), then
// the smaller cluster name.
func precedes(a, b exporter) bool {
	if a.Local != b.Local {
		return a.Local
	}
	ta, tb := a.At, b.At
	switch {
	case ta.IsZero() && !tb.IsZero():
		return false
	case !ta.IsZero() && tb.IsZero():
		return true
	case !ta.Equal(tb):
		return ta.Before(tb)
	}
	return a.Cluster < b.Cluster
}

// firstSeen remembers when this cluster first saw each remote cluster's
// export of each name. It lives in memory; what survives a restart is the
// ServiceImport, which lists the clusters whose exports were imported (see
// observe's prior). Owned by the bridge's Run goroutine.
type firstSeen struct {
	at map[string]map[string]time.Time // cluster → "namespace/name" → first seen
}

func newFirstSeen() *firstSeen { return &firstSeen{at: map[string]map[string]time.Time{}} }

// priorImport tells when cluster's export of key was already imported
// before this cluster saw it (the ServiceImport this cluster wrote before
// a restart lists cluster): then it counts from then (at most now).
type priorImport func(cluster, key string) (time.Time, bool)

// observe records, at now, every export in rv's held catalogs not seen
// before, and forgets the exports (and clusters) that are gone: an export
// withdrawn by its owner and made again counts from when it came back. A
// service the failure policy withdrew stays in the held catalog and keeps
// its time. A new export that prior knows (nil: none) counts from prior's
// time, so that a restart keeps the precedence of what was imported.
func (f *firstSeen) observe(rv *federation.RemoteView, now time.Time, prior priorImport) {
	held := map[string]map[string]bool{}
	if rv != nil {
		for name, cv := range rv.Clusters {
			if cv.Catalog == nil {
				continue
			}
			keys := map[string]bool{}
			for _, es := range cv.Catalog.Services {
				keys[es.Key()] = true
			}
			held[name] = keys
		}
	}
	for name := range f.at {
		if held[name] == nil {
			delete(f.at, name)
		}
	}
	for name, keys := range held {
		seen := f.at[name]
		if seen == nil {
			seen = map[string]time.Time{}
			f.at[name] = seen
		}
		for k := range seen {
			if !keys[k] {
				delete(seen, k)
			}
		}
		for k := range keys {
			if _, ok := seen[k]; ok {
				continue
			}
			seen[k] = now
			if prior == nil {
				continue
			}
			if at, ok := prior(name, k); ok && at.Before(now) {
				seen[k] = at
			}
		}
	}
}

// bound returns when cluster's export es counts as made: its claimed
// time, but never earlier than this cluster first saw it. An export not
// observed yet counts as newest.
func (f *firstSeen) bound(cluster string, es catalog.ExportedService) time.Time {
	if f == nil {
		return time.Time{}
	}
	seen, ok := f.at[cluster][es.Key()]
	if !ok {
		return time.Time{}
	}
	if es.ExportedAt.After(seen) {
		return es.ExportedAt
	}
	return seen
}

// conflict says why an export was left out.
type conflict struct {
	// Reason is the MCS condition reason: PortConflict or TypeConflict.
	Reason string
	// Message names the clusters and what differs; names are quoted.
	Message string
}

// leftOutExport is a remote cluster's export that lost conflict resolution
// here and is left out of the clusterset service.
type leftOutExport struct {
	Key, Cluster string
	conflict
}

// resolution is the outcome of conflict resolution for one name.
type resolution struct {
	// Accepted are the exporters in precedence order.
	Accepted []exporter
	// Rejected are the conflicting exports by cluster.
	Rejected map[string]conflict
	// Ports is the union of the accepted exporters' ports, sorted by port.
	Ports    []catalog.Port
	Headless bool
}

func portKey(p catalog.Port) string {
	if p.Name != "" {
		return p.Name
	}
	return "#" + strconv.Itoa(int(p.Port))
}

// resolve applies MCS conflict resolution to the exporters of one name. The
// derived service has the union of the exporters' ports; an export that
// uses a port name (or number) with another number or protocol than an
// export of higher precedence, or differs in headlessness, is rejected as
// a whole: left out of the clusterset service. The first exporter is never
// rejected.
func resolve(exporters []exporter) resolution {
	sorted := append([]exporter(nil), exporters...)
	sort.Slice(sorted, func(i, j int) bool { return precedes(sorted[i], sorted[j]) })
	res := resolution{Rejected: map[string]conflict{}}
	byKey := map[string]catalog.Port{}
	byNumber := map[uint16]string{}
	owner := map[string]string{}
	for i, e := range sorted {
		if i > 0 && e.Service.Headless != res.Headless {
			res.Rejected[e.Cluster] = conflict{string(mcsv1beta1.ServiceExportReasonTypeConflict),
				"cluster " + quote(e.Cluster) + " exports it as " + importType(e.Service.Headless) +
					", cluster " + quote(sorted[0].Cluster) + " as " + importType(res.Headless)}
			continue
		}
		var why string
		for _, p := range e.Service.Ports {
			k := portKey(p)
			if q, ok := byKey[k]; ok && (q.Port != p.Port || !strings.EqualFold(q.Protocol, p.Protocol)) {
				why = "cluster " + quote(e.Cluster) + " exports port " + quote(k) + " as " + portString(p) +
					", cluster " + quote(owner[k]) + " as " + portString(q)
				break
			}
			if other, ok := byNumber[p.Port]; ok && other != k {
				why = "cluster " + quote(e.Cluster) + " names port " + strconv.Itoa(int(p.Port)) + " " + quote(k) +
					", cluster " + quote(owner[other]) + " names it " + quote(other)
				break
			}
		}
		if why != "" {
			res.Rejected[e.Cluster] = conflict{string(mcsv1beta1.ServiceExportReasonPortConflict), why}
			continue
		}
		if i == 0 {
			res.Headless = e.Service.Headless
		}
		for _, p := range e.Service.Ports {
			k := portKey(p)
			if _, ok := byKey[k]; !ok {
				byKey[k], byNumber[p.Port], owner[k] = p, k, e.Cluster
				res.Ports = append(res.Ports, catalog.Port{Name: p.Name, Port: p.Port, Protocol: p.Protocol})
			}
		}
		res.Accepted = append(res.Accepted, e)
	}
	sort.Slice(res.Ports, func(i, j int) bool { return res.Ports[i].Port < res.Ports[j].Port })
	return res
}

// maxConflictsListed bounds the conflicts one ServiceExport's condition
// lists; the rest are counted.
const maxConflictsListed = 3

// maxConflictMessage bounds a condition message in bytes.
const maxConflictMessage = 1024

// noteConflicts records what resolution res of name key means here: every
// rejected (remote) export is left out, and the local export, if there is
// one, reports them.
func (v *view) noteConflicts(key string, res resolution) {
	if len(res.Rejected) == 0 {
		return
	}
	clusters := make([]string, 0, len(res.Rejected))
	for c := range res.Rejected {
		clusters = append(clusters, c)
	}
	sort.Strings(clusters)
	for _, c := range clusters {
		v.leftOut = append(v.leftOut, leftOutExport{Key: key, Cluster: c, conflict: res.Rejected[c]})
	}
	if len(res.Accepted) == 0 || !res.Accepted[0].Local {
		return
	}
	var msgs []string
	for i, c := range clusters {
		if i == maxConflictsListed {
			msgs = append(msgs, "and "+strconv.Itoa(len(clusters)-i)+" more")
			break
		}
		msgs = append(msgs, res.Rejected[c].Message)
	}
	msg := strings.Join(msgs, "; ") + ". This cluster keeps its own export; the conflicting export is left out of the clusterset service here"
	v.conflicts[key] = conflict{Reason: res.Rejected[clusters[0]].Reason, Message: truncate(msg, maxConflictMessage)}
}

// quote escapes a name that may come from another cluster for a log line,
// condition or Event.
func quote(s string) string { return strconv.Quote(s) }

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func portString(p catalog.Port) string {
	proto := p.Protocol
	if proto == "" {
		proto = "http"
	}
	return strconv.Itoa(int(p.Port)) + "/" + escape(proto)
}

// escape is quote without the quotes, for a word inside a message.
func escape(s string) string {
	q := quote(s)
	return q[1 : len(q)-1]
}

func importType(headless bool) string {
	if headless {
		return "Headless"
	}
	return "ClusterSetIP"
}
