package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/meshfed/meshfed/localmesh"
)

// Config is what `meshfed demo` takes.
type Config struct {
	// Dir keeps the demo's clusters, binaries, sockets and logs. Empty:
	// <user cache dir>/meshfed/demo, emptied at start.
	Dir string
	// Out receives the live table (or, with Check, the checks' report).
	Out io.Writer
	// Check runs the scenario unattended and returns an error listing
	// every expectation missed.
	Check bool
	// Interval is the pause between a client's RPCs. Default 50 ms.
	Interval time.Duration
	// Refresh is how often the table is redrawn. Default 1 s.
	Refresh time.Duration
	// FlatNetwork puts both clusters' pods on one network, with no
	// gateways. Default: each cluster on its own network, west reached
	// only through its east-west gateway.
	FlatNetwork bool
	// Self is a meshfed binary that plays every role (localmesh.Config.Self):
	// `meshfed demo` passes its own, so it needs no checkout. Empty: the
	// programs are built from the checkout the process runs in.
	Self string
}

// placement is where the demo puts the bookstore: clients and bookstore-v1
// in east, bookstore-v2 in west and exported, the TrafficTargets in both,
// and the split in east.
var placement = []localmesh.Step{
	{Cluster: "east", Manifest: "apps/bookstore.yaml"}, {Cluster: "east", Manifest: "apps/bookstore-v1.yaml"},
	{Cluster: "east", Manifest: "apps/bookbuyer.yaml"}, {Cluster: "east", Manifest: "apps/bookthief.yaml"},
	{Cluster: "east", Manifest: "apps/bookwarehouse.yaml"}, {Cluster: "east", Manifest: "access"},
	{Cluster: "west", Manifest: "apps/bookstore.yaml"}, {Cluster: "west", Manifest: "apps/bookstore-v2.yaml"},
	{Cluster: "west", Manifest: "access"}, {Cluster: "west", Manifest: "export/bookstore-v2.yaml"},
	{Cluster: "east", Manifest: "split/bookstore-50-50.yaml"},
}

// v2West is bookstore-v2 answering from west: through west's gateway on
// separate networks.
func (e *env) v2West() localmesh.Outcome {
	o := localmesh.Outcome{OK: true, Version: "v2", Cluster: "west"}
	if !e.cfg.FlatNetwork {
		o.Via = "west's gateway"
	}
	return o
}

// env is a running demo.
type env struct {
	cfg Config
	h   *localmesh.Harness
}

// Run starts the demo and runs it until ctx ends (or, with Check, until
// the scenario is done). It stops every process it started before it
// returns.
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = time.Second
	}
	if cfg.Dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return err
		}
		cfg.Dir = filepath.Join(base, "meshfed", "demo")
	}
	e := &env{cfg: cfg}
	e.h, err = localmesh.Start(ctx, localmesh.Config{
		Clusters: []string{"east", "west"}, Dir: cfg.Dir, Logf: e.say, Progress: cfg.Out,
		Interval: cfg.Interval, WithdrawAfter: 5 * time.Second, Keep: 2 * time.Minute, Self: cfg.Self,
		SeparateNetworks: !cfg.FlatNetwork,
	})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := e.h.Stop(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if !cfg.FlatNetwork {
		e.say("east and west are on separate networks: east's pods reach west's only through west's east-west gateway (%s)", e.h.Cluster("west").GatewayAddress())
	}
	e.say("applying the bookstore: bookbuyer, bookthief, bookstore-v1 in east; bookstore-v2 in west, exported")
	if err := e.h.ApplyAll(ctx, placement); err != nil {
		return err
	}
	if cfg.Check {
		return e.check(ctx)
	}
	return e.live(ctx)
}

func (e *env) say(format string, args ...any) {
	fmt.Fprintf(e.cfg.Out, "demo: "+format+"\n", args...)
}
