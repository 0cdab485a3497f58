package server

import (
	"context"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// Writing to the snapshot cache. What each proxy is to be sent is decided
// under Server.mu, but written to go-control-plane's cache only after mu
// is released, so that the server's state is never locked while another
// component runs (the cache takes its own lock and answers open watches).
// The writes are queued under mu, in the order they were decided, and
// flush applies them in that order, one flusher at a time, so that an
// older snapshot never replaces a newer one. Every method that queues
// defers flush before it locks mu: it returns only once its writes (and
// any queued before them) are in the cache.

// cacheWrite sets key's snapshot, or clears it when snap is nil.
type cacheWrite struct {
	key  string
	snap *cachev3.Snapshot
}

// publish queues key's snapshot if it changed. Called under s.mu.
func (s *Server) publish(key proxyKey, ks *keyState) error {
	snap, err := s.builder.publish(key, ks)
	if err != nil {
		s.cfg.Logger.Error("xds: cannot build configuration for proxy", "proxy", key.String(), "err", err)
		return err
	}
	if snap != nil {
		s.queue(cacheWrite{key: key.String(), snap: snap})
		s.metrics.snapshotsSet.Inc()
	}
	return nil
}

// queue appends w to the pending writes. Called under s.mu.
func (s *Server) queue(w cacheWrite) {
	s.pendingMu.Lock()
	s.pending = append(s.pending, w)
	s.pendingMu.Unlock()
}

// flush applies the pending writes in order. Called without s.mu.
func (s *Server) flush() {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	for {
		s.pendingMu.Lock()
		writes := s.pending
		s.pending = nil
		s.pendingMu.Unlock()
		if len(writes) == 0 {
			return
		}
		for _, w := range writes {
			if w.snap == nil {
				s.cache.ClearSnapshot(w.key)
				continue
			}
			if err := s.cache.SetSnapshot(context.Background(), w.key, w.snap); err != nil {
				s.cfg.Logger.Error("xds: set snapshot; the proxy keeps its last configuration", "proxy", w.key, "err", err)
			}
		}
	}
}
