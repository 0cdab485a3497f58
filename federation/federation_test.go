package federation

import (
	"errors"
	"testing"
	"time"
)

func TestThreeClustersConvergeAndUpdatesPropagate(t *testing.T) {
	tf := newTestFederation(t)
	east := start(t, tf.config("east"))
	west := start(t, tf.config("west", east))
	north := start(t, tf.config("north", east))
	nodes := []*node{east, west, north}

	vEast := publish(t, east, svc("bookstore", "bookstore", "10.244.1.5"))
	vWest := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5"), svc("bookstore", "bookstore", "10.244.2.6"))
	vNorth := publish(t, north, svc("bookthief", "bookthief", "10.244.3.5"))
	want := map[string]uint64{"east": vEast, "west": vWest, "north": vNorth}
	for _, n := range nodes {
		for c, v := range want {
			if c == n.f.cfg.ClusterName {
				continue
			}
			eventually(t, 20*time.Second, func() (bool, string) { return sees(n, c, v) })
		}
	}
	for _, m := range east.f.Members() {
		if m.State != StateAlive {
			t.Errorf("east sees %s as %s, want alive", m.Name, m.State)
		}
	}

	v2 := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5", "10.244.2.7"))
	for _, n := range []*node{east, north} {
		eventually(t, 20*time.Second, func() (bool, string) { return sees(n, "west", v2) })
		cv := n.f.Snapshot().Clusters["west"]
		if len(cv.Services) != 1 || len(cv.Services[0].Endpoints) != 2 || cv.Catalog.Network != "net-west" {
			t.Errorf("%s sees west's services %+v, want bookstore-v2 with 2 endpoints", n.f.cfg.ClusterName, cv.Services)
		}
	}
	ms := east.f.Members()
	if len(ms) != 3 || ms[2].Name != "west" || ms[2].CatalogVersion != v2 || ms[2].Services != 1 || ms[2].TrustBundleFingerprint != "test-root" {
		t.Errorf("east's member list = %+v", ms)
	}
}

func TestNodeWithoutGossipKeyCannotJoin(t *testing.T) {
	tf := newTestFederation(t)
	east := start(t, tf.config("east"))
	publish(t, east, svc("bookstore", "bookstore", "10.244.1.5"))

	cfg := tf.config("intruder", east)
	cfg.GossipKeys = [][]byte{newKey(t)}
	intruder := start(t, cfg)

	time.Sleep(3 * time.Second) // a few join attempts and gossip rounds
	if st := memberState(east, "intruder"); st != "" {
		t.Errorf("east lists intruder as %s", st)
	}
	if len(intruder.f.Members()) != 1 {
		t.Errorf("intruder sees members %+v", intruder.f.Members())
	}
	if _, ok := intruder.f.Snapshot().Clusters["east"]; ok {
		t.Error("intruder got east's catalog")
	}
}

func TestGossipKeyRotationWithoutRestart(t *testing.T) {
	tf := newTestFederation(t)
	east := start(t, tf.config("east"))
	west := start(t, tf.config("west", east))
	north := start(t, tf.config("north", east))
	nodes := []*node{east, west, north}
	eventually(t, 20*time.Second, func() (bool, string) { return len(east.f.Members()) == 3, "3 members" })

	old, next := tf.key, newKey(t)
	for _, n := range nodes { // 1: everyone accepts the new key
		if err := n.f.SetGossipKeys(old, next); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes { // 2: everyone encrypts with it
		if err := n.f.SetGossipKeys(next, old); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes { // 3: the old key is gone
		if err := n.f.SetGossipKeys(next); err != nil {
			t.Fatal(err)
		}
	}
	v := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5"))
	for _, n := range []*node{east, north} {
		eventually(t, 20*time.Second, func() (bool, string) { return sees(n, "west", v) })
	}
	time.Sleep(time.Second)
	for _, n := range nodes {
		for _, m := range n.f.Members() {
			if m.State != StateAlive {
				t.Errorf("after rotation %s sees %s as %s", n.f.cfg.ClusterName, m.Name, m.State)
			}
		}
	}

	// A member that still has only the old key is now shut out.
	cfg := tf.config("south", east)
	cfg.GossipKeys = [][]byte{old}
	south := start(t, cfg)
	time.Sleep(2 * time.Second)
	if st := memberState(east, "south"); st != "" {
		t.Errorf("east lists south (old key only) as %s", st)
	}
	_ = south
}

func TestDuplicateClusterNameIsRefused(t *testing.T) {
	tf := newTestFederation(t)
	east := start(t, tf.config("east"))
	west := start(t, tf.config("west", east))
	v := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5"))
	eventually(t, 20*time.Second, func() (bool, string) { return sees(east, "west", v) })

	dup := start(t, tf.config("west", east))
	select {
	case err := <-dup.done:
		close(dup.done)
		if !errors.Is(err, ErrDuplicateName) {
			t.Fatalf("duplicate west: Run returned %v, want ErrDuplicateName", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("duplicate west is still running")
	}
	time.Sleep(time.Second)
	if st := memberState(east, "west"); st != StateAlive {
		t.Errorf("original west is %s on east, want alive", st)
	}
	if ok, msg := sees(east, "west", v); !ok {
		t.Error(msg)
	}
	if east.f.Snapshot().Clusters["west"].Member.Addr != west.f.Addr() {
		t.Errorf("east has west at %s, want the original %s", east.f.Snapshot().Clusters["west"].Member.Addr, west.f.Addr())
	}
}
