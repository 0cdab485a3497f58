package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

var testDeltaLimits = DeltaLimits{MaxBytes: 1 << 20, MaxServices: 1000, MaxCatalogServices: 20000}

// digestOf is the content digest of c, computed from scratch.
func digestOf(t *testing.T, c *Catalog) ([32]byte, [][32]byte) {
	t.Helper()
	h, err := ServiceHashes(c)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ContentDigest(c, h)
	if err != nil {
		t.Fatal(err)
	}
	return d, h
}

// next is c at the next version with service i's first endpoint flipped,
// service "team-x/added" added and service 1 removed.
func next(c *Catalog, i int) *Catalog {
	n := *c
	n.Version++
	n.GeneratedAt = n.GeneratedAt.Add(time.Second)
	n.Services = nil
	for j, s := range c.Services {
		if j == 1 {
			continue
		}
		if j == i {
			s.Endpoints = append([]Endpoint(nil), s.Endpoints...)
			s.Endpoints[0].Ready = !s.Endpoints[0].Ready
		}
		n.Services = append(n.Services, s)
	}
	n.Services = append(n.Services, ExportedService{Namespace: "team-x", Name: fmt.Sprintf("added-%d", n.Version), Ports: []Port{{Port: 80}}})
	return &n
}

func TestContentDigestSurvivesTheWire(t *testing.T) {
	s := newTestSigner(t, "west")
	c := realistic("west", 300, 3)
	c.Services[3].Name = "bad\xffutf8"
	c.Services[4].Endpoints[0].Zone = "<&>\u2028"
	c.Services[5].ExportedAt = time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))
	Canonicalize(c)
	sortServices(c)
	want, _ := digestOf(t, c)
	signed, err := Sign(c, s.key, s.chain)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := Verify(signed.Bytes, s.opts())
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := digestOf(t, got); d != want {
		t.Fatal("the receiver's content digest differs from the owner's")
	}
}

func sortServices(c *Catalog) {
	for i := 1; i < len(c.Services); i++ {
		for j := i; j > 0 && compareKeys(&c.Services[j-1], &c.Services[j]) > 0; j-- {
			c.Services[j-1], c.Services[j] = c.Services[j], c.Services[j-1]
		}
	}
}

func TestDeltaAppliedToTheBaseGivesTheOwnersCatalog(t *testing.T) {
	v1 := realistic("west", 500, 3)
	sortServices(v1)
	_, h1 := digestOf(t, v1)
	v2 := next(v1, 7)
	sortServices(v2)
	want, h2 := digestOf(t, v2)

	d := Diff(v1, v2, h1, h2)
	if d.Size() != 3 {
		t.Fatalf("delta of one change, one removal, one addition has %d entries", d.Size())
	}
	b, err := d.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeDelta(b, testDeltaLimits)
	if err != nil {
		t.Fatal(err)
	}
	cat, hashes, err := got.Apply(v1, h1, testDeltaLimits)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := ContentDigest(cat, hashes); err != nil || d != want {
		t.Fatalf("applied delta: digest mismatch (%v)", err)
	}
	if fresh, _ := digestOf(t, cat); fresh != want {
		t.Fatal("hashes carried through Apply disagree with the services")
	}
}

func TestComposedDeltasEqualTheDirectOne(t *testing.T) {
	v1 := realistic("west", 200, 2)
	sortServices(v1)
	_, h1 := digestOf(t, v1)
	v2 := next(v1, 3)
	sortServices(v2)
	_, h2 := digestOf(t, v2)
	v3 := next(v2, 9) // removes v2's service 1, re-flips
	sortServices(v3)
	want, _ := digestOf(t, v3)
	_, h3 := digestOf(t, v3)
	d, err := Compose([]*Delta{Diff(v1, v2, h1, h2), Diff(v2, v3, h2, h3)})
	if err != nil {
		t.Fatal(err)
	}
	cat, hashes, err := d.Apply(v1, h1, testDeltaLimits)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := ContentDigest(cat, hashes); got != want {
		t.Fatal("composed delta does not give the owner's catalog")
	}
	if !reflect.DeepEqual(cat.Services, v3.Services) {
		t.Fatal("composed delta: services differ")
	}
}

func TestDeltaOverTheLimitsIsRefusedBeforeDecoding(t *testing.T) {
	v1 := realistic("west", 50, 1)
	sortServices(v1)
	_, h1 := digestOf(t, v1)
	big := *v1
	big.Version = 9
	big.Services = nil
	for i := range 40 {
		big.Services = append(big.Services, ExportedService{Namespace: "zz", Name: fmt.Sprintf("s%03d", i)})
	}
	_, hb := digestOf(t, &big)
	b, err := Diff(v1, &big, h1, hb).Encode()
	if err != nil {
		t.Fatal(err)
	}
	for name, lim := range map[string]DeltaLimits{
		"bytes":    {MaxBytes: len(b) - 1, MaxServices: 1000, MaxCatalogServices: 1000},
		"services": {MaxBytes: 1 << 20, MaxServices: 39, MaxCatalogServices: 1000},
		"removals": {MaxBytes: 1 << 20, MaxServices: 45, MaxCatalogServices: 1000},
	} {
		if _, err := DecodeDelta(b, lim); !errors.Is(err, ErrOversize) {
			t.Errorf("%s: %v, want ErrOversize", name, err)
		}
	}
	d, err := DecodeDelta(b, testDeltaLimits)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Apply(v1, h1, DeltaLimits{MaxCatalogServices: 60}); !errors.Is(err, ErrOversize) {
		t.Errorf("a delta growing the catalog past its limit: %v", err)
	}
	if _, _, err := d.Apply(&big, hb, testDeltaLimits); err == nil {
		t.Error("a delta applied to a base it is not for was accepted")
	}
}

func TestSignedHeadNamesItsSigner(t *testing.T) {
	west := newTestSigner(t, "west")
	h := Head{Cluster: "west", Version: 5, Digest: make([]byte, 32)}
	sh, err := SignHead(h, west.key, west.chain)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyHead(sh.Bytes, west.root.Pool, testTD, time.Time{})
	if err != nil || got.Version != 5 || got.Cluster != "west" {
		t.Fatalf("VerifyHead: %+v, %v", got, err)
	}
	// West's key cannot speak for east.
	h.Cluster = "east"
	forged, err := SignHead(h, west.key, west.chain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyHead(forged.Bytes, west.root.Pool, testTD, time.Time{}); !errors.Is(err, ErrIdentity) {
		t.Fatalf("a head for east signed by west: %v, want ErrIdentity", err)
	}
	tampered := []byte(string(sh.Bytes))
	tampered[len(tampered)/3] ^= 1
	if _, err := VerifyHead(tampered, west.root.Pool, testTD, time.Time{}); err == nil {
		t.Fatal("a tampered head verified")
	}
}

func TestEncodedSizeIsTheCatalogsJSONLength(t *testing.T) {
	for _, n := range []int{0, 1, 17} {
		c := realistic("west", n, 2)
		sizes := make([]int, len(c.Services))
		for i := range c.Services {
			_, sizes[i], _ = ServiceHashAndSize(&c.Services[i])
		}
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(c); err != nil {
			t.Fatal(err)
		}
		if got, err := EncodedSize(c, sizes); err != nil || got != int64(buf.Len()) {
			t.Errorf("%d services: EncodedSize %d, JSON is %d bytes (%v)", n, got, buf.Len(), err)
		}
	}
}
