package server

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
)

// withoutService returns s without the named service.
func withoutService(s mesh.State, name string) mesh.State {
	var kept []mesh.Service
	for _, svc := range s.Services {
		if svc.Name != name {
			kept = append(kept, svc)
		}
	}
	s.Services = kept
	return s
}

// mentions reports whether any resource of typeURL in snap names name.
func mentions(t *testing.T, snap interface {
	GetResources(string) map[string]types.Resource
}, typeURL, name string) bool {
	t.Helper()
	for _, r := range snap.GetResources(typeURL) {
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), name) {
			return true
		}
	}
	return false
}

// clockedBuilder is a builder with warm delay warm whose clock reads *now,
// 1000 s after the epoch until the test moves it.
func clockedBuilder(warm time.Duration) (*builder, *time.Time) {
	now := time.Unix(1000, 0)
	b := newBuilder(warm)
	b.now = func() time.Time { return now }
	return b, &now
}

// A cluster an update removes is still sent, unused, until it has been
// retired for the drain delay; then it is sent no more. Listeners and
// routes stop naming it at once.
func TestRemovedClusterIsServedUntilDrained(t *testing.T) {
	const delay = 5 * time.Second
	b, now := clockedBuilder(0)
	state := syntheticMesh(30)
	if _, err := b.update(state); err != nil {
		t.Fatal(err)
	}
	key := proxyKey{id: mesh.NewIdentity(td, "client", "client"), kind: KindProxyless}
	ks := watchingAll()
	if _, _, err := b.snapshot(key, ks); err != nil {
		t.Fatal(err)
	}
	gone := generate.ClusterName(mesh.NamespacedName{Namespace: "ns-5", Name: "svc-5"}, 8080, "")

	if _, err := b.update(withoutService(state, "svc-5")); err != nil {
		t.Fatal(err)
	}
	if !b.newlyRetired {
		t.Fatal("removing a service retired no cluster")
	}
	snap, changed, err := b.snapshot(key, ks)
	if err != nil || !changed {
		t.Fatalf("after the removal: changed %v, err %v", changed, err)
	}
	if snap.GetResources(resourcev3.ClusterType)[gone] == nil {
		t.Fatalf("cluster %s was removed at once; it must stay until drained", gone)
	}
	for _, typ := range []string{resourcev3.ListenerType, resourcev3.RouteType} {
		if mentions(t, snap, typ, gone) {
			t.Errorf("%s still names %s after the removal", typ, gone)
		}
	}

	*now = now.Add(delay - time.Second)
	if drained, next := b.drainRetired(delay, delay); drained || !next.Equal(time.Unix(1000, 0).Add(delay)) {
		t.Fatalf("before the delay: drained %v, next %v; want nothing drained, next at removal + %v", drained, next, delay)
	}
	*now = now.Add(time.Second)
	if drained, next := b.drainRetired(delay, delay); !drained || !next.IsZero() {
		t.Fatalf("at the delay: drained %v, next %v; want drained, nothing left", drained, next)
	}
	snap, changed, err = b.snapshot(key, ks)
	if err != nil || !changed {
		t.Fatalf("after the drain: changed %v, err %v", changed, err)
	}
	if snap.GetResources(resourcev3.ClusterType)[gone] != nil {
		t.Fatalf("cluster %s is still sent after the drain", gone)
	}
}

// A retired cluster that comes back before it is drained is live again:
// the drain does not take it out.
func TestClusterBackBeforeTheDrainStays(t *testing.T) {
	b, now := clockedBuilder(0)
	state := syntheticMesh(30)
	for _, s := range []mesh.State{state, withoutService(state, "svc-5"), state} {
		if _, err := b.update(s); err != nil {
			t.Fatal(err)
		}
	}
	*now = now.Add(time.Hour)
	if drained, _ := b.drainRetired(time.Second, time.Second); drained {
		t.Fatal("the drain took out a cluster that came back")
	}
	key := proxyKey{id: mesh.NewIdentity(td, "client", "client"), kind: KindProxyless}
	ks := watchingAll()
	snap, _, err := b.snapshot(key, ks)
	if err != nil {
		t.Fatal(err)
	}
	back := generate.ClusterName(mesh.NamespacedName{Namespace: "ns-5", Name: "svc-5"}, 8080, "")
	if snap.GetResources(resourcev3.ClusterType)[back] == nil {
		t.Fatalf("cluster %s is missing after it came back", back)
	}
}

// withEndpoints returns s with the named service's endpoints replaced.
func withEndpoints(s mesh.State, name string, eps []mesh.Endpoint) mesh.State {
	s.Services = slices.Clone(s.Services)
	for i := range s.Services {
		if s.Services[i].Name == name {
			s.Services[i].Endpoints = eps
		}
	}
	return s
}

// A split backend that loses its last ready endpoint keeps its last ready
// load assignment published, while the route moves its share away in the
// same update, until the hold (the warm delay) has passed; then its empty load
// assignment is published. A service that is no split's backend gets its
// new load assignment at once.
func TestASplitBackendsLastEndpointsStayUntilDrained(t *testing.T) {
	const delay = 5 * time.Second
	b, now := clockedBuilder(0)
	state := syntheticMesh(30) // split-0: svc-0 → svc-10 (90), svc-20 (10)
	if _, err := b.update(state); err != nil {
		t.Fatal(err)
	}
	endpoints := func(svc string) int {
		var i int
		fmt.Sscanf(svc, "svc-%d", &i)
		name := generate.ClusterName(mesh.NamespacedName{Namespace: fmt.Sprintf("ns-%d", i%10), Name: svc}, 8080, "")
		r, ok := b.eds.res.Items[name]
		if !ok {
			t.Fatalf("no load assignment %s", name)
		}
		n := 0
		for _, l := range r.Resource.(*endpointv3.ClusterLoadAssignment).GetEndpoints() {
			n += len(l.GetLbEndpoints())
		}
		return n
	}
	version := b.eds.version
	state = withEndpoints(withEndpoints(state, "svc-20", nil), "svc-1", nil) // svc-1 backs no split
	if _, err := b.update(state); err != nil {
		t.Fatal(err)
	}
	if got := endpoints("svc-20"); got != 2 {
		t.Errorf("split backend svc-20 emptied: its load assignment has %d endpoints at once, want its last 2 until drained", got)
	}
	if got := endpoints("svc-1"); got != 0 {
		t.Errorf("svc-1 (no split's backend) emptied: %d endpoints published, want 0 at once", got)
	}
	if !b.newlyRetired || b.eds.version == version {
		t.Errorf("after the update: drain asked %v, EDS version %s (was %s)", b.newlyRetired, b.eds.version, version)
	}
	if drained, next := b.drainRetired(delay, delay); drained || !next.Equal(now.Add(delay)) {
		t.Errorf("before the delay: drained %v, next %v; want nothing drained, next at %v", drained, next, now.Add(delay))
	}
	*now = now.Add(delay)
	if drained, next := b.drainRetired(delay, delay); !drained || !next.IsZero() {
		t.Errorf("after the delay: drained %v, next %v; want drained, nothing left", drained, next)
	}
	if got := endpoints("svc-20"); got != 0 {
		t.Errorf("after the drain: svc-20 has %d endpoints published, want 0", got)
	}

	// Back with endpoints: published at once.
	state = withEndpoints(state, "svc-20", syntheticMesh(30).Services[20].Endpoints)
	if _, err := b.update(state); err != nil {
		t.Fatal(err)
	}
	if got := endpoints("svc-20"); got != 2 {
		t.Errorf("svc-20 back: %d endpoints published, want 2 at once", got)
	}
}
