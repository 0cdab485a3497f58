package server

import (
	"slices"
	"testing"
	"time"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
)

// A backend new to a known route is Warming for the warm delay; the
// clusters of the first update and of a new route never are; a backend
// that leaves and comes back warms again.
func TestNewBackendsWarmBeforeTheyTakeCalls(t *testing.T) {
	const delay = time.Second
	b, now := clockedBuilder(delay)
	svc := mesh.NamespacedName{Namespace: "bookstore", Name: "bookstore"}
	other := mesh.NamespacedName{Namespace: "bookstore", Name: "other"}
	v1, v2 := "bookstore/bookstore-v1:14001", "bookstore/bookstore-v2:14001@west"
	mark := func(ports ...generate.ClientPort) []generate.ClientPort {
		b.markWarming(ports)
		return ports
	}
	split := func(backends ...string) generate.ClientPort {
		c := generate.ClientPort{Service: svc, Port: 14001}
		for _, n := range backends {
			c.Backends = append(c.Backends, generate.WeightedBackend{Cluster: n, Weight: 50})
		}
		return c
	}

	if got := mark(split(v1, v2)); got[0].Warming != nil || !b.warmingUntil.IsZero() {
		t.Fatalf("first update: warming %v until %v, want none", got[0].Warming, b.warmingUntil)
	}
	*now = now.Add(time.Minute)
	mark(split(v1))
	*now = now.Add(time.Minute)
	got := mark(split(v1, v2), generate.ClientPort{Service: other, Port: 14001, Backends: split(v2).Backends})
	if !slices.Equal(got[0].Warming, []string{v2}) || !b.warmingUntil.Equal(now.Add(delay)) {
		t.Fatalf("v2 back on bookstore's route: warming %v until %v, want [%s] until %v", got[0].Warming, b.warmingUntil, v2, now.Add(delay))
	}
	if got[1].Warming != nil {
		t.Errorf("a new route warms %v; it has no client to catch between versions", got[1].Warming)
	}
	*now = now.Add(delay / 2)
	if got := mark(split(v1, v2)); !slices.Equal(got[0].Warming, []string{v2}) {
		t.Errorf("half the delay later: warming %v, want [%s]", got[0].Warming, v2)
	}
	*now = now.Add(delay / 2)
	if got := mark(split(v1, v2)); got[0].Warming != nil || !b.warmingUntil.IsZero() {
		t.Errorf("after the delay: warming %v until %v, want none", got[0].Warming, b.warmingUntil)
	}
}

// A split backend whose endpoints become ready again warms for the warm
// delay, so that its load assignment reaches a proxy before the route
// sends it calls; unless no other backend could take them meanwhile.
func TestABackendWhoseEndpointsReturnWarms(t *testing.T) {
	const delay = time.Second
	b, now := clockedBuilder(delay)
	svc := mesh.NamespacedName{Namespace: "bookstore", Name: "bookstore"}
	v1, v2 := "bookstore/bookstore-v1:14001", "bookstore/bookstore-v2:14001@west"
	split := func(v1Ready, v2Ready bool) []generate.ClientPort {
		c := generate.ClientPort{Service: svc, Port: 14001, Backends: []generate.WeightedBackend{
			{Cluster: v1, Weight: 50, Ready: v1Ready}, {Cluster: v2, Weight: 50, Ready: v2Ready}}}
		cps := []generate.ClientPort{c}
		b.markWarming(cps)
		return cps
	}
	split(true, true)
	*now = now.Add(time.Minute)
	if got := split(true, false); got[0].Warming != nil {
		t.Fatalf("v2 lost its endpoints: warming %v, want none", got[0].Warming)
	}
	*now = now.Add(time.Minute)
	if got := split(true, true); !slices.Equal(got[0].Warming, []string{v2}) || !b.warmingUntil.Equal(now.Add(delay)) {
		t.Fatalf("v2's endpoints back: warming %v until %v, want [%s] until %v", got[0].Warming, b.warmingUntil, v2, now.Add(delay))
	}
	*now = now.Add(delay)
	if got := split(true, true); got[0].Warming != nil {
		t.Errorf("after the delay: warming %v, want none", got[0].Warming)
	}

	// Both lost, then v2 back: nowhere else to send the calls, no warming.
	*now = now.Add(time.Minute)
	split(false, false)
	*now = now.Add(time.Minute)
	if got := split(false, true); got[0].Warming != nil {
		t.Errorf("v2 back while v1 has no endpoint: warming %v, want none (no other backend could take the calls)", got[0].Warming)
	}
}
