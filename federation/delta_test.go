package federation

import (
	"bytes"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/meshfed/meshfed/federation/catalog"
)

// ownerKit signs the catalogs of a cluster whose member does not run, as
// its owner would, so that a test can hand updates to members in any order
// and make forged ones with the owner's own key.
type ownerKit struct {
	t      *testing.T
	name   string
	signer StaticSigner
	seq    uint32
	cur    *catalog.Catalog
	hashes [][32]byte
}

func (tf *testFederation) owner(name string) *ownerKit {
	return &ownerKit{t: tf.t, name: name, signer: tf.config(name).Signer.(StaticSigner)}
}

// next signs the next version of the owner's catalog and returns it as a
// whole update and, when there was a previous version, as a delta from it.
func (o *ownerKit) next(services ...catalog.ExportedService) (whole, delta []byte, version uint64) {
	o.t.Helper()
	o.seq++
	cat := &catalog.Catalog{Format: catalog.FormatVersion, Cluster: o.name, Version: makeVersion(1, o.seq),
		GeneratedAt: time.Now().UTC(), Services: cloneServices(services)}
	signed, err := catalog.Sign(cat, o.signer.Key, o.signer.Chain)
	if err != nil {
		o.t.Fatal(err)
	}
	hashes, head := o.head(cat)
	whole = encodeUpdate(head.Bytes, updWhole, signed.Bytes)
	if o.cur != nil {
		b, err := catalog.Diff(o.cur, cat, o.hashes, hashes).Encode()
		if err != nil {
			o.t.Fatal(err)
		}
		delta = encodeUpdate(head.Bytes, updDelta, b)
	}
	o.cur, o.hashes = cat, hashes
	return whole, delta, cat.Version
}

// head signs the head of cat with the owner's key.
func (o *ownerKit) head(cat *catalog.Catalog) ([][32]byte, *catalog.SignedHead) {
	o.t.Helper()
	hashes, err := catalog.ServiceHashes(cat)
	if err != nil {
		o.t.Fatal(err)
	}
	digest, err := catalog.ContentDigest(cat, hashes)
	if err != nil {
		o.t.Fatal(err)
	}
	head, err := catalog.SignHead(catalog.Head{Cluster: cat.Cluster, Version: cat.Version, Digest: digest[:]}, o.signer.Key, o.signer.Chain)
	if err != nil {
		o.t.Fatal(err)
	}
	return hashes, head
}

// deltaTo is an update carrying a delta from the owner's current catalog
// to cat, sent with head.
func (o *ownerKit) deltaTo(cat *catalog.Catalog, head []byte) []byte {
	o.t.Helper()
	hashes, err := catalog.ServiceHashes(cat)
	if err != nil {
		o.t.Fatal(err)
	}
	b, err := catalog.Diff(o.cur, cat, o.hashes, hashes).Encode()
	if err != nil {
		o.t.Fatal(err)
	}
	return encodeUpdate(head, updDelta, b)
}

// successor is the owner's current catalog at the next version with
// services instead.
func (o *ownerKit) successor(services ...catalog.ExportedService) *catalog.Catalog {
	c := *o.cur
	c.Version++
	c.Services = cloneServices(services)
	return &c
}

// logBuffer collects a member's logs for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func withLog(cfg Config) (Config, *logBuffer) {
	lb := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg, lb
}

// updatesSent is how many updates n sent in role of kind.
func updatesSent(n *node, role, kind string) float64 {
	var m dto.Metric
	if err := n.f.m.updatesSent.WithLabelValues(role, kind).Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// holdsExactly reports whether n holds cluster's catalog at version with
// exactly services.
func holdsExactly(n *node, cluster string, version uint64, services []catalog.ExportedService) (bool, string) {
	if ok, msg := sees(n, cluster, version); !ok {
		return false, msg
	}
	got := n.f.Snapshot().Clusters[cluster].Catalog
	if got.Version != version || !reflect.DeepEqual(got.Services, cloneServices(services)) {
		return false, fmt.Sprintf("%s holds %s %s with services %+v, want %s with %+v", n.f.cfg.ClusterName, cluster,
			FormatVersion(got.Version), got.Services, FormatVersion(version), services)
	}
	return true, ""
}

func TestChangesTravelAsDeltasAndMembersConvergeToTheOwnersCatalog(t *testing.T) {
	tf := newTestFederation(t)
	east := start(t, tf.config("east"))
	members := []*node{east}
	for _, name := range []string{"west", "north", "south", "central", "edge"} {
		members = append(members, start(t, tf.config(name, east)))
	}
	services := []catalog.ExportedService{}
	for i := range 30 {
		services = append(services, svc("bookstore", fmt.Sprintf("svc-%02d", i), fmt.Sprintf("10.244.1.%d", i+1)))
	}
	converge := func(v uint64) {
		t.Helper()
		for _, n := range members[1:] {
			eventually(t, 30*time.Second, func() (bool, string) { return holdsExactly(n, "east", v, services) })
		}
	}
	converge(publish(t, east, services...))
	wholeAtFirst := updatesSent(east, "owner", "whole")

	relayed := func() float64 {
		var sum float64
		for _, n := range members[1:] {
			sum += updatesSent(n, "relay", "delta")
		}
		return sum
	}
	// Change one service, add one, remove one, until a relay has served a
	// delta (the owner pushes to a few members and points the rest at
	// them, so this takes one change unless notices are lost).
	for i := 0; i < 10 && (i < 3 || relayed() == 0); i++ {
		services[i].Endpoints[0].Ready = !services[i].Endpoints[0].Ready
		services = append(services[1:], svc("bookstore", fmt.Sprintf("new-%02d", i), "10.244.9.9"))
		converge(publish(t, east, services...))
	}
	if updatesSent(east, "owner", "delta") == 0 {
		t.Error("the owner sent no delta")
	}
	if relayed() == 0 {
		t.Error("no member relayed a delta of east's catalog")
	}
	if owner := updatesSent(east, "owner", "whole"); owner != wholeAtFirst {
		t.Errorf("the owner sent its whole catalog %v more times while every member held the previous version", owner-wholeAtFirst)
	}
}

// A member relaying east's catalog can hand others only what east signed:
// a delta that does not rebuild the signed catalog, a head signed by
// anyone but east, a delta under another cluster's head, an old version
// and a broken signature are all refused and logged with the cluster's
// name, and the last good catalog stays and the next real one is taken.
func TestForgedOrTamperedUpdatesFromARelayAreRefused(t *testing.T) {
	tf := newTestFederation(t)
	westCfg, westLog := withLog(tf.config("west"))
	west := start(t, westCfg)
	mallory := start(t, tf.config("mallory", west))
	eventually(t, 20*time.Second, func() (bool, string) { return memberState(mallory, "west") == StateAlive, "mallory sees west" })
	east := tf.owner("east")

	good := []catalog.ExportedService{svc("bookstore", "bookstore-v1", "10.244.1.5"), svc("bookstore", "bookstore-v2", "10.244.1.6")}
	w1, _, v1 := east.next(good[:1]...)
	sendRaw(t, mallory, west, w1)
	eventually(t, 20*time.Second, func() (bool, string) { return holdsExactly(west, "east", v1, good[:1]) })
	_, d2, v2 := east.next(good...)
	sendRaw(t, mallory, west, d2)
	eventually(t, 20*time.Second, func() (bool, string) { return holdsExactly(west, "east", v2, good) })

	evil := []catalog.ExportedService{svc("bookstore", "bookstore-v1", "10.66.6.6"), good[1]}
	v3 := east.successor(good[0], good[1], svc("bookstore", "bookstore-v3", "10.244.1.7"))
	_, realHead := east.head(v3)
	mKey, mChain, _ := mallory.f.cfg.Signer.CatalogSigner()
	byMallory, err := catalog.SignHead(realHead.Head, mKey, mChain)
	if err != nil {
		t.Fatal(err)
	}
	malloryCat := *v3
	malloryCat.Cluster = "mallory"
	_, malloryHead := (&ownerKit{t: t, name: "mallory", signer: StaticSigner{Key: mKey, Chain: mChain}}).head(&malloryCat)
	broken := bytes.Clone(realHead.Bytes)
	broken[bytes.Index(broken, []byte(`"sig":"`))+10] ^= 0x04

	cases := []struct {
		name, reason, cluster string
		msg                   []byte
	}{
		{"delta that does not rebuild what east signed", "invalid", "east", east.deltaTo(east.successor(evil...), realHead.Bytes)},
		{"head for east signed by mallory", "identity", "east", east.deltaTo(v3, byMallory.Bytes)},
		{"east's delta under mallory's own head", "identity", "mallory", east.deltaTo(v3, malloryHead.Bytes)},
		{"east's version 1 again", "old", "east", w1},
		{"head with a broken signature", "", "east", east.deltaTo(v3, broken)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reason := tc.reason
			before := map[string]float64{}
			for _, r := range []string{"invalid", "identity", "old", "signature", "decode"} {
				before[r] = rejected(west, r)
			}
			sendRaw(t, mallory, west, tc.msg)
			eventually(t, 10*time.Second, func() (bool, string) {
				for r, n := range before {
					if (reason == "" || r == reason) && rejected(west, r) > n {
						return true, ""
					}
				}
				return false, fmt.Sprintf("west has not refused it (want reason %q)", reason)
			})
			if ok, msg := holdsExactly(west, "east", v2, good); !ok {
				t.Fatalf("west lost east's last good catalog: %s", msg)
			}
			if !strings.Contains(westLog.String(), "claimedCluster="+tc.cluster) {
				t.Errorf("west's log does not name %s", tc.cluster)
			}
		})
	}
	if hasService(west, "mallory", "bookstore/bookstore-v3") {
		t.Error("west took east's services as mallory's")
	}
	// The next real catalog is still taken.
	_, d3, v3v := east.next(v3.Services...)
	sendRaw(t, mallory, west, d3)
	eventually(t, 20*time.Second, func() (bool, string) { return holdsExactly(west, "east", v3v, v3.Services) })
}

// A member whose catalog of east is older than a delta's base refuses the
// delta and fetches the whole catalog from a member that holds it.
func TestDeltaOnABaseNotHeldFetchesTheWholeCatalog(t *testing.T) {
	tf := newTestFederation(t)
	westCfg, westLog := withLog(tf.config("west"))
	west := start(t, westCfg)
	relay := start(t, tf.config("relay", west))
	feeder := start(t, tf.config("feeder", west))
	for _, n := range []*node{west, relay} {
		eventually(t, 20*time.Second, func() (bool, string) {
			return memberState(feeder, n.f.cfg.ClusterName) == StateAlive, "feeder sees " + n.f.cfg.ClusterName
		})
	}
	eventually(t, 20*time.Second, func() (bool, string) { return memberState(relay, "west") == StateAlive, "relay sees west" })
	east := tf.owner("east")
	s1 := []catalog.ExportedService{svc("bookstore", "a", "10.244.1.1")}
	w1, _, v1 := east.next(s1...)
	for _, n := range []*node{west, relay} {
		sendRaw(t, feeder, n, w1)
		eventually(t, 20*time.Second, func() (bool, string) { return sees(n, "east", v1) })
	}
	s2 := append(s1, svc("bookstore", "b", "10.244.1.2"))
	east.next(s2...)
	s3 := append(s2, svc("bookstore", "c", "10.244.1.3"))
	w3, d3, v3 := east.next(s3...)

	// west holds v1; the delta is from v2, which nobody holds.
	sendRaw(t, feeder, west, d3)
	eventually(t, 10*time.Second, func() (bool, string) {
		return strings.Contains(westLog.String(), "delta does not apply"), "west has not refused the delta"
	})
	if ok, msg := holdsExactly(west, "east", v1, s1); !ok {
		t.Fatal(msg)
	}
	// Once relay holds v3 (and says so), west fetches the whole of it
	// (from relay, or from feeder, which fetched it from relay).
	sendRaw(t, feeder, relay, w3)
	eventually(t, 20*time.Second, func() (bool, string) { return holdsExactly(west, "east", v3, s3) })
	if want := "have=- want=" + FormatVersion(v3); !strings.Contains(westLog.String(), want) {
		t.Errorf("west did not ask for the whole catalog (%s):\n%s", want, westLog.String())
	}
}

// west is away while east publishes several changes; back, it converges
// to east's current catalog, and receives deltas again afterwards.
func TestMemberThatMissedDeltasConvergesAfterRestart(t *testing.T) {
	tf := newTestFederation(t)
	eastCfg := tf.config("east")
	eastCfg.DeltaHistory = 2
	east := start(t, eastCfg)
	north := start(t, tf.config("north", east))
	west := start(t, tf.config("west", east))
	services := []catalog.ExportedService{svc("bookstore", "a", "10.244.1.1"), svc("bookstore", "b", "10.244.1.2")}
	v := publish(t, east, services...)
	for _, n := range []*node{north, west} {
		eventually(t, 20*time.Second, func() (bool, string) { return holdsExactly(n, "east", v, services) })
	}
	if err := west.stop(t); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		services = append(services, svc("bookstore", fmt.Sprintf("n%d", i), "10.244.2.1"))
		services[0].Endpoints[0].Ready = i%2 == 0
		v = publish(t, east, services...)
		eventually(t, 20*time.Second, func() (bool, string) { return holdsExactly(north, "east", v, services) })
	}
	west = start(t, tf.config("west", east))
	eventually(t, 30*time.Second, func() (bool, string) { return holdsExactly(west, "east", v, services) })
	services = services[1:]
	v = publish(t, east, services...)
	for _, n := range []*node{north, west} {
		eventually(t, 20*time.Second, func() (bool, string) { return holdsExactly(n, "east", v, services) })
	}
}

// A delta that changes more services, or is larger, than the receiver
// accepts is refused before it is applied; the catalog held stays.
func TestDeltaOverTheLimitsIsRefused(t *testing.T) {
	tf := newTestFederation(t)
	westCfg := tf.config("west")
	westCfg.MaxDeltaServices = 5
	westCfg.MaxDeltaBytes = 4 << 10
	west := start(t, westCfg)
	feeder := start(t, tf.config("feeder", west))
	eventually(t, 20*time.Second, func() (bool, string) { return memberState(feeder, "west") == StateAlive, "feeder sees west" })
	east := tf.owner("east")
	base := []catalog.ExportedService{svc("bookstore", "a", "10.244.1.1")}
	w1, _, v1 := east.next(base...)
	sendRaw(t, feeder, west, w1)
	eventually(t, 20*time.Second, func() (bool, string) { return holdsExactly(west, "east", v1, base) })

	many := withMore(base, 6, func(i int) catalog.ExportedService { return svc("bookstore", fmt.Sprintf("s%d", i), "10.244.3.1") })
	long := withMore(base, 1, func(int) catalog.ExportedService {
		s := svc("bookstore", "big", "10.244.3.1")
		for j := range 1000 {
			s.Endpoints = append(s.Endpoints, catalog.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", j, j*7%256, j*13%256), Ready: true,
				Identity: fmt.Sprintf("spiffe://%s/ns/bookstore/sa/big-%d", testTD, j*7919)})
		}
		return s
	})
	for name, services := range map[string][]catalog.ExportedService{"6 services": many, "over 4 KiB": long} {
		t.Run(name, func(t *testing.T) {
			head := func() []byte { _, h := east.head(east.successor(services...)); return h.Bytes }()
			before := rejected(west, "oversize")
			sendRaw(t, feeder, west, east.deltaTo(east.successor(services...), head))
			eventually(t, 10*time.Second, func() (bool, string) {
				return rejected(west, "oversize") > before, "west has not refused the delta as oversize"
			})
			if ok, msg := holdsExactly(west, "east", v1, base); !ok {
				t.Fatal(msg)
			}
		})
	}
}

// withMore is base followed by n services made by mk.
func withMore(base []catalog.ExportedService, n int, mk func(int) catalog.ExportedService) []catalog.ExportedService {
	out := append([]catalog.ExportedService(nil), base...)
	for i := range n {
		out = append(out, mk(i))
	}
	return out
}
