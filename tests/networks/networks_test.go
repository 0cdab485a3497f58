package networks_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/meshfed/meshfed/localmesh"
	"github.com/meshfed/meshfed/localmesh/workloads"
)

var placement = []localmesh.Step{
	{Cluster: "east", Manifest: "apps/bookstore.yaml"}, {Cluster: "east", Manifest: "apps/bookstore-v1.yaml"},
	{Cluster: "east", Manifest: "apps/bookbuyer.yaml"}, {Cluster: "east", Manifest: "apps/bookthief.yaml"},
	{Cluster: "east", Manifest: "access"},
	{Cluster: "west", Manifest: "apps/bookstore.yaml"}, {Cluster: "west", Manifest: "apps/bookstore-v2.yaml"},
	{Cluster: "west", Manifest: "access"}, {Cluster: "west", Manifest: "export/bookstore-v2.yaml"},
	{Cluster: "east", Manifest: "split/bookstore-50-50.yaml"},
}

var (
	buyerEast = localmesh.SourceLabel("bookbuyer", "east")
	thiefEast = localmesh.SourceLabel("bookthief", "east")
	v1East    = localmesh.Outcome{OK: true, Version: "v1", Cluster: "east"}
	v2West    = localmesh.Outcome{OK: true, Version: "v2", Cluster: "west", Via: "west's gateway"}
)

func TestTwoNetworks(t *testing.T) {
	if err := workloads.CanCreateUserNetworks(); err != nil {
		t.Skipf("the suite needs unprivileged user and network namespaces: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := os.Getenv("MESHFED_TEST_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	h, err := localmesh.Start(ctx, localmesh.Config{
		Clusters: []string{"east", "west"}, Dir: dir, Logf: t.Logf, Interval: 25 * time.Millisecond,
		WithdrawAfter: 10 * time.Second, SeparateNetworks: true,
		Namespaces: []string{"bookstore", "bookbuyer", "bookthief"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := h.Stop(); err != nil {
			t.Error(err)
		}
	}()
	defer func() {
		if t.Failed() {
			t.Logf("logs: %s and the controllers' logs beside it (set MESHFED_TEST_DIR to keep them)", h.LogPath())
		}
	}()
	if err := h.ApplyAll(ctx, placement); err != nil {
		t.Fatal(err)
	}
	st := h.Stats()
	if err := localmesh.WaitUntil(ctx, 3*time.Minute, "bookbuyer in east reaches both bookstores", func(now time.Time) (bool, string) {
		e := st.Recent(now, 2*time.Second, buyerEast, "BuyBook")
		return e.By[v1East] > 0 && e.By[v2West] > 0, fmt.Sprintf("east %v", e.By)
	}); err != nil {
		t.Fatal(err)
	}
}
