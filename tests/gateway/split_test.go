package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/localmesh/gateway"
	"github.com/meshfed/meshfed/mesh"
)

// An 80/20 TrafficSplit in east between bookstore-v1 (east) and
// bookstore-v2 (west, on another network, two pods behind west's one
// gateway address) holds within tolerance; moving it to 50/50 while the
// client calls fails no call; and west's two pods share west's calls
// although one gateway address pins a connection to one pod: the pods'
// servers end connections after MaxConnectionAge, and the gateway sends
// each new connection to the next pod (docs/gateway.md).
func TestSplitAcrossNetworksHoldsAndSpreadsOverPods(t *testing.T) {
	p := newPKI(t)
	v1ID, v2ID := mesh.NewIdentity(td, "bookstore", "bookstore-v1"), mesh.NewIdentity(td, "bookstore", "bookstore-v2")
	allow := func(dest mesh.Identity) ([]mesh.TrafficTarget, []mesh.TCPRoute) {
		return []mesh.TrafficTarget{{Namespace: "bookstore", Name: "buyer", Destination: dest, Sources: []mesh.Identity{bookbuyerID},
			Rules: []mesh.TrafficTargetRule{{Kind: mesh.KindTCPRoute, Name: "all"}}}}, []mesh.TCPRoute{{Namespace: "bookstore", Name: "all"}}
	}
	aged := grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: 300 * time.Millisecond, MaxConnectionAgeGrace: 5 * time.Second})
	endpoint := func(a netip.AddrPort, cluster, network string, id mesh.Identity) mesh.Endpoint {
		return mesh.Endpoint{Address: a.Addr().String(), TargetPorts: map[string]uint32{"grpc": uint32(a.Port())}, Cluster: cluster, Network: network, Ready: true, Identity: id}
	}

	// West: bookstore-v2 on two pods, exported, behind the gateway.
	westXDS, westAddr := startXDS(t, p)
	w1, s1 := startNamedPod(t, p, westAddr, "127.0.0.3", "west-1", v2ID, aged)
	w2, s2 := startNamedPod(t, p, westAddr, "127.0.0.4", "west-2", v2ID, aged)
	westEPs := []mesh.Endpoint{endpoint(w1, "west", "net-west", v2ID), endpoint(w2, "west", "net-west", v2ID)}
	tt, routes := allow(v2ID)
	update(t, westXDS, mesh.State{
		Settings:         mesh.Settings{ClusterName: "west", Network: "net-west", TrustDomain: td},
		MeshedNamespaces: []string{"bookstore"},
		Services:         []mesh.Service{{Namespace: "bookstore", Name: "bookstore-v2", Cluster: "west", Ports: port, Endpoints: westEPs}},
		TrafficTargets:   tt, TCPRoutes: routes,
		Imports: []mesh.Import{{Namespace: "bookstore", Name: "bookstore-v2", Ports: port, Clusters: []string{"west"}}},
	})
	gw := gateway.New(gateway.Config{XDSAddress: westAddr,
		TLS:    &tls.Config{Certificates: []tls.Certificate{p.tlsCert(t, gatewayID)}, RootCAs: p.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12},
		Listen: func(uint32) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }})
	ctx, cancel := context.WithCancel(context.Background())
	gwDone := make(chan error, 1)
	go func() { gwDone <- gw.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-gwDone })
	var gwAddr string
	for deadline := time.Now().Add(time.Minute); gwAddr == ""; gwAddr = gw.Addr(generate.GatewayPort) {
		if time.Now().After(deadline) {
			t.Fatal("the gateway never got its listener")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// East: bookstore-v1 local, west's bookstore-v2 through the gateway,
	// bookstore split between them.
	eastXDS, eastAddr := startXDS(t, p)
	e1, s3 := startNamedPod(t, p, eastAddr, "127.0.0.2", "east-1", v1ID)
	v1 := []mesh.Endpoint{endpoint(e1, "east", "net-east", v1ID)}
	remote := mesh.ThroughGateways(mesh.Service{Namespace: "bookstore", Name: "bookstore-v2", Cluster: "west", Ports: port,
		Identities: []mesh.Identity{v2ID}, Endpoints: westEPs}, []netip.AddrPort{netip.MustParseAddrPort(gwAddr)})
	tt, routes = allow(v1ID)
	east := func(v1w, v2w int64) mesh.State {
		return mesh.State{
			Settings:         mesh.Settings{ClusterName: "east", Network: "net-east", TrustDomain: td},
			MeshedNamespaces: []string{"bookbuyer", "bookstore"},
			Services: []mesh.Service{
				{Namespace: "bookstore", Name: "bookstore", Cluster: "east", Ports: port, Endpoints: v1},
				{Namespace: "bookstore", Name: "bookstore-v1", Cluster: "east", Ports: port, Endpoints: v1},
			},
			TrafficSplits: []mesh.TrafficSplit{{Namespace: "bookstore", Name: "split", Service: "bookstore",
				Backends: []mesh.SplitBackend{{Service: "bookstore-v1", Weight: v1w}, {Service: "bookstore-v2", Cluster: "west", Weight: v2w}}}},
			TrafficTargets: tt, TCPRoutes: routes,
			Remote: map[string]mesh.ClusterCatalog{"west": {Cluster: "west", Network: "net-west", Version: 1, Services: []mesh.Service{remote}}},
		}
	}
	update(t, eastXDS, east(80, 20))
	for _, s := range []<-chan struct{}{s1, s2, s3} {
		select {
		case <-s:
		case <-time.After(time.Minute):
			t.Fatal("a pod never got its server listener")
		}
	}

	// 400 calls, one every 20 ms; the split moves to 50/50 after ~4 s.
	cmd := clientCommand(t, p, bookbuyerID, eastAddr, true, time.Minute,
		clientEnv+"_TARGET=bookstore.bookstore.svc.cluster.local:14001", clientEnv+"_CALLS=400", clientEnv+"_PAUSE=20ms")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	moved := -1
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) == 200 {
			update(t, eastXDS, east(50, 50))
			moved = len(lines)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client: %v", err)
	}
	tally := func(ls []string) map[string]int {
		n := map[string]int{}
		for _, l := range ls {
			f := strings.Fields(l)
			if len(f) < 2 || f[0] != "ok" {
				n["failed"]++
				continue
			}
			n[f[1]]++
		}
		return n
	}
	// The first line is the client's wait for its first answer.
	before, after := tally(lines[1:moved]), tally(lines[moved+50:])
	t.Logf("80/20: %v; 50/50 (from 50 calls after the change): %v", before, after)
	if all := tally(lines[1:]); all["failed"] > 0 {
		t.Errorf("%d calls failed across the split and its change: %v", all["failed"], all)
	}
	share := func(n map[string]int) float64 {
		west := n["west-1"] + n["west-2"]
		return float64(west) / float64(west+n["east-1"])
	}
	// Binomial spread at n≈200: ±3 standard deviations.
	if s := share(before); s < 0.11 || s > 0.29 {
		t.Errorf("80/20: west took %.2f of the calls, want 0.20 ± 0.09", s)
	}
	if s := share(after); s < 0.38 || s > 0.62 {
		t.Errorf("50/50: west took %.2f of the calls, want 0.50 ± 0.12", s)
	}
	if all := tally(lines[1:]); all["west-1"] == 0 || all["west-2"] == 0 {
		t.Errorf("west's calls went to one pod only: %v; MaxConnectionAge and the gateway's round robin should spread them", all)
	}
}
