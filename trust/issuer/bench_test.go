package issuer_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/internal/kubetest"
	"github.com/meshfed/meshfed/trust/issuer"
)

// BenchmarkIssueLatency measures one Sign call end to end: a real TLS gRPC
// client on 127.0.0.1, a TokenReview against a real kube-apiserver, CSR
// checks and signing. "reused-connection" is a long-lived client;
// "new-connection" dials (TLS handshake) for every request, as the agent
// does at each renewal. It reports p50 and p99 latency.
func BenchmarkIssueLatency(b *testing.B) {
	kube := kubetest.StartAPIServer(b)
	kubetest.CreateServiceAccount(b, kube, "bookbuyer", "bookbuyer")
	kubetest.MeshNamespace(b, kube, "bookbuyer")
	addr, auth := startIssuer(b, kube)
	token := kubetest.MustToken(b, kube, "bookbuyer", "bookbuyer", trust.DefaultAudience)
	csrDER := csr(b)
	ctx := context.Background()

	run := func(b *testing.B, sign func() error) {
		lat := make([]time.Duration, 0, 1024)
		b.ResetTimer()
		for b.Loop() {
			start := time.Now()
			if err := sign(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
	b.Run("reused-connection", func(b *testing.B) {
		cc, err := issuer.Dial(addr, auth, td, issuerID)
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		client := issuer.NewClient(cc)
		run(b, func() error { _, err := client.Sign(ctx, token, csrDER); return err })
	})
	b.Run("new-connection", func(b *testing.B) {
		run(b, func() error {
			cc, err := issuer.Dial(addr, auth, td, issuerID)
			if err != nil {
				return err
			}
			defer cc.Close()
			_, err = issuer.NewClient(cc).Sign(ctx, token, csrDER)
			return err
		})
	})
}
