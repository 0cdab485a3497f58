package federation

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// forge sends a version notice from mallory straight to each target (by
// the encrypted stream, as any holder of the gossip key can) and queues it
// for gossip too.
func forge(t *testing.T, mallory *node, n notice, targets ...*node) {
	t.Helper()
	msg := encodeMsg(kindNotice, n)
	for _, to := range targets {
		sendRaw(t, mallory, to, msg)
	}
	mallory.f.bcast.QueueBroadcast(&noticeBroadcast{n: n, msg: msg})
}

// stays checks cond every 100 ms for d and fails at the first miss.
func stays(t *testing.T, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if ok, msg := cond(); !ok {
			t.Fatal(msg)
		}
	}
}

func westServes(n *node, key string) func() (bool, string) {
	return func() (bool, string) {
		cv := n.f.Snapshot().Clusters["west"]
		return hasService(n, "west", key) && !cv.Member.Stale,
			fmt.Sprintf("%s: west's %s gone or stale: services %d, stale %v, reason %q", n.f.cfg.ClusterName, key, len(cv.Services), cv.Member.Stale, cv.Reason)
	}
}

// A member holding the gossip key (mallory) announces, by notice and in its
// push/pull digest, that west is at versions west never published —
// 2^64-1, the last version of west's epoch, the next one — and that east's
// own catalog is far ahead. east keeps west's services (no stale, no
// withdrawal), keeps its own epoch, and accepts west's next real catalog.
func TestForgedVersionNoticeCannotWithdrawACluster(t *testing.T) {
	tf := newTestFederation(t)
	eastCfg := tf.config("east")
	// Above 2 × FetchTimeout + StaleAfter/4 (west's answer rate): a fetch
	// may go to mallory first and time out, then to west too soon after
	// its last answer.
	eastCfg.StaleAfter = 8 * time.Second
	eastCfg.WithdrawAfter = 2 * time.Second
	east := start(t, eastCfg)
	west := start(t, tf.config("west", east))
	mallory := start(t, tf.config("mallory", east))

	v1 := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5"))
	vEast := publish(t, east, svc("bookstore", "bookstore", "10.244.1.5"))
	for _, n := range []*node{east, mallory} {
		eventually(t, 20*time.Second, func() (bool, string) { return sees(n, "west", v1) })
	}
	eventually(t, 20*time.Second, func() (bool, string) {
		return memberState(mallory, "east") == StateAlive && memberState(mallory, "west") == StateAlive, "mallory sees east and west"
	})

	forged := []uint64{math.MaxUint64, makeVersion(epochOf(v1)+maxEpochAhead+1, 1), makeVersion(epochOf(v1), math.MaxUint32), v1 + 1}
	// The digest first: push/pull runs every 2 s with a random member.
	ds := digestState{Format: wireFormat, From: "mallory"}
	for _, v := range forged {
		ds.Catalogs = append(ds.Catalogs, notice{Cluster: "west", Version: v}, notice{Cluster: "east", Version: v})
	}
	b := encodeMsg(0, ds)[1:]
	before := rejected(east, "far-future")
	eventually(t, 30*time.Second, func() (bool, string) {
		// mallory's own loop rewrites its digest whenever its view
		// changes: put the forged one back until east has read it.
		mallory.f.localState.Store(&b)
		return rejected(east, "far-future") > before, "east has not seen mallory's digest"
	})

	// Then notices, again and again, for longer than StaleAfter + WithdrawAfter.
	end := time.Now().Add(eastCfg.StaleAfter + eastCfg.WithdrawAfter + 4*time.Second)
	for time.Now().Before(end) {
		for _, v := range forged {
			forge(t, mallory, notice{Cluster: "west", Version: v, Holder: "mallory"}, east)
			forge(t, mallory, notice{Cluster: "east", Version: v, Holder: "mallory"}, east)
		}
		if ok, msg := westServes(east, "bookstore/bookstore-v2")(); !ok {
			t.Fatal(msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
	stays(t, 2*time.Second, westServes(east, "bookstore/bookstore-v2"))

	// east's own versions did not jump to a forged epoch.
	if v := publish(t, east, svc("bookstore", "bookstore", "10.244.1.6")); epochOf(v) != epochOf(vEast) {
		t.Errorf("east published %s after the forged claims, want epoch %d", FormatVersion(v), epochOf(vEast))
	}
	// west's next real catalog is accepted.
	v2 := publish(t, west, svc("bookstore", "bookstore-v3", "10.244.2.6"))
	eventually(t, 20*time.Second, func() (bool, string) { return sees(east, "west", v2) })
	eventually(t, 20*time.Second, westServes(east, "bookstore/bookstore-v3"))
}

// A cluster whose clock ran an hour ahead and was then corrected (and whose
// member restarted meanwhile) keeps reaching the others: versions come
// from the epoch and a counter, not the clock.
func TestClockCorrectionDoesNotPinReceivers(t *testing.T) {
	tf := newTestFederation(t)
	east := start(t, tf.config("east"))
	ahead := func() time.Time { return time.Now().Add(time.Hour) }
	westCfg := tf.config("west", east)
	westCfg.Now = ahead
	west := start(t, westCfg)
	v1 := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5"))
	eventually(t, 20*time.Second, func() (bool, string) { return sees(east, "west", v1) })

	// The clock is corrected in the running member...
	west.f.cfg.Now = nil // read only by the loop when publishing: safe before the next Publish
	v2 := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.6"))
	eventually(t, 20*time.Second, func() (bool, string) { return sees(east, "west", v2) })
	eventually(t, 20*time.Second, westServes(east, "bookstore/bookstore-v2"))
	if got := east.f.Snapshot().Clusters["west"].Services[0].Endpoints[0].Address; got != "10.244.2.6" {
		t.Errorf("east routes to west's %s, want the catalog published after the clock correction", got)
	}

	// ...and across a restart of the member with the corrected clock.
	if err := west.stop(t); err != nil {
		t.Fatal(err)
	}
	west2 := start(t, tf.config("west", east))
	v3 := publish(t, west2, svc("bookstore", "bookstore-v2", "10.244.2.7"))
	if v3 <= v2 {
		t.Fatalf("restarted west published %s, not above %s", FormatVersion(v3), FormatVersion(v2))
	}
	eventually(t, 20*time.Second, func() (bool, string) { return sees(east, "west", v3) })
}

// west's epoch store is lost (a deleted ConfigMap, a restored backup): the
// restarted member starts again at epoch 1, below what east holds. It
// learns from east's digest that its own catalog exists at a higher
// version, verifies that catalog as its own, and moves above it, so east
// takes its new catalog.
func TestLostEpochStoreDoesNotPinReceivers(t *testing.T) {
	tf := newTestFederation(t)
	east := start(t, tf.config("east"))
	west := start(t, tf.config("west", east))
	publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5"))
	if err := west.stop(t); err != nil { // a second run: epoch 2
		t.Fatal(err)
	}
	west = start(t, tf.config("west", east))
	v := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.6"))
	if epochOf(v) != 2 {
		t.Fatalf("second run of west published %s, want epoch 2", FormatVersion(v))
	}
	eventually(t, 20*time.Second, func() (bool, string) { return sees(east, "west", v) })
	if err := west.stop(t); err != nil {
		t.Fatal(err)
	}

	lost := &MemoryEpochStore{}
	tf.epochs["west"] = lost
	west = start(t, tf.config("west", east))
	publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.7"))
	eventually(t, 30*time.Second, func() (bool, string) {
		cv := east.f.Snapshot().Clusters["west"]
		if cv.Catalog == nil || len(cv.Services) == 0 {
			return false, "east has no services of west"
		}
		got := cv.Services[0].Endpoints[0].Address
		return got == "10.244.2.7" && cv.Catalog.Version > v, fmt.Sprintf("east holds west %s routing to %s", FormatVersion(cv.Catalog.Version), got)
	})
	if lost.Epoch() <= epochOf(v) {
		t.Errorf("west's new epoch store holds %d, want above %d", lost.Epoch(), epochOf(v))
	}
}

func TestFormatVersion(t *testing.T) {
	for v, want := range map[uint64]string{0: "-", makeVersion(7, 42): "e7.42", math.MaxUint64: "e4294967295.4294967295"} {
		if got := FormatVersion(v); got != want {
			t.Errorf("FormatVersion(%d) = %q, want %q", v, got, want)
		}
	}
	if !strings.HasPrefix(FormatVersion(makeVersion(1, 1)), "e1.") {
		t.Error("epoch first")
	}
}

func TestNextEpochAdvancesAndRefusesToWrap(t *testing.T) {
	cases := []struct {
		name            string
		stored, atLeast uint32
		want            uint32
	}{
		{"first start", 0, 0, 1},
		{"next start", 7, 1, 8},
		{"recovered past a peer's copy", 2, 40, 40},
		{"atLeast below the next", 9, 3, 10},
	}
	for _, tc := range cases {
		if got, err := NextEpoch(tc.stored, tc.atLeast); err != nil || got != tc.want {
			t.Errorf("%s: NextEpoch(%d, %d) = %d, %v; want %d", tc.name, tc.stored, tc.atLeast, got, err, tc.want)
		}
	}
	if _, err := NextEpoch(math.MaxUint32, 1); !errors.Is(err, ErrEpochExhausted) {
		t.Errorf("NextEpoch past the last epoch: %v, want ErrEpochExhausted", err)
	}
	if farFuture(makeVersion(5+maxEpochAhead, 1), makeVersion(5, 9)) || !farFuture(makeVersion(6+maxEpochAhead, 1), makeVersion(5, 9)) || farFuture(math.MaxUint64, 0) {
		t.Error("farFuture draws the line at maxEpochAhead epochs past the held catalog, and not before the first catalog")
	}
}
