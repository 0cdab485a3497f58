package federate

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

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
	sources  chan RemoteSource
	done     chan struct{}
	problems atomic.Pointer[[]mesh.Problem]
	changed  chan struct{}
}

type junctionUpdate struct {
	state mesh.State
	reply chan junctionResult
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
		sources: make(chan RemoteSource),
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
func (j *Junction) SetRemote(src RemoteSource) {
	select {
	case j.sources <- src:
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
	)
	defer func() { unsub() }()
	rejudge := func() {
		if local == nil {
			return
		}
		if _, err := j.push(*local, src); err != nil {
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
			problems, err := j.push(u.state, src)
			u.reply <- junctionResult{problems, err}
		case s := <-j.sources:
			unsub()
			src, sub, unsub = s, nil, func() {}
			if s != nil {
				sub, unsub = s.Subscribe()
			}
			rejudge()
		case <-sub:
			rejudge()
		}
	}
}

// push merges the remote view into s, passes it on and keeps its problems.
func (j *Junction) push(s mesh.State, src RemoteSource) ([]mesh.Problem, error) {
	var version uint64
	if src != nil {
		if rs := src.Remote(); rs != nil {
			s.Remote, s.Imports, version = rs.Remote, rs.Imports, rs.Version
			// A split backend that only other clusters export goes to them.
			s = mesh.ResolveSplitBackends(s)
		}
	}
	problems, err := j.next.Update(s)
	j.problems.Store(&problems)
	if err == nil && src != nil {
		src.Pushed(version)
	}
	return problems, err
}
