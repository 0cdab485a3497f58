package server

import (
	"maps"
	"slices"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/meshfed/meshfed/controller/xds/generate"
)

// Make before break. A proxy is sent each type of an update on its own,
// and the types of one update reach it in no fixed order. A cluster the
// update removes (a remote cluster withdrawn from a split, a deleted
// backend) could reach a proxy before the routes that stop using it; the
// calls the old routes still send there would fail (grpc-go: Unavailable,
// "resource … has been removed"; Envoy: 503). Envoy's xDS protocol says to
// remove clusters only once nothing refers to them. So a cluster removed
// by an update stays in every proxy's cluster list, unused, for
// Config.DrainDelay; then drainRetired takes it out and the proxies are
// sent their clusters again.
//
// A load assignment that is removed needs no such care: a
// state-of-the-world EDS response that lacks a name does not delete it
// (only listeners and clusters are removed by absence). One that loses
// its last ready endpoint does, when it is a split's backend: the same
// update moves the route's share off it (generate: weight 0), and a call
// the old route still sends there would find no endpoint ("no targets to
// pick from"). So its last ready load assignment stays published for
// Config.WarmDelay, the time a client is given to apply a route
// (holdEndpoints); then drainRetired publishes what it has now. The hold
// is kept short: a backend that returns while held keeps the client's
// connections to its old endpoints, with their reconnect backoff.

// retiredCluster is a removed cluster still published, and when it was
// removed.
type retiredCluster struct {
	res types.ResourceWithTTL
	at  time.Time
}

// retire records, after kind's shared clusters were replaced (old is the
// map published before), the clusters that are no longer there, and
// publishes them along with the live ones.
func (b *builder) retire(sk *sharedKind, old map[string]types.ResourceWithTTL) {
	v := &sk.types[types.Cluster]
	live := v.res.Items
	now := b.now()
	for n, r := range old {
		if _, ok := live[n]; ok {
			continue
		}
		if _, ok := sk.retired[n]; ok {
			continue
		}
		if sk.retired == nil {
			sk.retired = map[string]retiredCluster{}
		}
		sk.retired[n] = retiredCluster{res: r, at: now}
		b.newlyRetired = true
	}
	for n := range sk.retired {
		if _, ok := live[n]; ok {
			delete(sk.retired, n)
		}
	}
	if len(sk.retired) > 0 {
		sk.publishClusters(v.version)
	}
}

// publishClusters publishes the live clusters and the retired ones under
// version.
func (sk *sharedKind) publishClusters(version string) {
	v := &sk.types[types.Cluster]
	if len(sk.retired) == 0 {
		v.res = cachev3.NewResources(version, v.items)
		return
	}
	items := make(map[string]types.ResourceWithTTL, len(v.items)+len(sk.retired))
	for _, r := range v.items {
		items[cachev3.GetResourceName(r)] = types.ResourceWithTTL{Resource: r}
	}
	for n, r := range sk.retired {
		items[n] = r.res
	}
	v.res = cachev3.Resources{Version: version, Items: items}
}

// holdEndpoints reports whether the load assignments of key, changed from
// prev to next, are to stay as prev's for now: key is a split backend that
// had a ready endpoint and has none (or is held already and still has
// none), on the same ports. It records the hold and asks for a drain.
func (b *builder) holdEndpoints(key edsKey, prev, next *upstreamEDS) bool {
	if next.svc.HasReady() {
		delete(b.held, key)
		return false
	}
	if _, ok := b.held[key]; ok {
		return true
	}
	if prev == nil || !prev.svc.HasReady() || !slices.Equal(prev.svc.Ports, next.svc.Ports) {
		return false
	}
	backend := false
	for _, p := range next.svc.Ports {
		_, ok := b.ready[generate.ClusterName(key.svc, p.Port, key.remote)]
		backend = backend || ok
	}
	if !backend {
		return false
	}
	if b.held == nil {
		b.held = map[edsKey]time.Time{}
	}
	b.held[key] = b.now()
	b.newlyRetired = true
	return true
}

// drainHeld publishes the current load assignments of the held backends
// due (held at least delay ago), under a new EDS version. It reports
// whether it published any, and when the next held one is due.
func (b *builder) drainHeld(delay time.Duration) (drained bool, next time.Time) {
	now := b.now()
	var items map[string]types.ResourceWithTTL
	for key, at := range b.held {
		if due := at.Add(delay); due.After(now) {
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		delete(b.held, key)
		e := b.edsCache[key]
		if e == nil {
			continue
		}
		if items == nil {
			items = maps.Clone(b.eds.res.Items) // published snapshots hold the old map
		}
		for _, r := range e.clas {
			items[cachev3.GetResourceName(r)] = types.ResourceWithTTL{Resource: r}
		}
	}
	if items == nil {
		return false, next
	}
	b.eds.version = b.nextVersion()
	b.eds.res = cachev3.Resources{Version: b.eds.version, Items: items}
	return true, next
}

// drainRetired takes out the clusters retired at least delay ago, under a
// new version so that proxies are sent the list without them, and
// publishes the load assignments held at least hold ago (drainHeld). It
// reports whether it changed anything, and when the next retired cluster
// or held load assignment is due (zero if none is left).
func (b *builder) drainRetired(delay, hold time.Duration) (drained bool, next time.Time) {
	drained, next = b.drainHeld(hold)
	now := b.now()
	for _, sk := range b.kinds {
		took := false
		for n, r := range sk.retired {
			if due := r.at.Add(delay); !due.After(now) {
				delete(sk.retired, n)
				took = true
			} else if next.IsZero() || due.Before(next) {
				next = due
			}
		}
		if took {
			sk.types[types.Cluster].version = b.nextVersion()
			sk.publishClusters(sk.types[types.Cluster].version)
			drained = true
		}
	}
	return drained, next
}

// alarm runs a function at the earliest time it was set for. It is used
// under Server.mu.
type alarm struct {
	t  *time.Timer
	at time.Time
}

// set makes f run at when, unless the alarm is already due earlier.
func (a *alarm) set(when time.Time, f func()) {
	if a.t != nil && !a.at.After(when) {
		return
	}
	a.stop()
	a.at = when
	a.t = time.AfterFunc(time.Until(when), f)
}

// fired is called first by the function the alarm ran.
func (a *alarm) fired() { a.t = nil }

func (a *alarm) stop() {
	if a.t != nil {
		a.t.Stop()
		a.t = nil
	}
}

// drain takes out the clusters that are due and republishes every proxy's
// configuration. It runs on its timer's goroutine.
func (s *Server) drain() {
	defer s.flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drainAlarm.fired()
	drained, next := s.builder.drainRetired(s.cfg.DrainDelay, s.cfg.WarmDelay)
	if !next.IsZero() {
		s.drainAlarm.set(next, s.drain)
	}
	if drained {
		s.publishAll()
	}
}
