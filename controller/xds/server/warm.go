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

// markWarming sets Warming on each of cps from when its route first named
// each of its clusters, records the names for the next update, and sets
// b.warmingUntil to when the next warming cluster is due (zero: none).
func (b *builder) markWarming(cps []generate.ClientPort) {
	now := b.now()
	first := b.named == nil
	named := make(map[string]map[string]time.Time, len(cps))
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
			at[cluster] = t
			if due := t.Add(b.warmDelay); due.After(now) {
				c.Warming = append(c.Warming, cluster)
				if b.warmingUntil.IsZero() || due.Before(b.warmingUntil) {
					b.warmingUntil = due
				}
			}
		}
		named[route] = at
	}
	b.named = named
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
