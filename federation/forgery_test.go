package federation

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/federation/internal/testpki"
)

// sendRaw sends a stream message from one member straight to another over
// the real encrypted memberlist stream, as a hostile member holding the
// gossip key could.
func sendRaw(t *testing.T, from, to *node, msg []byte) {
	t.Helper()
	ml := from.f.ml.Load()
	for _, m := range ml.Members() {
		if m.Name == to.f.cfg.ClusterName {
			if err := ml.SendReliable(m, msg); err != nil {
				t.Fatalf("send to %s: %v", m.Name, err)
			}
			return
		}
	}
	t.Fatalf("%s does not know %s", from.f.cfg.ClusterName, to.f.cfg.ClusterName)
}

func rejected(n *node, reason string) float64 {
	var m dto.Metric
	if err := n.f.m.rejected.WithLabelValues(reason).Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

func TestForgedAndBadCatalogsAreRejectedAndLastGoodKept(t *testing.T) {
	tf := newTestFederation(t)
	eastCfg := tf.config("east")
	eastCfg.MaxCatalogBytes = 64 << 10
	east := start(t, eastCfg)
	westCfg := tf.config("west", east)
	west := start(t, westCfg)
	northCfg := tf.config("north", east)
	northCfg.MaxCatalogBytes = 64 << 10
	north := start(t, northCfg)
	mallory := start(t, tf.config("mallory", east))
	receivers := []*node{east, north}

	vWest := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5"))
	for _, n := range receivers {
		eventually(t, 20*time.Second, func() (bool, string) { return sees(n, "west", vWest) })
		eventually(t, 20*time.Second, func() (bool, string) {
			return memberState(mallory, n.f.cfg.ClusterName) == StateAlive, "mallory sees " + n.f.cfg.ClusterName
		})
	}

	forgedWest := func(services ...catalog.ExportedService) *catalog.Catalog {
		return &catalog.Catalog{Format: catalog.FormatVersion, Cluster: "west", Version: vWest + 1000,
			GeneratedAt: time.Now(), Services: services}
	}
	evil := svc("bookstore", "bookstore-v2", "10.66.6.6")

	// Mallory holds the gossip key and a valid certificate of its own.
	malloryKey, malloryChain, _ := mallory.f.cfg.Signer.CatalogSigner()
	byMallory, err := catalog.Sign(forgedWest(evil), malloryKey, malloryChain)
	if err != nil {
		t.Fatal(err)
	}
	// A certificate naming west, from a root nobody trusts.
	otherRoot, err := testpki.NewRoot("other root")
	if err != nil {
		t.Fatal(err)
	}
	otherKey, otherChain, err := otherRoot.Signer(catalog.ClusterID(testTD, "west"))
	if err != nil {
		t.Fatal(err)
	}
	byOtherRoot, err := catalog.Sign(forgedWest(evil), otherKey, otherChain)
	if err != nil {
		t.Fatal(err)
	}
	// A certificate naming west, issued by mallory's own intermediate under
	// the trusted root: every cluster holds an intermediate, so the chain
	// must show that west's intermediate issued it.
	mintedKey, mintedChain, err := tf.root.SignerUnder("mallory", catalog.ClusterID(testTD, "west"))
	if err != nil {
		t.Fatal(err)
	}
	byMinted, err := catalog.Sign(forgedWest(evil), mintedKey, mintedChain)
	if err != nil {
		t.Fatal(err)
	}
	// West's real key, but the bytes were changed after signing.
	westKey, westChain, _ := westCfg.Signer.CatalogSigner()
	tampered, err := catalog.Sign(forgedWest(svc("bookstore", "bookstore-v2", "10.244.2.5")), westKey, westChain)
	if err != nil {
		t.Fatal(err)
	}
	tamperedBytes := append([]byte(nil), tampered.Bytes...)
	tamperedBytes[len(tamperedBytes)-5] ^= 0xff
	// A validly signed catalog of mallory's own, larger than the receivers accept.
	var big []catalog.ExportedService
	for i := range 4000 {
		junk := make([]byte, 16)
		_, _ = rand.Read(junk)
		big = append(big, svc("junk", fmt.Sprintf("svc-%d-%s", i, hex.EncodeToString(junk)), "10.66.0.1"))
	}
	oversize, err := catalog.Sign(&catalog.Catalog{Format: catalog.FormatVersion, Cluster: "mallory", Version: 1, GeneratedAt: time.Now(), Services: big}, malloryKey, malloryChain)
	if err != nil {
		t.Fatal(err)
	}
	if len(oversize.Bytes) <= 64<<10 {
		t.Fatalf("oversize catalog is only %d bytes", len(oversize.Bytes))
	}

	cases := []struct {
		name, reason string
		env          []byte
	}{
		{"claims west, signed by mallory", "identity", byMallory.Bytes},
		{"names west, untrusted root", "chain", byOtherRoot.Bytes},
		{"names west, minted by mallory's intermediate", "identity", byMinted.Bytes},
		{"west's key, tampered bytes", "signature", tamperedBytes},
		{"does not decode", "decode", []byte("MFSC\x01 this is not a catalog")},
		{"over the size limit", "oversize", oversize.Bytes},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range receivers {
				before := rejected(n, tc.reason)
				sendRaw(t, mallory, n, append([]byte{kindCatalog}, tc.env...))
				eventually(t, 10*time.Second, func() (bool, string) {
					return rejected(n, tc.reason) > before, n.f.cfg.ClusterName + " has not counted a " + tc.reason + " rejection"
				})
			}
		})
	}
	// Undecodable notices and requests are dropped without harm.
	sendRaw(t, mallory, east, []byte{kindRequest, '{'})
	sendRaw(t, mallory, east, []byte{kindNotice, 0xff})

	for _, n := range receivers {
		cv := n.f.Snapshot().Clusters["west"]
		if cv.Catalog == nil || cv.Catalog.Version != vWest || cv.Services[0].Endpoints[0].Address != "10.244.2.5" {
			t.Errorf("%s: west's catalog is %+v, want the real v%d", n.f.cfg.ClusterName, cv.Catalog, vWest)
		}
		if _, ok := n.f.Snapshot().Clusters["mallory"]; ok && n.f.Snapshot().Clusters["mallory"].Catalog != nil {
			t.Errorf("%s accepted mallory's oversize catalog", n.f.cfg.ClusterName)
		}
	}
	// Nothing else was lost: west's next version still arrives everywhere.
	v2 := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5", "10.244.2.8"))
	for _, n := range append(receivers, mallory) {
		eventually(t, 20*time.Second, func() (bool, string) { return sees(n, "west", v2) })
	}
}
