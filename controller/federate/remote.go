package federate

import (
	"errors"
	"fmt"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
)

// maxLoggedInvalid bounds the skipped services one log line names.
const maxLoggedInvalid = 3

// checkedCatalog is the outcome of checking one version of one remote
// catalog: which of its services are skipped. Catalog versions are
// immutable, so each is checked once.
type checkedCatalog struct {
	version uint64
	// skip holds the keys ("namespace/name", raw) of skipped services.
	skip map[string]bool
	// problems say why, for the first MaxListedServices skipped services
	// (names escaped with mesh.Quote); count is how many were skipped.
	problems []error
	count    int
}

// errListedTwice is why every listing of a name its catalog lists more
// than once is skipped: which one the owner meant is unknown.
var errListedTwice = errors.New("listed more than once in its catalog")

// checkCatalog judges every service of a remote catalog on its own, as
// strictly as a local one (mesh.Service.ValidateRemote); a network name
// that is not a label value spoils every service (their endpoints would
// carry it). Nothing else of the catalog is lost.
func checkCatalog(cluster, trustDomain string, cat *catalog.Catalog) checkedCatalog {
	cc := checkedCatalog{version: cat.Version, skip: map[string]bool{}}
	count := make(map[string]int, len(cat.Services))
	for _, es := range cat.Services {
		count[es.Key()]++
	}
	badNetwork := cat.Network != "" && !mesh.IsLabelValue(cat.Network)
	for _, es := range cat.Services {
		var err error
		switch {
		case badNetwork:
			err = fmt.Errorf("%w %s/%s from cluster %s: catalog network %s: not a label value", mesh.ErrRemoteService, mesh.Quote(es.Namespace), mesh.Quote(es.Name), mesh.Quote(cluster), mesh.Quote(cat.Network))
		case count[es.Key()] > 1:
			err = fmt.Errorf("%w %s/%s from cluster %s: %w", mesh.ErrRemoteService, mesh.Quote(es.Namespace), mesh.Quote(es.Name), mesh.Quote(cluster), errListedTwice)
		default:
			err = serviceFromCatalog(cluster, cat.Network, es).ValidateRemote(cluster, trustDomain)
		}
		if err != nil {
			cc.skip[es.Key()] = true
			cc.count++
			if len(cc.problems) < MaxListedServices {
				cc.problems = append(cc.problems, err)
			}
		}
	}
	return cc
}

// validRemote returns rv without the remote services that fail their
// checks: from each cluster's routable Services, its Withdrawn list and its
// Catalog (a copy; rv is shared and left alone), so that nothing
// downstream (conflict resolution, ServiceImports, the mesh state, status)
// sees them. It reports newly skipped services once per catalog version.
func (b *Bridge) validRemote(rv *federation.RemoteView) *federation.RemoteView {
	if rv == nil {
		return nil
	}
	out := *rv
	out.Clusters = make(map[string]federation.ClusterView, len(rv.Clusters))
	invalid := map[string]checkedCatalog{}
	for name, cv := range rv.Clusters {
		if cv.Catalog == nil {
			out.Clusters[name] = cv
			continue
		}
		cc, ok := b.checked[name]
		if !ok || cc.version != cv.Catalog.Version {
			cc = checkCatalog(name, b.cfg.TrustDomain, cv.Catalog)
			b.checked[name] = cc
			b.reportInvalid(name, cc)
		}
		if cc.count > 0 {
			cv = withoutSkipped(cv, cc.skip)
			invalid[name] = cc
		}
		out.Clusters[name] = cv
	}
	for name := range b.checked {
		if _, ok := rv.Clusters[name]; !ok {
			delete(b.checked, name)
		}
	}
	b.metrics.remoteInvalid.Reset()
	for name := range rv.Clusters {
		b.metrics.remoteInvalid.WithLabelValues(name).Set(float64(invalid[name].count))
	}
	b.invalid = invalid
	return &out
}

// withoutSkipped returns cv without the skipped services, in its Catalog,
// Services and Withdrawn.
func withoutSkipped(cv federation.ClusterView, skip map[string]bool) federation.ClusterView {
	keep := func(es catalog.ExportedService) bool { return !skip[es.Key()] }
	cat := *cv.Catalog
	cat.Services = filterServices(cv.Catalog.Services, keep)
	cv.Catalog = &cat
	cv.Services = filterServices(cv.Services, keep)
	var withdrawn []string
	for _, k := range cv.Withdrawn {
		if !skip[k] {
			withdrawn = append(withdrawn, k)
		}
	}
	cv.Withdrawn = withdrawn
	return cv
}

func filterServices(in []catalog.ExportedService, keep func(catalog.ExportedService) bool) []catalog.ExportedService {
	out := make([]catalog.ExportedService, 0, len(in))
	for _, es := range in {
		if keep(es) {
			out = append(out, es)
		}
	}
	return out
}

// reportInvalid logs one line per checked catalog version that has
// skipped services: how many, and the first few with their reasons.
func (b *Bridge) reportInvalid(cluster string, cc checkedCatalog) {
	if cc.count == 0 {
		return
	}
	first := make([]string, 0, maxLoggedInvalid)
	for _, err := range cc.problems[:min(len(cc.problems), maxLoggedInvalid)] {
		first = append(first, shorten(err.Error(), maxInvalidMessage))
	}
	b.log.Warn("federate: skipping invalid services of a remote catalog; the rest of it is served",
		"cluster", mesh.Quote(cluster), "version", cc.version, "skipped", cc.count, "first", first)
}
