package federate_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/kube"
	"github.com/meshfed/meshfed/mesh"
)

// memorySource is a small working RemoteSource: a remote view that a test
// sets, with subscribers told of every change.
type memorySource struct {
	mu   sync.Mutex
	rs   *federate.RemoteState
	subs []chan struct{}
}

func (m *memorySource) Remote() *federate.RemoteState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rs
}

func (m *memorySource) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	m.subs = append(m.subs, ch)
	m.mu.Unlock()
	return ch, func() {}
}

func (m *memorySource) Pushed(uint64) {}
func (m *memorySource) LocalChanged() {}

func (m *memorySource) set(clusters ...string) {
	rs := &federate.RemoteState{Remote: map[string]mesh.ClusterCatalog{}}
	for _, c := range clusters {
		rs.Remote[c] = mesh.ClusterCatalog{Cluster: c, Version: 1}
	}
	m.mu.Lock()
	m.rs = rs
	subs := m.subs
	m.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// lastRemote records the clusters of the last State passed on.
type lastRemote struct {
	mu       sync.Mutex
	clusters map[string]bool
}

func (l *lastRemote) Update(s mesh.State) ([]mesh.Problem, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clusters = map[string]bool{}
	for c := range s.Remote {
		l.clusters[c] = true
	}
	return nil, nil
}

func (l *lastRemote) has(c string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.clusters[c]
}

func (l *lastRemote) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clusters)
}

// A federation member that restarts (its settings changed) starts with no
// catalogs; until it has fetched them the cluster keeps routing to the
// other clusters, and then follows the new member.
func TestRestartedMemberKeepsRoutesUntilItCaughtUp(t *testing.T) {
	sink := &lastRemote{}
	j := startJunctionFollowing(t, sink, "west", "north")
	if !sink.has("west") || !sink.has("north") {
		t.Fatalf("before the restart: remote clusters %v, want west and north", sink.clusters)
	}

	fresh := &memorySource{}
	j.ReplaceRemote(fresh, time.Hour)
	if !sink.has("west") || !sink.has("north") {
		t.Fatalf("new member has no catalogs yet: remote clusters %v, want west and north kept", sink.clusters)
	}
	fresh.set("west")
	if _, err := j.Update(mesh.State{}); err != nil { // a local change meanwhile
		t.Fatal(err)
	}
	if !sink.has("north") {
		t.Fatalf("new member has only west: remote clusters %v, want north kept", sink.clusters)
	}
	fresh.set("west", "north", "south")
	waitFor(t, "the new member's view passed on", func() bool { return sink.has("south") })

	// From now on the new member's view is followed as it is, losses too.
	fresh.set("west")
	waitFor(t, "north withdrawn by the new member", func() bool { return sink.count() == 1 && sink.has("west") })
}

// A restarted member that never hears of a cluster again does not keep
// the old view for ever.
func TestRestartedMemberHoldIsBounded(t *testing.T) {
	sink := &lastRemote{}
	j := startJunctionFollowing(t, sink, "west", "north")
	fresh := &memorySource{}
	fresh.set("west")
	j.ReplaceRemote(fresh, 200*time.Millisecond)
	waitFor(t, "the hold to end", func() bool { return sink.count() == 1 && sink.has("west") })
}

// startJunctionFollowing runs a Junction passing on to sink, following a
// source that holds clusters, with one local State passed on.
func startJunctionFollowing(t *testing.T, sink kube.Sink, clusters ...string) *federate.Junction {
	t.Helper()
	j := federate.NewJunction(sink, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	src := &memorySource{}
	src.set(clusters...)
	j.SetRemote(src)
	if _, err := j.Update(mesh.State{}); err != nil {
		t.Fatal(err)
	}
	return j
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: still waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
