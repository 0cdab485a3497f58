package federation

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/catalog"
)

// sealRaw signs an arbitrary compressed payload as cluster's catalog, the
// way catalog.Sign lays out an envelope: a member holding its own key can
// sign any bytes it likes.
func sealRaw(t *testing.T, cluster string, version uint64, payload []byte, key crypto.Signer, chain []*x509.Certificate) []byte {
	t.Helper()
	digest := sha256.Sum256(payload)
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	h := struct {
		Cluster string   `json:"cluster"`
		Version uint64   `json:"version"`
		Chain   [][]byte `json:"chain"`
		Sig     []byte   `json:"sig"`
	}{Cluster: cluster, Version: version, Sig: sig}
	for _, c := range chain {
		h.Chain = append(h.Chain, c.Raw)
	}
	hb, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.WriteString("MFSC")
	buf.WriteByte(catalog.FormatVersion)
	_ = binary.Write(&buf, binary.BigEndian, uint32(len(hb)))
	buf.Write(hb)
	buf.Write(payload)
	return buf.Bytes()
}

// gzipParts compresses the concatenation of parts, each repeated as often
// as its count says, without holding the inflated document in memory.
type part struct {
	s string
	n int
}

func gzipParts(t *testing.T, parts ...part) (payload []byte, inflated int64) {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	for _, p := range parts {
		chunk := strings.Repeat(p.s, max(1, min(p.n, (1<<20)/max(1, len(p.s)))))
		per := len(chunk) / len(p.s)
		for left := p.n; left > 0; left -= per {
			c := chunk
			if left < per {
				c = chunk[:left*len(p.s)]
			}
			n, err := io.WriteString(zw, c)
			if err != nil {
				t.Fatal(err)
			}
			inflated += int64(n)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), inflated
}

func totalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// TestTinyCatalogCannotExhaustReceiverMemory has a member that holds the
// gossip key and its own cluster's signing key send catalogs built to
// exhaust a receiver: each is signed correctly, small on the wire, and
// inflates or decodes into something huge. The receiver refuses each with
// little allocation (the whole process's allocation is counted, a
// generous bound), and afterwards still accepts good catalogs.
func TestTinyCatalogCannotExhaustReceiverMemory(t *testing.T) {
	tf := newTestFederation(t)
	east := start(t, tf.config("east"))
	west := start(t, tf.config("west", east))
	mallory := start(t, tf.config("mallory", east))
	eventually(t, 20*time.Second, func() (bool, string) {
		return memberState(mallory, "east") == StateAlive && memberState(east, "mallory") == StateAlive, "mallory and east see each other"
	})
	key, chain, err := mallory.f.cfg.Signer.CatalogSigner()
	if err != nil {
		t.Fatal(err)
	}
	head := `{"format":1,"cluster":"mallory","version":1,"generatedAt":"2026-12-03T07:00:00Z",`
	svcHead := `"services":[{"namespace":"bookstore","name":"bookstore","ports":[{"name":"http","port":14001}],"endpoints":[`
	bombs := []struct {
		name  string
		parts []part
	}{
		// The catalog of the report: an 18 KB envelope of "{}," that cost
		// 5 s of the federation loop and 1.6 GiB before decoding was bounded.
		{"empty endpoints", []part{{head + svcHead, 1}, {"{},", 6_000_000}, {"{}]}]}", 1}}},
		{"deep nesting", []part{{head + `"x":`, 1}, {"[", 10_000_000}, {"]", 10_000_000}, {"}", 1}}},
		{"huge string", []part{{head + `"network":"`, 1}, {"a", 50 << 20}, {`"}`, 1}}},
		{"many services", []part{{head + `"services":[`, 1}, {`{"namespace":"a","name":"b"},`, 1_000_000}, {"{}]}", 1}}},
		{"many endpoints", []part{{head + svcHead, 1}, {`{"address":"10.66.0.1","ready":true,"zone":"z1"},`, 1_000_000}, {"{}]}]}", 1}}},
		{"zip bomb", []part{{head, 1}, {" ", 96 << 20}, {`"network":"x"}`, 1}}},
	}
	for i, b := range bombs {
		t.Run(b.name, func(t *testing.T) {
			payload, inflated := gzipParts(t, b.parts...)
			env := sealRaw(t, "mallory", uint64(i+1), payload, key, chain)
			if len(env) > 1<<20 || inflated < 16<<20 {
				t.Fatalf("not a bomb: %d bytes inflate to %d", len(env), inflated)
			}
			t.Logf("%d-byte envelope inflates to %d bytes", len(env), inflated)
			before := rejected(east, "oversize")
			runtime.GC()
			alloc := totalAlloc()
			sendRaw(t, mallory, east, append([]byte{kindCatalog}, env...))
			eventually(t, 60*time.Second, func() (bool, string) {
				return rejected(east, "oversize") > before, "east has not refused the catalog as oversize"
			})
			if used := totalAlloc() - alloc; used > 128<<20 {
				t.Errorf("refusing it allocated %d MiB", used>>20)
			} else {
				t.Logf("refusing it allocated %.1f MiB", float64(used)/(1<<20))
			}
			if cv, ok := east.f.Snapshot().Clusters["mallory"]; ok && cv.Catalog != nil {
				t.Fatalf("east holds mallory's catalog v%d", cv.Catalog.Version)
			}
		})
	}
	// East's loop is free: west's catalog and mallory's own good one arrive.
	vWest := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5"))
	vMallory := publish(t, mallory, svc("bookstore", "bookstore-v3", "10.244.3.5"))
	eventually(t, 30*time.Second, func() (bool, string) { return sees(east, "west", vWest) })
	eventually(t, 30*time.Second, func() (bool, string) { return sees(east, "mallory", vMallory) })
	if !hasService(east, "mallory", "bookstore/bookstore-v3") {
		t.Fatalf("east lacks mallory's good service")
	}
}

// TestPublishingMoreThanReceiversAcceptFails: a cluster whose catalog
// every receiver would refuse learns it when it publishes.
func TestPublishingMoreThanReceiversAcceptFails(t *testing.T) {
	tf := newTestFederation(t)
	east := start(t, tf.config("east"))
	var services []catalog.ExportedService
	for i := range catalog.DefaultLimits().MaxServices + 1 {
		services = append(services, catalog.ExportedService{Namespace: "bookstore", Name: "svc-" + strconv.Itoa(i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := east.f.Publish(ctx, services)
	if !errors.Is(err, catalog.ErrOversize) || !strings.Contains(err.Error(), "more than 20000 services") {
		t.Fatalf("publishing 20,001 services: %v", err)
	}
	// Within the limits it publishes.
	if _, err := east.f.Publish(ctx, services[:20000]); err != nil {
		t.Fatalf("publishing 20,000 services: %v", err)
	}
}
