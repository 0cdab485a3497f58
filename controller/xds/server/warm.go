package server

import (
	"time"

	"github.com/meshfed/meshfed/controller/xds/generate"
)

// Warming. A route that starts to send calls to a cluster it did not name
// before makes grpc-go fail calls for a moment (generate/routes.go). So a
// backend cluster new to a route is Warming for Config.WarmDelay: the
// route names it, sends it nothing, and keeps sending its calls where it
// did; then warm regenerates the routes without it Warming. A route new
// as a whole has no client that could be caught between two of its
// versions, so its clusters are never Warming, nor are any at the first
// update (the proxies connect after it).
//
// A backend whose endpoints become ready again (a withdrawn cluster
// returns, a backend scaled from zero) warms too, while another backend
// can take the calls: its route weight and its load assignment change in
// the same update, and reach a proxy in no fixed order; a call the new
// route sends there before the endpoints arrived would fail ("no targets
// to pick from", Envoy's 503). The opposite move, endpoints going away, is
// drain.go's: the old load assignment stays until the route has moved.

// markWarming sets Warming on each of cps from when its route first named
// each of its clusters, records the names for the next update, and sets
// b.warmingUntil to when the next warming cluster is due (zero: none).
func (b *builder) markWarming(cps []generate.ClientPort) {
	now := b.now()
	first := b.named == nil
	named := make(map[string]map[string]time.Time, len(cps))
	ready := map[string]bool{}
	b.warmingUntil = time.Time{}
	for i := range cps {
		c := &cps[i]
		route := c.Name()
		prev, known := b.named[route]
		at := make(map[string]time.Time, 1+len(c.Backends))
		for _, cluster := range c.References() {
			t, ok := prev[cluster]
			if !ok && known && !first && b.warmDelay > 0 {
				t = now
			}
			if ok && b.warmDelay > 0 && becameReady(c, cluster, b.ready) {
				t = now
			}
			at[cluster] = t
			if due := t.Add(b.warmDelay); due.After(now) {
				c.Warming = append(c.Warming, cluster)
				if b.warmingUntil.IsZero() || due.Before(b.warmingUntil) {
					b.warmingUntil = due
				}
			}
		}
		named[route] = at
		for _, be := range c.Backends {
			ready[be.Cluster] = be.Ready
		}
	}
	b.named, b.ready = named, ready
}

// becameReady reports whether cluster, a backend of c, has a ready
// endpoint now but had none at the last update (wasReady), while another
// backend of c can take calls.
func becameReady(c *generate.ClientPort, cluster string, wasReady map[string]bool) bool {
	now, other := false, false
	for _, be := range c.Backends {
		if be.Cluster == cluster {
			now = now || be.Ready
		} else if be.Ready && be.Weight > 0 {
			other = true
		}
	}
	was, known := wasReady[cluster]
	return now && known && !was && other
}

// warm regenerates the shared configuration once warming clusters are due,
// and publishes it. It runs on its alarm's goroutine.
func (s *Server) warm() {
	defer s.flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.warmAlarm.fired()
	if s.builder.ix == nil {
		return
	}
	if err := s.builder.updateShared(s.builder.ix); err != nil {
		s.cfg.Logger.Error("xds: generated configuration is invalid; proxies keep their last configuration", "err", err)
		return
	}
	s.setAlarms()
	if err := s.publishAll(); err != nil {
		s.cfg.Logger.Error("xds: publishing configuration", "err", err)
	}
}
