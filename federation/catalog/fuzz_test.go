package catalog

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// fuzzLimits are small, so that the fuzzer reaches every limit quickly.
var fuzzLimits = Limits{MaxInflatedBytes: 1 << 16, MaxServices: 20, MaxEndpoints: 40, MaxMembers: 16, MaxStringBytes: 64, MaxDepth: 8}

func seedJSON(f *testing.F) {
	for _, c := range []*Catalog{realistic("west", 2, 2), {Format: 1, Cluster: "east", Version: 1}} {
		b, err := json.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{`{}`, `null`, `{"services":[{},{}]}`, `{"x":[[[[{"y":"\ud800"}]]]]}`, `{"cluster":"\u0041\n"}`, `{"version":18446744073709551616}`, `{"services":[{"ports":[{"port":65535,"targetPort":0}]}]} x`, "{\"cluster\":\"\xff\"}"} {
		f.Add([]byte(s))
	}
}

// checkDecoded holds for every catalog the bounded parser accepts: it is
// within the limits, and encoding it again decodes to the same catalog.
func checkDecoded(t *testing.T, c *Catalog, lim Limits) {
	if len(c.Services) > lim.MaxServices {
		t.Fatalf("%d services accepted, limit %d", len(c.Services), lim.MaxServices)
	}
	n := 0
	for _, s := range c.Services {
		n += len(s.Endpoints)
	}
	if n > lim.MaxEndpoints {
		t.Fatalf("%d endpoints accepted, limit %d", n, lim.MaxEndpoints)
	}
	again, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := decodeJSON(bytes.NewReader(again), DefaultLimits())
	if err != nil {
		t.Fatalf("re-encoded catalog does not decode: %v\n%s", err, again)
	}
	// encoding/json turns invalid UTF-8 into U+FFFD; compare the re-encoding.
	again2, _ := json.Marshal(c2)
	if !bytes.Equal(again, again2) {
		t.Fatalf("round trip differs:\n%s\n%s", again, again2)
	}
}

// FuzzDecodeJSON runs the bounded catalog parser on arbitrary JSON.
func FuzzDecodeJSON(f *testing.F) {
	seedJSON(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeJSON(bytes.NewReader(b), fuzzLimits)
		if err != nil {
			return
		}
		checkDecoded(t, c, fuzzLimits)
		// On lower-case ASCII input (encoding/json matches keys without
		// regard to case), what both accept they decode alike.
		var want Catalog
		if isLowerASCII(b) && json.Unmarshal(b, &want) == nil && !reflect.DeepEqual(normalize(&want), normalize(c)) {
			t.Fatalf("parser and encoding/json differ:\n%+v\n%+v", c, &want)
		}
	})
}

func isLowerASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 || c >= 'A' && c <= 'Z' {
			return false
		}
	}
	return true
}

// normalize makes empty slices nil: "[]" is nil for the parser, empty
// for encoding/json, and the same catalog.
func normalize(c *Catalog) *Catalog {
	out := *c
	if len(out.Services) == 0 {
		out.Services = nil
	}
	out.Services = append([]ExportedService(nil), out.Services...)
	for i := range out.Services {
		s := &out.Services[i]
		if len(s.Ports) == 0 {
			s.Ports = nil
		}
		if len(s.Endpoints) == 0 {
			s.Endpoints = nil
		}
	}
	return &out
}

// FuzzDecodePayload runs inflate and parse on arbitrary compressed
// payloads, as a receiver does after checking a signature.
func FuzzDecodePayload(f *testing.F) {
	for _, c := range []*Catalog{realistic("west", 2, 2), {Format: 1, Cluster: "east", Version: 1}} {
		p, err := encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add(gz(f, bytes.Repeat([]byte("{},"), 10000)))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decode(b, fuzzLimits)
		if err != nil {
			return
		}
		checkDecoded(t, c, fuzzLimits)
	})
}

// FuzzVerify runs Verify on envelopes that really are signed by west's
// key but carry an arbitrary payload and header claims, as a member
// holding its own cluster's key could send: no panic, and whatever Verify
// accepts is west's catalog, within the limits, with a valid header.
func FuzzVerify(f *testing.F) {
	s := newTestSigner(f, "west")
	for _, c := range []*Catalog{realistic("west", 2, 2), {Format: 1, Cluster: "east", Version: 1}, {Format: 1, Cluster: "west", Version: 3}} {
		p, err := encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p, "west", uint64(c.Version))
	}
	f.Add(gz(f, bytes.Repeat([]byte("{},"), 10000)), "west", uint64(1))
	f.Add([]byte{}, "we\nst", uint64(0))
	opts := s.opts()
	opts.Now = time.Now()
	opts.Limits = fuzzLimits
	f.Fuzz(func(t *testing.T, payload []byte, cluster string, version uint64) {
		env, err := seal(cluster, version, payload, s.key, s.chain)
		if err != nil {
			t.Fatal(err)
		}
		c, signed, err := Verify(env.Bytes, opts)
		if err != nil {
			if Reason(err) == "other" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if c.Cluster != "west" || signed.Cluster != "west" || c.Version != version || c.Version == 0 || c.Format != FormatVersion {
			t.Fatalf("accepted %q v%d format %d", c.Cluster, c.Version, c.Format)
		}
		checkDecoded(t, c, fuzzLimits)
	})
}

// FuzzPeek runs the envelope header reader on arbitrary bytes: whatever
// cluster name it returns is a DNS label.
func FuzzPeek(f *testing.F) {
	for _, h := range []string{`{"cluster":"west","version":3,"chain":["AAAA"],"sig":"AAAA"}`, `{"cluster":"we\nst"}`, `{}`} {
		b := append([]byte("MFSC\x01"), byte(len(h)>>24), byte(len(h)>>16), byte(len(h)>>8), byte(len(h)))
		f.Add(append(append(b, h...), 0x1f, 0x8b))
	}
	f.Add([]byte("MFSC\x01\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if cluster, _, err := Peek(b); err == nil && !ValidClusterName(cluster) {
			t.Fatalf("Peek passed cluster %q", cluster)
		}
	})
}

// FuzzDecodeDelta runs the delta decoder on arbitrary bytes within small
// limits: no panic; whatever it accepts is within the limits, has a valid
// header and a base below its version, and applying it to a catalog of
// its cluster at its base stays within the catalog bound.
func FuzzDecodeDelta(f *testing.F) {
	v1 := realistic("west", 5, 1)
	sortServices(v1)
	h1, _ := ServiceHashes(v1)
	v2 := next(v1, 2)
	sortServices(v2)
	h2, _ := ServiceHashes(v2)
	b, err := Diff(v1, v2, h1, h2).Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("MFSD\x01\x00\x00\x00\x02{}"))
	f.Add(append([]byte("MFSD\x01\x00\x00\x00\x0c{\"base\":1}  "), gz(f, bytes.Repeat([]byte("{},"), 1000))...))
	lim := DeltaLimits{MaxBytes: 64 << 10, MaxServices: 50, MaxCatalogServices: 60}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDelta(b, lim)
		if err != nil {
			if Reason(err) == "other" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if len(d.Changed.Services) > lim.MaxServices || len(d.Removed) > lim.MaxServices || d.Base == 0 || d.Base >= d.Changed.Version {
			t.Fatalf("accepted a delta of %d services, %d removals, base %d to %d", len(d.Changed.Services), len(d.Removed), d.Base, d.Changed.Version)
		}
		base := *v1
		base.Cluster, base.Version = d.Changed.Cluster, d.Base
		if c, hashes, err := d.Apply(&base, h1, lim); err == nil && (len(c.Services) > lim.MaxCatalogServices || len(hashes) != len(c.Services)) {
			t.Fatalf("applied to %d services with %d hashes", len(c.Services), len(hashes))
		}
	})
}

// FuzzVerifyHead runs VerifyHead on arbitrary bytes: no panic, and the only
// head it accepts is west's, signed with west's key.
func FuzzVerifyHead(f *testing.F) {
	s := newTestSigner(f, "west")
	h, err := SignHead(Head{Cluster: "west", Version: 3, Digest: make([]byte, 32)}, s.key, s.chain)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(h.Bytes)
	f.Add([]byte(`{"head":"e30=","chain":[],"sig":""}`))
	f.Add([]byte(`{"head":null}`))
	now := time.Now()
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := VerifyHead(b, s.root.Pool, testTD, now)
		if err != nil {
			if Reason(err) == "other" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if got.Cluster != "west" || len(got.Digest) != 32 || got.Version == 0 {
			t.Fatalf("accepted %+v", got.Head)
		}
	})
}
