package federate

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/meshfed/meshfed/controller/kube"
	"github.com/meshfed/meshfed/mesh"
)

// ErrJunctionStopped is returned by Junction.Update after Run returned.
var ErrJunctionStopped = errors.New("federate: junction stopped")

// RemoteSource is the federation's remote view as the Junction reads it.
// *Bridge implements it.
type RemoteSource interface {
	// Remote returns the current remote view; nil means none yet.
	Remote() *RemoteState
	// Subscribe signals every change of Remote.
	Subscribe() (<-chan struct{}, func())
	// Pushed says that proxies have the state built from version.
	Pushed(version uint64)
	// LocalChanged says that the cluster's own State changed: the
	// watcher, which debounces every change of Services, Pods and
	// EndpointSlices, has passed on a new one. It must not block.
	LocalChanged()
}

// Junction is where the cluster's own mesh.State (from the Kubernetes
// watcher) meets the federation's remote view: every State it passes on
// holds the remote catalogs and imports, with TrafficSplit backends that
// only other clusters export resolved to them (mesh.ResolveSplitBackends).
// Problems are judged on that merged State, so a backend another cluster
// supplies is never reported missing; when the remote view changes, the
// merged State is judged again and the problems reach the watcher's Event
// reporter (kube.ProblemNotifier).
//
// One goroutine, Run's, owns the last local State and the remote source;
// Update and SetRemote hand their values to it, and it calls the next Sink
// and the source holding no lock.
type Junction struct {
	next     kube.Sink
	log      *slog.Logger
	updates  chan junctionUpdate
	sources  chan junctionSource
	done     chan struct{}
	problems atomic.Pointer[[]mesh.Problem]
	changed  chan struct{}
}

type junctionUpdate struct {
	state mesh.State
	reply chan junctionResult
}

// junctionSource is a new remote source; with hold > 0 the remote view
// passed on so far is kept until the source has caught up (ReplaceRemote).
type junctionSource struct {
	src  RemoteSource
	hold time.Duration
}

type junctionResult struct {
	problems []mesh.Problem
	err      error
}

// NewJunction returns a Junction that passes merged States to next. Start
// it with Run before the watcher.
func NewJunction(next kube.Sink, log *slog.Logger) *Junction {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Junction{
		next:    next,
		log:     log,
		updates: make(chan junctionUpdate),
		sources: make(chan junctionSource),
		done:    make(chan struct{}),
		changed: make(chan struct{}, 1),
	}
}

// Update implements kube.Sink: the local State is merged with the remote
// view and passed on; it returns the problems judged on the merged State.
// It waits for Run's goroutine, and returns ErrJunctionStopped once Run
// has returned.
func (j *Junction) Update(s mesh.State) ([]mesh.Problem, error) {
	reply := make(chan junctionResult, 1)
	select {
	case j.updates <- junctionUpdate{state: s, reply: reply}:
	case <-j.done:
		return nil, ErrJunctionStopped
	}
	select {
	case r := <-reply:
		return r.problems, r.err
	case <-j.done:
		return nil, ErrJunctionStopped
	}
}

// SetRemote makes src (nil: none, federation off) the remote view; the
// last local State is passed on again with it. It waits for Run's
// goroutine (or returns at once if Run has returned).
func (j *Junction) SetRemote(src RemoteSource) { j.setSource(junctionSource{src: src}) }

// ReplaceRemote makes src the remote view in place of the current one,
// as SetRemote does, except that the remote view passed on so far is kept
// until src's view holds every cluster that one held, or for hold at
// most. It is for a federation member that restarts (its settings
// changed): the new member starts with no catalogs and fetches them from
// its peers, and until it has them this cluster keeps routing to the
// other clusters as before.
func (j *Junction) ReplaceRemote(src RemoteSource, hold time.Duration) {
	j.setSource(junctionSource{src: src, hold: hold})
}

func (j *Junction) setSource(s junctionSource) {
	select {
	case j.sources <- s:
	case <-j.done:
	}
}

// Problems implements kube.ProblemNotifier: the problems of the latest
// judgement.
func (j *Junction) Problems() []mesh.Problem {
	if p := j.problems.Load(); p != nil {
		return *p
	}
	return nil
}

// ProblemsChanged implements kube.ProblemNotifier: it fires after the
// merged State was judged again without an Update (the remote view
// changed).
func (j *Junction) ProblemsChanged() <-chan struct{} { return j.changed }

// Run serves Update and SetRemote and follows the remote source until ctx
// ends.
func (j *Junction) Run(ctx context.Context) error {
	defer close(j.done)
	var (
		local *mesh.State
		src   RemoteSource
		sub   <-chan struct{}
		unsub = func() {}
		// last is the remote view last passed on; held, while not nil, is
		// passed on instead of src's until src catches up or holdEnd.
		last, held *RemoteState
		holdEnd    <-chan time.Time
	)
	defer func() { unsub() }()
	view := func() (*RemoteState, bool) {
		if src == nil {
			return nil, false
		}
		rs := src.Remote()
		if held != nil && !covers(rs, held) {
			return held, false
		}
		held, holdEnd = nil, nil
		return rs, true
	}
	push := func(s mesh.State) ([]mesh.Problem, error) {
		rs, own := view()
		last = rs
		return j.push(s, rs, src, own)
	}
	rejudge := func() {
		if local == nil {
			return
		}
		if _, err := push(*local); err != nil {
			j.log.Error("federate: pushing the remote view", "err", err)
		}
		select {
		case j.changed <- struct{}{}:
		default:
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case u := <-j.updates:
			local = &u.state
			problems, err := push(u.state)
			u.reply <- junctionResult{problems, err}
			if src != nil {
				src.LocalChanged()
			}
		case s := <-j.sources:
			unsub()
			src, sub, unsub = s.src, nil, func() {}
			if src != nil {
				sub, unsub = src.Subscribe()
			}
			held, holdEnd = nil, nil
			if s.hold > 0 && src != nil && last != nil && len(last.Remote) > 0 {
				held, holdEnd = last, time.After(s.hold)
			}
			rejudge()
		case <-sub:
			rejudge()
		case <-holdEnd:
			j.log.Info("federate: the restarted federation member has not caught up with every cluster; passing on what it has")
			held, holdEnd = nil, nil
			rejudge()
		}
	}
}

// Merge returns the State proxies are served from: the cluster's own State
// with the federation's remote view rs (nil: federation off, local is
// returned as it is). The remote catalogs and imports replace local's, and
// every TrafficSplit backend that names no local service is pointed at the
// clusters that export it (mesh.ResolveSplitBackends: divided evenly among
// several, left as it is when no cluster has it, so that validation
// reports it). It is pure: local and rs are not changed, and the result
// shares their parts.
func Merge(local mesh.State, rs *RemoteState) mesh.State {
	if rs == nil {
		return local
	}
	local.Remote, local.Imports = rs.Remote, rs.Imports
	return mesh.ResolveSplitBackends(local)
}

// covers reports whether rs holds a catalog of every cluster old holds.
func covers(rs, old *RemoteState) bool {
	if rs == nil {
		return false
	}
	for cluster := range old.Remote {
		if _, ok := rs.Remote[cluster]; !ok {
			return false
		}
	}
	return true
}

// push merges the remote view rs into s, passes it on and keeps its
// problems. own says rs is src's current view (not one held over from a
// previous source), so src learns that proxies have it.
func (j *Junction) push(s mesh.State, rs *RemoteState, src RemoteSource, own bool) ([]mesh.Problem, error) {
	var version uint64
	if rs != nil {
		version = rs.Version
	}
	problems, err := j.next.Update(Merge(s, rs))
	j.problems.Store(&problems)
	if err == nil && own {
		src.Pushed(version)
	}
	return problems, err
}
