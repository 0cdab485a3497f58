package mesh

import "sort"

// ResolveSplitBackends returns the state with every TrafficSplit backend
// that names no local service pointed at the clusters that export it (MCS
// namespace sameness: a service name means the same service in every
// cluster of the set). A backend with a local service, or with Cluster
// already set, is left alone. A backend exported by several remote
// clusters is divided among them, its weight shared evenly (the remainder
// to the first in name order). A backend that no cluster has is left as it
// is, so that validation reports it.
//
// The state's other parts are shared with s, not copied; s is not changed.
func ResolveSplitBackends(s State) State {
	if len(s.TrafficSplits) == 0 || len(s.Remote) == 0 {
		return s
	}
	local := map[NamespacedName]bool{}
	for _, svc := range s.Services {
		local[NamespacedName{Namespace: svc.Namespace, Name: svc.Name}] = true
	}
	exporters := map[NamespacedName][]string{}
	for cluster, cat := range s.Remote {
		for _, svc := range cat.Services {
			k := NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
			exporters[k] = append(exporters[k], cluster)
		}
	}
	changed := false
	splits := make([]TrafficSplit, len(s.TrafficSplits))
	for i, ts := range s.TrafficSplits {
		splits[i] = ts
		var backends []SplitBackend
		touched := false
		for _, b := range ts.Backends {
			k := NamespacedName{Namespace: ts.Namespace, Name: b.Service}
			clusters := exporters[k]
			if b.Cluster != "" || local[k] || len(clusters) == 0 {
				backends = append(backends, b)
				continue
			}
			touched = true
			sort.Strings(clusters)
			n := int64(len(clusters))
			for j, c := range clusters {
				w := b.Weight / n
				if j == 0 {
					w += b.Weight % n
				}
				backends = append(backends, SplitBackend{Service: b.Service, Cluster: c, Weight: w})
			}
		}
		if touched {
			splits[i].Backends = backends
			changed = true
		}
	}
	if !changed {
		return s
	}
	s.TrafficSplits = splits
	return s
}
