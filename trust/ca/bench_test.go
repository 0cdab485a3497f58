package ca_test

import (
	"testing"
	"time"
)

// BenchmarkSignCSR measures SVID signing throughput: parse and check a
// workload's CSR, sign an ECDSA P-256 certificate with the intermediate.
// Run with -cpu 1 for SVIDs per second on one core.
func BenchmarkSignCSR(b *testing.B) {
	inter := newIntermediate(b, newRoot(b), "east")
	id := workloadID(b, td, "bookbuyer", "bookbuyer")
	csr := csrFor(b, ecKey(b))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := inter.SignCSR(csr, id, 24*time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "svids/s")
}

// BenchmarkIssueSVID includes making the key, as the controller does for
// Envoy proxies served over SDS.
func BenchmarkIssueSVID(b *testing.B) {
	inter := newIntermediate(b, newRoot(b), "east")
	id := workloadID(b, td, "bookbuyer", "bookbuyer")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := inter.IssueSVID(id, 24*time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "svids/s")
}
