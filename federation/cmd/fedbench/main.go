// Command fedbench measures federation gossip in one process on loopback:
// how long a catalog change takes to reach every member, and how many gossip
// bytes a member sends and receives, at N members (default 50) with
// memberlist's LAN defaults. It prints a Markdown table for
// docs/benchmarks.md. It only ever talks to 127.0.0.1.
//
//	go run ./federation/cmd/fedbench -members 50 -changes 30 -services 10000 -big-changes 10 -idle 10s
//	go run ./federation/cmd/fedbench -members 100 -changes 30 -services 0 -idle 10s
//
// -cpuprofile FILE profiles the large catalog's changes (go tool pprof).
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/federation/internal/testpki"
)

const trustDomain = "bench.meshfed"

type member struct {
	f   *federation.Federation
	reg *prometheus.Registry
}

func main() {
	members := flag.Int("members", 50, "federation members, one per simulated cluster")
	changes := flag.Int("changes", 20, "small catalog changes to time")
	services := flag.Int("services", 10000, "services in the large catalog (0 skips that part)")
	bigChanges := flag.Int("big-changes", 3, "changes of the large catalog to time")
	idle := flag.Duration("idle", 30*time.Second, "steady-state window for bandwidth")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the large catalog's changes to this file")
	flag.Parse()
	profile = *cpuProfile
	if err := run(*members, *changes, *services, *bigChanges, *idle); err != nil {
		log.Fatal(err)
	}
}

func run(n, changes, services, bigChanges int, idle time.Duration) error {
	root, err := testpki.NewRoot("bench root")
	if err != nil {
		return err
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()

	ms := make([]*member, n)
	for i := range n {
		name := fmt.Sprintf("c%02d", i)
		sk, chain, err := root.Signer(catalog.ClusterID(trustDomain, name))
		if err != nil {
			return err
		}
		cfg := federation.DefaultConfig()
		cfg.ClusterName, cfg.TrustDomain = name, trustDomain
		cfg.BindAddr, cfg.BindPort, cfg.AdvertiseAddr = "127.0.0.1", 0, "127.0.0.1"
		cfg.GossipKeys = [][]byte{key}
		cfg.Signer = federation.StaticSigner{Key: sk, Chain: chain}
		cfg.Bundle = federation.StaticBundle{Roots: root.Pool, Fingerprint: "bench"}
		cfg.Registerer = prometheus.NewRegistry()
		if i > 0 {
			cfg.Seeds = []string{ms[0].f.Addr()}
		}
		f, err := federation.New(cfg)
		if err != nil {
			return err
		}
		ms[i] = &member{f: f, reg: cfg.Registerer.(*prometheus.Registry)}
		wg.Go(func() {
			if err := f.Run(ctx); err != nil {
				log.Printf("%s: %v", name, err)
			}
		})
		for f.Addr() == "" {
			time.Sleep(10 * time.Millisecond)
		}
	}
	start := time.Now()
	for !allSee(ms, func(m *member) bool { return len(m.f.Members()) == n }) {
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "%d members joined in %v\n", n, time.Since(start).Round(time.Millisecond))

	small := func(i, gen int) []catalog.ExportedService {
		return []catalog.ExportedService{{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i),
			Ports:     []catalog.Port{{Name: "grpc", Port: 14001, Protocol: "GRPC"}},
			Endpoints: []catalog.Endpoint{{Address: fmt.Sprintf("10.244.%d.%d", i, gen%250+1), Ready: true}}}}
	}
	for i, m := range ms { // everyone has a catalog, as in a real federation
		if _, err := m.f.Publish(ctx, small(i, 0)); err != nil {
			return err
		}
	}
	start = time.Now()
	for !allSee(ms, func(m *member) bool { return catalogsHeld(m) == n-1 }) && time.Since(start) < time.Minute {
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "every member holds every catalog after %v\n", time.Since(start).Round(time.Millisecond))
	time.Sleep(time.Second)

	var allTimes, memberTimes []time.Duration
	u0 := updatesSent(ms)
	for c := range changes {
		pub := ms[(c*7+1)%n]
		all, per, err := timeChange(ctx, ms, pub, small((c*7+1)%n, c+1), 30*time.Second)
		if err != nil {
			return err
		}
		allTimes = append(allTimes, all)
		memberTimes = append(memberTimes, per...)
		time.Sleep(500 * time.Millisecond)
	}

	smallUpdates := updatesSent(ms).minus(u0)
	before := gossipBytes(ms)
	time.Sleep(idle)
	after := gossipBytes(ms)
	idleRate := (after - before) / float64(n) / idle.Seconds()

	var bigAll []time.Duration
	var bigRate, bigPerChange float64
	var bigUpdates sent
	if services > 0 {
		big := bigCatalog(services)
		pub := ms[1]
		// First publication puts the large catalog everywhere.
		if _, _, err := timeChange(ctx, ms, pub, big, 120*time.Second); err != nil {
			return err
		}
		time.Sleep(2 * time.Second)
		b0, bu0 := gossipBytes(ms), updatesSent(ms)
		stopProfile, err := startProfile(profile)
		if err != nil {
			return err
		}
		for c := range bigChanges {
			big[c].Endpoints[0].Ready = !big[c].Endpoints[0].Ready
			all, per, err := timeChange(ctx, ms, pub, big, 120*time.Second)
			if err != nil {
				return err
			}
			bigAll = append(bigAll, all)
			fmt.Fprintf(os.Stderr, "large catalog change %d reached all in %v (members: p50 %v, p90 %v)\n", c+1, all.Round(time.Millisecond), pct(per, 50), pct(per, 90))
			time.Sleep(time.Second)
		}
		stopProfile()
		bigPerChange = (gossipBytes(ms) - b0) / float64(n) / float64(bigChanges)
		bigUpdates = updatesSent(ms).minus(bu0)
		b1 := gossipBytes(ms)
		time.Sleep(idle)
		bigRate = (gossipBytes(ms) - b1) / float64(n) / idle.Seconds()
	}

	fmt.Printf("| measure (%d members, one process, loopback, LAN defaults, GOMAXPROCS=%d) | result |\n|---|---|\n", n, runtime.GOMAXPROCS(0))
	fmt.Printf("| small catalog change → all %d others hold it: p50 / p99 / max (%d changes) | %v / %v / %v |\n", n-1, changes, pct(allTimes, 50), pct(allTimes, 99), pct(allTimes, 100))
	fmt.Printf("| small catalog change → one member holds it: p50 / p99 (%d samples) | %v / %v |\n", len(memberTimes), pct(memberTimes, 50), pct(memberTimes, 99))
	fmt.Printf("| small catalog change: updates sent per change by the owner / by relays (%s) | %s |\n", sentKinds, smallUpdates.per(changes))
	fmt.Printf("| steady-state gossip per member, small catalogs (sent+received) | %.0f B/s |\n", idleRate)
	if services > 0 {
		fmt.Printf("| one-service change in a %d-service catalog → all %d others hold it: p50 / p99 / max (%d changes) | %v / %v / %v |\n", services, n-1, bigChanges, pct(bigAll, 50), pct(bigAll, 99), pct(bigAll, 100))
		fmt.Printf("| gossip per member per one-service change in a %d-service catalog (sent+received) | %.1f KiB |\n", services, bigPerChange/1024)
		fmt.Printf("| one-service change in a %d-service catalog: updates sent per change by the owner / by relays (%s) | %s |\n", services, sentKinds, bigUpdates.per(bigChanges))
		fmt.Printf("| steady-state gossip per member with one %d-service catalog (sent+received) | %.0f B/s |\n", services, bigRate)
	}
	return nil
}

// timeChange publishes on pub and returns how long until every member holds
// the new version, and each member's own delay.
func timeChange(ctx context.Context, ms []*member, pub *member, svcs []catalog.ExportedService, limit time.Duration) (time.Duration, []time.Duration, error) {
	name := pub.f.Members()[0].Name
	for _, m := range pub.f.Members() {
		if m.Local {
			name = m.Name
		}
	}
	start := time.Now()
	v, err := pub.f.Publish(ctx, svcs)
	if err != nil {
		return 0, nil, err
	}
	seen := make(map[*member]time.Duration)
	for time.Since(start) < limit {
		for _, m := range ms {
			if m == pub || seen[m] != 0 {
				continue
			}
			if cv, ok := m.f.Snapshot().Clusters[name]; ok && cv.Catalog != nil && cv.Catalog.Version >= v {
				seen[m] = time.Since(start)
			}
		}
		if len(seen) == len(ms)-1 {
			var per []time.Duration
			var all time.Duration
			for _, d := range seen {
				per = append(per, d)
				all = max(all, d)
			}
			return all, per, nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, nil, fmt.Errorf("catalog %s v%d reached only %d of %d members in %v", name, v, len(seen), len(ms)-1, limit)
}

// catalogsHeld is how many remote catalogs m holds.
func catalogsHeld(m *member) int {
	held := 0
	for _, cv := range m.f.Snapshot().Clusters {
		if cv.Catalog != nil {
			held++
		}
	}
	return held
}

func allSee(ms []*member, ok func(*member) bool) bool {
	for _, m := range ms {
		if !ok(m) {
			return false
		}
	}
	return true
}

func gossipBytes(ms []*member) float64 {
	var total float64
	for _, m := range ms {
		mfs, _ := m.reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "meshfed_federation_gossip_bytes_total" {
				for _, x := range mf.GetMetric() {
					total += x.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

// sent counts catalog updates sent, summed over members, by role and kind.
type sent map[[2]string]float64

// sentKinds says how sent.per reads.
const sentKinds = "delta+whole+head"

func updatesSent(ms []*member) sent {
	out := sent{}
	for _, m := range ms {
		mfs, _ := m.reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() != "meshfed_federation_catalog_updates_sent_total" {
				continue
			}
			for _, x := range mf.GetMetric() {
				var k [2]string
				for _, l := range x.GetLabel() {
					switch l.GetName() {
					case "role":
						k[0] = l.GetValue()
					case "kind":
						k[1] = l.GetValue()
					}
				}
				out[k] += x.GetCounter().GetValue()
			}
		}
	}
	return out
}

func (s sent) minus(o sent) sent {
	out := sent{}
	for k, v := range s {
		out[k] = v - o[k]
	}
	return out
}

// per renders the updates per change: owner d+w+h / relays d+w+h.
func (s sent) per(changes int) string {
	f := func(role string) string {
		c := float64(max(changes, 1))
		return fmt.Sprintf("%.1f+%.1f+%.1f", s[[2]string{role, "delta"}]/c, s[[2]string{role, "whole"}]/c, s[[2]string{role, "head"}]/c)
	}
	return f("owner") + " / " + f("relay")
}

// profile is the -cpuprofile file.
var profile string

// startProfile starts a CPU profile into path (none if path is empty) and
// returns the func that ends it.
func startProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			log.Printf("cpu profile: %v", err)
		}
	}, nil
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = min(max(i-1, 0), len(s)-1)
	return s[i].Round(time.Millisecond)
}

func bigCatalog(n int) []catalog.ExportedService {
	out := make([]catalog.ExportedService, 0, n)
	for i := range n {
		s := catalog.ExportedService{Namespace: fmt.Sprintf("team-%03d", i%300), Name: fmt.Sprintf("service-%05d", i),
			Ports: []catalog.Port{{Name: "grpc", Port: 14001, Protocol: "GRPC"}, {Name: "http", Port: 8080, Protocol: "HTTP"}}}
		for j := range 3 {
			s.Endpoints = append(s.Endpoints, catalog.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", 16+j*8+i%8, (i/250)%250, i%250),
				Ready: true, Zone: fmt.Sprintf("zone-%d", j), Identity: fmt.Sprintf("spiffe://%s/ns/team-%03d/sa/service-%05d", trustDomain, i%300, i)})
		}
		out = append(out, s)
	}
	return out
}
