package federation

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/federation/internal/testpki"
)

// Fuzz targets for every gossip message meshfed decodes: everything here
// comes from any holder of the gossip key. Each must refuse bad input with
// an error, never panic, and never accept what it should not.

func FuzzDecodeNotice(f *testing.F) {
	f.Add(encodeMsg(0, notice{Cluster: "west", Version: makeVersion(3, 7), Digest: "0123456789abcdef", Holder: "east"})[1:])
	f.Add([]byte(`{"c":"west","v":18446744073709551615}`))
	f.Add([]byte(`{"c":"evil\nname","v":1}`))
	f.Add([]byte(`{"c":"west","v":-1}`))
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := decodeNotice(b)
		if err == nil && (!catalog.ValidClusterName(n.Cluster) || (n.Holder != "" && !catalog.ValidClusterName(n.Holder)) || len(n.Digest) > 64) {
			t.Errorf("decodeNotice accepted %+v", n)
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(encodeMsg(0, request{Cluster: "west", MinVersion: 5, From: "east"})[1:])
	f.Add([]byte(`{"c":"west","v":1,"from":"../etc"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRequest(b)
		if err == nil && (!catalog.ValidClusterName(r.Cluster) || !catalog.ValidClusterName(r.From)) {
			t.Errorf("decodeRequest accepted %+v", r)
		}
	})
}

func FuzzDecodeDigest(f *testing.F) {
	f.Add(encodeMsg(0, digestState{Format: wireFormat, From: "east", Catalogs: []notice{{Cluster: "west", Version: 9}, {Cluster: "BAD"}}})[1:])
	f.Add([]byte(`{"f":1,"from":"east","catalogs":null}`))
	f.Add([]byte(`{"f":2,"from":"east"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := decodeDigest(b)
		if err != nil {
			return
		}
		if ds.Format != wireFormat || !catalog.ValidClusterName(ds.From) || len(ds.Catalogs) > maxDigestEntries {
			t.Errorf("decodeDigest accepted format %d from %q with %d entries", ds.Format, ds.From, len(ds.Catalogs))
		}
		for _, n := range ds.Catalogs {
			if !catalog.ValidClusterName(n.Cluster) || n.Holder != ds.From {
				t.Errorf("decodeDigest kept %+v", n)
			}
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMsg(0, nodeMeta{Format: wireFormat, CatalogVersion: makeVersion(1, 1), Digest: "ab", Network: "net-west"})[1:])
	f.Add([]byte(`{"f":0}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err == nil && len(b) > 0 && m.Format != wireFormat {
			t.Errorf("decodeMeta accepted format %d", m.Format)
		}
	})
}

// fuzzPKI is a root and west's signer, shared by a fuzz target's runs.
type fuzzPKI struct {
	root *testpki.Root
	cfg  Config
	west *catalog.Signed
	note []byte
	// updates are west's catalog as updates: whole, a delta to the next
	// version, and the next version's head alone.
	updates [][]byte
}

func newFuzzPKI(f *testing.F) *fuzzPKI {
	f.Helper()
	root, err := testpki.NewRoot("fuzz root")
	if err != nil {
		f.Fatal(err)
	}
	signer := func(name string) StaticSigner {
		key, chain, err := root.Signer(catalog.ClusterID(testTD, name))
		if err != nil {
			f.Fatal(err)
		}
		return StaticSigner{Key: key, Chain: chain}
	}
	cfg := DefaultConfig()
	cfg.ClusterName, cfg.TrustDomain, cfg.BindAddr = "east", testTD, "127.0.0.1"
	cfg.GossipKeys = [][]byte{make([]byte, 32)}
	cfg.Signer = signer("east")
	cfg.Bundle = StaticBundle{Roots: root.Pool, Fingerprint: "fuzz"}
	ws := signer("west")
	west, err := catalog.Sign(&catalog.Catalog{Format: catalog.FormatVersion, Cluster: "west", Version: makeVersion(2, 1),
		GeneratedAt: time.Unix(1700000000, 0), Services: []catalog.ExportedService{svc("bookstore", "bookstore-v2", "10.244.2.5")}}, ws.Key, ws.Chain)
	if err != nil {
		f.Fatal(err)
	}
	cat, _, err := catalog.Verify(west.Bytes, catalog.VerifyOptions{Roots: root.Pool, TrustDomain: testTD})
	if err != nil {
		f.Fatal(err)
	}
	h, err := newHolding(cat, nil, west.Bytes)
	if err != nil {
		f.Fatal(err)
	}
	note, err := signRestartNote(restartNote{Cluster: "west", Version: west.Version, Digest: h.shortDigest()}, ws.Key, ws.Chain)
	if err != nil {
		f.Fatal(err)
	}
	return &fuzzPKI{root: root, cfg: cfg, west: west, note: note, updates: fuzzUpdates(f, ws, cat, h, west.Bytes)}
}

// fuzzUpdates are west's catalog cat (held as h) as a whole update, and
// its next version as a delta and as a head alone.
func fuzzUpdates(f *testing.F, ws StaticSigner, cat *catalog.Catalog, h *holding, env []byte) [][]byte {
	headOf := func(c *catalog.Catalog) (*catalog.SignedHead, [][32]byte) {
		hashes, _ := catalog.ServiceHashes(c)
		d, _ := catalog.ContentDigest(c, hashes)
		sh, err := catalog.SignHead(catalog.Head{Cluster: c.Cluster, Version: c.Version, Digest: d[:]}, ws.Key, ws.Chain)
		if err != nil {
			f.Fatal(err)
		}
		return sh, hashes
	}
	head, _ := headOf(cat)
	next := *cat
	next.Version++
	next.Services = append(slices.Clone(cat.Services), svc("bookstore", "bookstore-v3", "10.244.2.6"))
	nextHead, nextHashes := headOf(&next)
	delta, err := catalog.Diff(cat, &next, h.hashes, nextHashes).Encode()
	if err != nil {
		f.Fatal(err)
	}
	return [][]byte{
		encodeUpdate(head.Bytes, updWhole, env),
		encodeUpdate(nextHead.Bytes, updDelta, delta),
		encodeUpdate(nextHead.Bytes, updHead, nil),
	}
}

func FuzzRestartNote(f *testing.F) {
	p := newFuzzPKI(f)
	f.Add(p.note)
	f.Add([]byte(`{"note":"e30=","chain":[],"sig":""}`))
	f.Add([]byte(`{"note":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := verifyRestartNote(b, p.root.Pool, testTD, time.Now())
		if err == nil && (n.Cluster != "west" || n.Version != p.west.Version) {
			// Only west's own note carries a valid signature here.
			t.Errorf("verifyRestartNote accepted %+v", n)
		}
	})
}

// FuzzGossipMessage feeds whole messages and push/pull states through the
// memberlist delegate into the federation loop, as they arrive from the
// network, with west's catalog held and west a live member.
func FuzzGossipMessage(f *testing.F) {
	p := newFuzzPKI(f)
	fed, err := New(p.cfg)
	if err != nil {
		f.Fatal(err)
	}
	meta := encodeMsg(0, nodeMeta{Format: wireFormat, CatalogVersion: p.west.Version})[1:]
	f.Add(encodeMsg(kindNotice, notice{Cluster: "west", Version: p.west.Version + 1, Holder: "west"}), []byte(nil))
	f.Add(encodeMsg(kindNotice, notice{Cluster: "east", Version: makeVersion(9, 1), Holder: "west"}), []byte(nil))
	f.Add(encodeMsg(kindRequest, request{Cluster: "west", MinVersion: 1, From: "west"}), []byte(nil))
	f.Add(encodeMsg(kindLeave, notice{Cluster: "west"}), []byte(nil))
	f.Add(append([]byte{kindCatalog}, p.west.Bytes...), []byte(nil))
	f.Add(append([]byte{kindRestart}, p.note...), []byte(nil))
	for _, u := range p.updates {
		f.Add(u, []byte(nil))
	}
	f.Add([]byte{'Z', '{'}, encodeMsg(0, digestState{Format: wireFormat, From: "west", Catalogs: []notice{{Cluster: "west", Version: 1}, {Cluster: "east", Version: makeVersion(5, 5)}}})[1:])
	f.Fuzz(func(t *testing.T, msg, state []byte) {
		sendCh := make(chan sendJob, 4)
		st := newLoopState(fed, nil, sendCh, make(chan struct{}, 1), 1)
		cat, _, err := st.verify(p.west.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		h, err := newHolding(cat, nil, p.west.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		st.store(st.cluster("west"), h)
		d := delegate{f: fed}
		d.NotifyJoin(&memberlist.Node{Name: "west", Addr: []byte{127, 0, 0, 2}, Port: 7946, Meta: meta})
		d.NotifyMsg(msg)
		d.MergeRemoteState(state, false)
		for _, e := range fed.events.drain() {
			if err := st.handle(e); err != nil {
				t.Fatal(err)
			}
		}
		st.snapshot(time.Now())
		cv := fed.Snapshot().Clusters["west"]
		if cv.Catalog == nil || cv.Catalog.Version < p.west.Version {
			t.Errorf("west's verified catalog was lost: %+v", cv.Catalog)
		}
		if c := st.clusters["west"]; c.want > c.held() && farFuture(c.want, c.held()) {
			t.Errorf("a far-future claim %s is waited for", FormatVersion(c.want))
		}
		if st.epoch != 1 {
			t.Errorf("an unsigned claim moved east's epoch to %d", st.epoch)
		}
		if b, err := json.Marshal(cv.Member); err != nil || len(b) == 0 {
			t.Errorf("member does not encode: %v", err)
		}
	})
}
