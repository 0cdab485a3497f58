package federation

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meshfed/meshfed/federation/catalog"
)

func TestLostClusterIsWithdrawnOrKeptByPolicyAndReturns(t *testing.T) {
	tf := newTestFederation(t)
	eastCfg := tf.config("east")
	eastCfg.WithdrawAfter = 2 * time.Second
	east := start(t, eastCfg)
	northCfg := tf.config("north", east)
	northCfg.WithdrawAfter = 2 * time.Second
	northCfg.FailStatic = true
	north := start(t, northCfg)
	west := start(t, tf.config("west", east))

	yes := true
	pinned := svc("bookstore", "pinned", "10.244.2.9")
	pinned.FailStatic = &yes // the exporter says: keep me while my cluster is unreachable
	v := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5"), pinned)
	for _, n := range []*node{east, north} {
		eventually(t, 20*time.Second, func() (bool, string) { return sees(n, "west", v) })
	}

	west.kill(t)

	// east withdraws (default policy) all but the pinned service, and says why.
	eventually(t, 30*time.Second, func() (bool, string) {
		cv := east.f.Snapshot().Clusters["west"]
		return cv.Member.State == StateDead && slices.Equal(cv.Withdrawn, []string{"bookstore/bookstore-v2"}),
			fmt.Sprintf("east: west %s, withdrawn %v, reason %q", cv.Member.State, cv.Withdrawn, cv.Reason)
	})
	cv := east.f.Snapshot().Clusters["west"]
	if hasService(east, "west", "bookstore/bookstore-v2") || !hasService(east, "west", "bookstore/pinned") {
		t.Errorf("east routes to west's %+v, want only the pinned service", cv.Services)
	}
	if !strings.Contains(cv.Reason, "west: dead since ") || !strings.Contains(cv.Reason, "withdrawn at") {
		t.Errorf("east's reason for west = %q", cv.Reason)
	}
	if cv.Catalog == nil || cv.Catalog.Version != v {
		t.Errorf("east forgot west's last good catalog")
	}

	// north is fail-static: everything stays, and it says so.
	eventually(t, 30*time.Second, func() (bool, string) {
		cv := north.f.Snapshot().Clusters["west"]
		return cv.Member.State == StateDead && strings.Contains(cv.Reason, "kept (fail-static)"),
			fmt.Sprintf("north: west %s, reason %q", cv.Member.State, cv.Reason)
	})
	time.Sleep(2500 * time.Millisecond) // past north's WithdrawAfter too
	if !hasService(north, "west", "bookstore/bookstore-v2") || !hasService(north, "west", "bookstore/pinned") {
		t.Errorf("north dropped west's services: %+v", north.f.Snapshot().Clusters["west"].Services)
	}

	// west comes back (a new process, a new port): its catalog returns.
	west2 := start(t, tf.config("west", east))
	eventually(t, 30*time.Second, func() (bool, string) {
		cv := east.f.Snapshot().Clusters["west"]
		return cv.Member.State == StateAlive && hasService(east, "west", "bookstore/bookstore-v2"),
			fmt.Sprintf("east: west %s, services %d, reason %q", cv.Member.State, len(cv.Services), cv.Reason)
	})
	v2 := publish(t, west2, svc("bookstore", "bookstore-v2", "10.244.2.15"))
	if v2 <= v {
		t.Errorf("restarted west published v%d, not above v%d", v2, v)
	}
	for _, n := range []*node{east, north} {
		eventually(t, 20*time.Second, func() (bool, string) { return sees(n, "west", v2) })
	}
}

func TestGracefulLeaveIsReportedAsLeft(t *testing.T) {
	tf := newTestFederation(t)
	east := start(t, tf.config("east"))
	west := start(t, tf.config("west", east))
	publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5"))
	eventually(t, 20*time.Second, func() (bool, string) { return memberState(east, "west") == StateAlive, "west alive" })
	if err := west.stop(t); err != nil {
		t.Fatalf("west's Run after leave: %v", err)
	}
	eventually(t, 20*time.Second, func() (bool, string) {
		st := memberState(east, "west")
		return st == StateLeft, "west is " + string(st)
	})
}

func TestTenThousandServiceCatalogPropagates(t *testing.T) {
	tf := newTestFederation(t)
	east := start(t, tf.config("east"))
	west := start(t, tf.config("west", east))
	services := bigCatalog(10000)
	start := time.Now()
	v := publish(t, west, services...)
	t.Logf("signed 10,000 services in %v", time.Since(start))
	eventually(t, 60*time.Second, func() (bool, string) { return sees(east, "west", v) })
	t.Logf("10,000-service catalog at east %v after Publish", time.Since(start))
	got := east.f.Snapshot().Clusters["west"].Services
	if len(got) != 10000 || len(got[9999].Endpoints) != 3 {
		t.Fatalf("east holds %d services", len(got))
	}
}

// bigCatalog makes n services of 3 endpoints each, as a large cluster would
// export.
func bigCatalog(n int) []catalog.ExportedService {
	out := make([]catalog.ExportedService, 0, n)
	for i := range n {
		ns := fmt.Sprintf("team-%03d", i%300)
		s := svc(ns, fmt.Sprintf("service-%05d", i),
			fmt.Sprintf("10.%d.%d.%d", 16+i%8, (i/250)%250, i%250),
			fmt.Sprintf("10.%d.%d.%d", 24+i%8, (i/250)%250, i%250),
			fmt.Sprintf("10.%d.%d.%d", 32+i%8, (i/250)%250, i%250))
		s.Ports = append(s.Ports, catalog.Port{Name: "http", Port: 8080, Protocol: "HTTP"})
		out = append(out, s)
	}
	return out
}

// lossyTransport drops every packet (UDP) it is asked to send once lost is
// set; streams (TCP) still work. It stands in for a loaded network that
// loses memberlist's best-effort broadcasts.
type lossyTransport struct {
	memberlist.NodeAwareTransport
	lost *atomic.Bool
}

func (t lossyTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.lost.Load() {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t lossyTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.lost.Load() {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteToAddress(b, a)
}

func TestGracefulLeaveIsReportedAsLeftWhenGossipIsLost(t *testing.T) {
	tf := newTestFederation(t)
	east := start(t, tf.config("east"))
	var lost atomic.Bool
	cfg := tf.config("west", east)
	cfg.Tune = func(c *memberlist.Config) {
		fastGossip(c)
		c.Transport = lossyTransport{NodeAwareTransport: c.Transport.(memberlist.NodeAwareTransport), lost: &lost}
	}
	west := start(t, cfg)
	publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5"))
	eventually(t, 20*time.Second, func() (bool, string) { return memberState(east, "west") == StateAlive, "west alive" })
	lost.Store(true) // west's leave broadcast and leave notice by gossip never arrive
	if err := west.stop(t); err != nil {
		t.Fatalf("west's Run after leave: %v", err)
	}
	eventually(t, 20*time.Second, func() (bool, string) {
		st := memberState(east, "west")
		return st == StateLeft, "west is " + string(st)
	})
}
