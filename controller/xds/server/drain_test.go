package server

import (
	"strings"
	"testing"
	"time"

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

// A cluster an update removes is still sent, unused, until it has been
// retired for the drain delay; then it is sent no more. Listeners and
// routes stop naming it at once.
func TestRemovedClusterIsServedUntilDrained(t *testing.T) {
	const delay = 5 * time.Second
	now := time.Unix(1000, 0)
	b := newBuilder(0)
	b.now = func() time.Time { return now }
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

	now = now.Add(delay - time.Second)
	if drained, next := b.drainRetired(delay); drained || !next.Equal(time.Unix(1000, 0).Add(delay)) {
		t.Fatalf("before the delay: drained %v, next %v; want nothing drained, next at removal + %v", drained, next, delay)
	}
	now = now.Add(time.Second)
	if drained, next := b.drainRetired(delay); !drained || !next.IsZero() {
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
	now := time.Unix(1000, 0)
	b := newBuilder(0)
	b.now = func() time.Time { return now }
	state := syntheticMesh(30)
	for _, s := range []mesh.State{state, withoutService(state, "svc-5"), state} {
		if _, err := b.update(s); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(time.Hour)
	if drained, _ := b.drainRetired(time.Second); drained {
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
