package catalog

import (
	"bytes"
	"compress/gzip"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/internal/testpki"
)

const testTD = "meshfed.test"

// realistic returns a catalog like a large cluster's: services spread
// over namespaces, two ports, endpoints per service in three zones.
func realistic(cluster string, services, endpointsPer int) *Catalog {
	c := &Catalog{Format: FormatVersion, Cluster: cluster, Network: "net-" + cluster, Version: 7,
		GeneratedAt: time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC), TrustBundleFingerprint: strings.Repeat("ab", 32)}
	fs := true
	for i := range services {
		ns := fmt.Sprintf("team-%d", i%200)
		s := ExportedService{Namespace: ns, Name: fmt.Sprintf("svc-%d", i),
			Ports:      []Port{{Name: "http", Port: 8080, Protocol: "http", TargetPort: 9080}, {Name: "grpc", Port: 9090, Protocol: "grpc"}},
			ExportedAt: time.Date(2026, 11, 1, 0, 0, i%60, 0, time.UTC)}
		if i%7 == 0 {
			s.FailStatic = &fs
		}
		for j := range endpointsPer {
			s.Endpoints = append(s.Endpoints, Endpoint{
				Address: fmt.Sprintf("10.%d.%d.%d", 100+i/60000, (i/250)%240, (i%250)*1+j%4), Ready: j%5 != 0,
				Zone: fmt.Sprintf("zone-%d", j%3), Identity: "spiffe://" + testTD + "/ns/" + ns + "/sa/" + s.Name,
			})
		}
		c.Services = append(c.Services, s)
	}
	return c
}

func gz(t testing.TB, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// decodeUnbounded is how catalogs were decoded before the bounded parser:
// inflate whole, then encoding/json. Kept for the benchmark and as the
// reference the parser must agree with.
func decodeUnbounded(b []byte) (*Catalog, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, err
	}
	var c Catalog
	return &c, json.Unmarshal(raw, &c)
}

func TestDecodeAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range []*Catalog{
		realistic("west", 50, 3),
		{Format: 1, Cluster: "east", Version: 1},
		{Format: 1, Cluster: "east", Network: "net-east", Gateways: []string{"192.0.2.10:15443", "[2001:db8::1]:15443"}, Version: 1},
		{Format: 1, Cluster: "east", Version: 1, Services: []ExportedService{{Namespace: "a\u2028b", Name: "\"q\" \\ \U0001F600 \x01"}}},
	} {
		payload, err := encode(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decode(payload, DefaultLimits())
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		want, err := decodeUnbounded(payload)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("bounded decoder and encoding/json differ:\n%+v\n%+v", got, want)
		}
	}
}

func TestDecodeAcceptsWhatOtherWritersMaySend(t *testing.T) {
	in := `{"format":1,"cluster":"west","version":3,"future":{"a":[1,2.5e3,-4,true,false,null,"x"]},
	"services":[{"namespace":"ns","name":"n","ports":null,"endpoints":[{"address":"10.0.0.1","ready":true,"weight":3}],"failStatic":null}],
	"generatedAt":"2026-12-03T07:00:00.123456789Z","network":null}` + "\n\n"
	c, err := decodeJSON(strings.NewReader(in), DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster != "west" || c.Version != 3 || len(c.Services) != 1 || c.Services[0].Endpoints[0].Address != "10.0.0.1" || c.GeneratedAt.Nanosecond() != 123456789 {
		t.Fatalf("decoded %+v", c)
	}
	if c2, err := decodeJSON(strings.NewReader(`{"cluster":"a\ud83d\ude00\ud800x"}`), DefaultLimits()); err != nil || c2.Cluster != "a\U0001F600\uFFFDx" {
		t.Fatalf("surrogates: %q, %v", c2.Cluster, err)
	}
}

// TestDecodeRefusesCatalogBombs feeds the decoder small inputs built to
// cost a receiver time or memory, and shows each refused with the reason
// a metric counts.
func TestDecodeRefusesCatalogBombs(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxInflatedBytes = 4 << 20
	cases := []struct {
		name string
		json string
		want error
	}{
		{"empty endpoints", `{"format":1,"cluster":"m","version":1,"services":[{"namespace":"a","name":"b","endpoints":[` + strings.Repeat("{},", 2<<20) + `{}]}]}`, ErrOversize},
		{"deep nesting", `{"x":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`, ErrOversize},
		{"huge string", `{"cluster":"` + strings.Repeat("a", 3<<20) + `"}`, ErrOversize},
		{"huge key", `{"` + strings.Repeat("k", 3<<20) + `":1}`, ErrOversize},
		{"many services", `{"services":[` + strings.Repeat(`{},`, 30000) + `{}]}`, ErrOversize},
		{"many members", `{` + strings.Repeat(`"a":1,`, 5000) + `"b":1}`, ErrOversize},
		{"long unknown array", `{"x":[` + strings.Repeat(`0,`, 5000) + `0]}`, ErrOversize},
		{"over the inflate limit", `{"x":"` + strings.Repeat(`\u0041`, 1<<20) + `"}`, ErrOversize},
		{"duplicate key", `{"cluster":"a","cluster":"b"}`, ErrDecode},
		{"trailing data", `{"cluster":"a"} {"cluster":"b"}`, ErrDecode},
		{"port out of range", `{"services":[{"ports":[{"port":70000}]}]}`, ErrDecode},
		{"negative version", `{"version":-1}`, ErrDecode},
		{"control byte", "{\"cluster\":\"a\nb\"}", ErrDecode},
		{"truncated", `{"services":[{"namespace":"a"`, ErrDecode},
		{"not an object", `[]`, ErrDecode},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decode(gz(t, []byte(tc.json)), lim)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %.200v, want %v", err, tc.want)
			}
			if len(err.Error()) > 2048 {
				t.Fatalf("error is %d bytes", len(err.Error()))
			}
		})
	}
	many := realistic("west", 10, 0)
	for i := range many.Services {
		many.Services[i].Endpoints = make([]Endpoint, 20000)
	}
	payload, _ := encode(many)
	if _, err := decode(payload, Limits{}); !errors.Is(err, ErrOversize) || !strings.Contains(err.Error(), "150000 endpoints") {
		t.Fatalf("200,000 endpoints over ten services: %v", err)
	}
}

func TestValidateListsTenProblemsAndCountsTheRest(t *testing.T) {
	c := realistic("west", 1, 0)
	c.Services[0].Endpoints = make([]Endpoint, 100000)
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "and 99990 more problems") || strings.Count(err.Error(), "\n") != 10 {
		t.Fatalf("got %.300v", err)
	}
}

type testSigner struct {
	root  *testpki.Root
	key   crypto.Signer
	chain []*x509.Certificate
}

func newTestSigner(t testing.TB, cluster string) testSigner {
	t.Helper()
	root, err := testpki.NewRoot("test root")
	if err != nil {
		t.Fatal(err)
	}
	key, chain, err := root.SignerUnder(cluster, ClusterID(testTD, cluster))
	if err != nil {
		t.Fatal(err)
	}
	return testSigner{root: root, key: key, chain: chain}
}

func (s testSigner) opts() VerifyOptions {
	return VerifyOptions{Roots: s.root.Pool, TrustDomain: testTD, MaxBytes: 16 << 20}
}

func TestVerifyKeepsBadServicesForTheReceiverToJudge(t *testing.T) {
	s := newTestSigner(t, "west")
	c := realistic("west", 2, 1)
	c.Services[1].Name = "evil\nname"
	c.Services[1].Endpoints[0].Address = "not-an-ip.example.com"
	signed, err := Sign(c, s.key, s.chain)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := Verify(signed.Bytes, s.opts())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Services) != 2 || got.Services[1].Name != "evil\nname" {
		t.Fatalf("services %+v", got.Services)
	}
	// The header is judged here: a catalog of format 2 is refused whole.
	payload, _ := encode(&Catalog{Format: 2, Cluster: "west", Version: 1})
	env, _ := seal("west", 1, payload, s.key, s.chain)
	if _, _, err := Verify(env.Bytes, s.opts()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("format 2: %v", err)
	}
}

func TestVerifyBoundsInflationByTheEnvelopeLimit(t *testing.T) {
	s := newTestSigner(t, "west")
	payload := gz(t, []byte(`{"format":1,"cluster":"west","version":1`+strings.Repeat(" ", 5<<20)+`}`))
	env, err := seal("west", 1, payload, s.key, s.chain)
	if err != nil {
		t.Fatal(err)
	}
	opts := s.opts()
	opts.MaxBytes = 1 << 20
	opts.MaxInflatedBytes = 256 << 20
	if _, _, err := Verify(env.Bytes, opts); !errors.Is(err, ErrOversize) || !strings.Contains(err.Error(), fmt.Sprint(InflateRatio<<20)) {
		t.Fatalf("got %v, want oversize at %d bytes", err, InflateRatio<<20)
	}
}

// BenchmarkDecodeCatalog10k decodes a realistic 10,000-service catalog
// (ten endpoints each) as a receiver does: before (inflate whole, then
// encoding/json) and now (bounded streaming parser).
func BenchmarkDecodeCatalog10k(b *testing.B) {
	payload, err := encode(realistic("west", 10000, 10))
	if err != nil {
		b.Fatal(err)
	}
	raw, _ := json.Marshal(realistic("west", 10000, 10))
	b.Logf("payload %d bytes compressed, %d bytes of JSON", len(payload), len(raw))
	b.Run("before=inflate+encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(payload)))
		for b.Loop() {
			if _, err := decodeUnbounded(payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("after=bounded-stream", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(payload)))
		for b.Loop() {
			if _, err := decode(payload, DefaultLimits()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A catalog lists at most MaxGateways gateway addresses, and its owner
// publishes none that is not a usable IP:port.
func TestGatewayAddressesAreBounded(t *testing.T) {
	c := &Catalog{Format: 1, Cluster: "east", Version: 1}
	for i := 0; i <= MaxGateways; i++ {
		c.Gateways = append(c.Gateways, fmt.Sprintf("192.0.2.%d:15443", i+1))
	}
	payload, err := encode(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decode(payload, DefaultLimits()); err == nil {
		t.Errorf("decoded a catalog listing %d gateways", len(c.Gateways))
	}
	c.Gateways = []string{"127.0.0.1:15443", "gateway.example:15443"}
	err = c.Validate()
	for _, g := range c.Gateways {
		if err == nil || !strings.Contains(err.Error(), g) {
			t.Errorf("Validate: %v; want gateway %s refused", err, g)
		}
	}
}
