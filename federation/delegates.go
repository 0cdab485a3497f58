package federation

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meshfed/meshfed/federation/catalog"
)

// Events from memberlist's callbacks to the loop goroutine. memberlist calls
// the delegates from its own goroutines, some under its locks: they only
// copy their arguments into the queue and return.
type (
	evMember struct {
		kind string // join, update, leave
		node memberlist.Node
	}
	evContact struct {
		name string
		at   time.Time
	}
	evMsg        struct{ b []byte }
	evState      struct{ b []byte }
	evConflict   struct{ existing, other memberlist.Node }
	evSendFailed struct {
		to      string
		cluster string
		err     error
	}
)

// eventQueue is unbounded so that memberlist is never blocked and no
// membership event is lost; signal has room for one wake-up.
type eventQueue struct {
	mu     sync.Mutex
	items  []any
	signal chan struct{}
}

func (q *eventQueue) push(e any) {
	q.mu.Lock()
	q.items = append(q.items, e)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *eventQueue) drain() []any {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = nil
	return items
}

// delegate implements memberlist's Delegate, EventDelegate,
// ConflictDelegate, AliveDelegate and PingDelegate for a Federation.
type delegate struct{ f *Federation }

func copyNode(n *memberlist.Node) memberlist.Node {
	c := *n
	c.Addr = slices.Clone(n.Addr)
	c.Meta = slices.Clone(n.Meta)
	return c
}

func (d delegate) NodeMeta(limit int) []byte {
	m := *d.f.meta.Load()
	if len(m) > limit {
		return nil // cannot happen: meta is ~100 bytes
	}
	return m
}

func (d delegate) NotifyMsg(b []byte) {
	d.f.events.push(evMsg{b: bytes.Clone(b)})
}

func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.f.bcast.GetBroadcasts(overhead, limit)
}

func (d delegate) LocalState(join bool) []byte { return *d.f.localState.Load() }

func (d delegate) MergeRemoteState(buf []byte, join bool) {
	d.f.events.push(evState{b: bytes.Clone(buf)})
}

func (d delegate) NotifyJoin(n *memberlist.Node) {
	d.f.events.push(evMember{kind: "join", node: copyNode(n)})
}

func (d delegate) NotifyLeave(n *memberlist.Node) {
	d.f.events.push(evMember{kind: "leave", node: copyNode(n)})
}

func (d delegate) NotifyUpdate(n *memberlist.Node) {
	d.f.events.push(evMember{kind: "update", node: copyNode(n)})
}

func (d delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.f.events.push(evConflict{existing: copyNode(existing), other: copyNode(other)})
}

// NotifyAlive refuses members whose name is not a cluster name or whose
// metadata is not meshfed's, so that a foreign memberlist cluster sharing
// the key (or a misconfigured one) cannot join.
func (d delegate) NotifyAlive(n *memberlist.Node) error {
	if !catalog.ValidClusterName(n.Name) {
		return fmt.Errorf("member name %q is not a cluster name", n.Name)
	}
	if _, err := decodeMeta(n.Meta); err != nil {
		return fmt.Errorf("member %s: %w", n.Name, err)
	}
	return nil
}

func (d delegate) AckPayload() []byte { return nil }

func (d delegate) NotifyPingComplete(n *memberlist.Node, rtt time.Duration, payload []byte) {
	d.f.events.push(evContact{name: n.Name, at: time.Now()})
}

// logWriter forwards memberlist's log lines to slog at their level.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(line, "[DEBUG]"):
		w.log.Debug(line)
	case strings.Contains(line, "[WARN]"):
		w.log.Warn(line)
	case strings.Contains(line, "[ERR"):
		w.log.Error(line)
	default:
		w.log.Info(line)
	}
	return len(p), nil
}
