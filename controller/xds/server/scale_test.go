package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshfed/meshfed/mesh"
)

const edsType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

// TestScaleEndpointChangeReachesAllClients is the scale harness (skipped
// unless MESHFED_SCALE_SERVICES is set). This process runs the xDS server
// (and one grpc-go backend); the 100 grpc-go clients run in child processes
// (this test binary re-executed as TestScaleClientProcess), so that this
// process's resident memory is the server's. It measures, with N services:
//
//	(a) 20 times, one endpoint of svc-0 moves: Update → the last of 100
//	    clients (distinct identities, all watching svc-0) ACKs the EDS version;
//	(b) a new Service backed by a real grpc-go xDS server: Update → a new
//	    client's first successful RPC to it;
//	(c) 100 more clients (new identities, another process) connecting at
//	    once to that service: their start → the last first successful RPC;
//	(d) this process's VmRSS/VmHWM with the 100 clients connected.
//
//	MESHFED_SCALE_SERVICES=10000 go test ./controller/xds/server -run TestScale -v -timeout 20m
func TestScaleEndpointChangeReachesAllClients(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MESHFED_SCALE_SERVICES"))
	if n == 0 {
		t.Skip("scale harness (a benchmark, not run by default): set MESHFED_SCALE_SERVICES=1000 or 10000 to run it; see docs/benchmarks.md")
	}
	const clients, rounds = 100, 20
	var mu sync.Mutex
	acked := map[string]map[string]time.Time{} // version → proxy → time
	m := startMeshWithAck(t, func(proxy, typeURL, version string) {
		if typeURL != edsType {
			return
		}
		version, _, _ = strings.Cut(version, "~")
		mu.Lock()
		if acked[version] == nil {
			acked[version] = map[string]time.Time{}
		}
		acked[version][proxy] = time.Now()
		mu.Unlock()
	})
	state := scaleState(n, 0)
	start := time.Now()
	m.update(t, state)
	t.Logf("first Update of %d services: %v", n, time.Since(start))
	rss0, _ := procStatus(t)

	connectStart := time.Now()
	watchers := startClientProcess(t, m, "watch", "watcher", clients, "svc-0.ns-0.svc.cluster.local:8080")
	waitAcks := func(version string) time.Time {
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			got := acked[version]
			if len(got) >= clients {
				var last time.Time
				for _, at := range got {
					if at.After(last) {
						last = at
					}
				}
				mu.Unlock()
				return last
			}
			mu.Unlock()
			time.Sleep(time.Millisecond)
		}
		t.Fatalf("version %s: only %d of %d clients ACKed", version, len(acked[version]), clients)
		return time.Time{}
	}
	waitAcks(m.srv.EndpointsVersion())
	t.Logf("%d clients (child process) connected and ACKed EDS in %v (includes process start)", clients, time.Since(connectStart))

	// (a) endpoint changes.
	bytesBefore := m.metric(t, "meshfed_xds_pushed_bytes_total")
	var lat, gen []time.Duration
	for r := 1; r <= rounds; r++ {
		next := scaleState(n, r)
		t0 := time.Now()
		m.update(t, next)
		gen = append(gen, time.Since(t0))
		last := waitAcks(m.srv.EndpointsVersion())
		lat = append(lat, last.Sub(t0))
		state = next
	}
	bytesPerChange := (m.metric(t, "meshfed_xds_pushed_bytes_total") - bytesBefore) / rounds

	// (d) memory with the clients connected.
	runtime.GC()
	rss, hwm := procStatus(t)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)

	// (b) a new Service → a new client's first successful RPC. The
	// Service selects workloads that already run and serve (they back
	// "fresh-pods"), as when a Service is created for running pods: a
	// workload that no Service selects has no server listener, and a
	// client that dials it before it serves waits out grpc-go's 1 s
	// reconnect backoff (measured separately below).
	newID := mesh.NewIdentity(trustDomain, "ns-0", "fresh")
	be, serving := startBackend(t, m, newID, "fresh")
	freshSvc := func(name string) mesh.Service {
		return mesh.Service{Namespace: "ns-0", Name: name, Cluster: "east", Ports: []mesh.Port{{Name: "grpc", Port: 8080, Protocol: mesh.ProtocolGRPC}},
			Endpoints: []mesh.Endpoint{{Address: "127.0.0.1", TargetPorts: map[string]uint32{"grpc": be.port}, Cluster: "east", Ready: true, Identity: newID}}}
	}
	withPods := state
	withPods.Services = append(append([]mesh.Service(nil), state.Services...), freshSvc("fresh-pods"))
	m.update(t, withPods)
	select {
	case <-serving:
	case <-time.After(30 * time.Second):
		t.Fatal("backend never served")
	}
	withFresh := withPods
	withFresh.Services = append(append([]mesh.Service(nil), withPods.Services...), freshSvc("fresh"))
	freshTarget := "fresh.ns-0.svc.cluster.local:8080"
	t0 := time.Now()
	m.update(t, withFresh)
	freshUpdate := time.Since(t0)
	hc := dialHealth(t, m.ca.workloadBootstrap(t, mesh.NewIdentity(trustDomain, "clients", "newcomer"), m.addr), freshTarget)
	if err := firstRPC(hc, 30*time.Second); err != nil {
		t.Fatalf("new service: first RPC: %v", err)
	}
	freshRPC := time.Since(t0)

	// (c) 100 clients connecting at once.
	burst := startClientProcess(t, m, "burst", "burst", clients, freshTarget)
	burstResult := burst.result(t)
	watchers.stop()

	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	sort.Slice(gen, func(i, j int) bool { return gen[i] < gen[j] })
	pct := func(d []time.Duration, p float64) time.Duration { return d[int(p*float64(len(d)-1))] }
	ms2 := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	fmt.Printf("(a) | %d | %d | %s / %s | %s / %s | %.0f |\n", n, clients,
		ms2(pct(gen, .5)), ms2(pct(gen, .99)), ms2(pct(lat, .5)), ms2(pct(lat, .99)), bytesPerChange)
	fmt.Printf("(b) new service: Update %s, new client's first RPC at %s\n", ms2(freshUpdate), ms2(freshRPC))
	fmt.Printf("(c) %s\n", burstResult)
	fmt.Printf("(d) server process: VmRSS %d MiB before clients, %d MiB with %d clients (VmHWM %d MiB); Go heap in use %d MiB, sys %d MiB\n",
		rss0>>10, rss>>10, clients, hwm>>10, ms.HeapInuse>>20, ms.Sys>>20)
}

// scaleState is n services with one endpoint each, permissive (so that any
// client may call any service); round moves svc-0's port.
func scaleState(n, round int) mesh.State {
	s := mesh.State{Settings: mesh.Settings{ClusterName: "east", TrustDomain: trustDomain, PermissiveTrafficPolicy: true}}
	port := []mesh.Port{{Name: "grpc", Port: 8080, Protocol: mesh.ProtocolGRPC}}
	for i := 0; i < n; i++ {
		p := uint32(9000)
		if i == 0 {
			p = uint32(20000 + round)
		}
		s.Services = append(s.Services, mesh.Service{
			Namespace: fmt.Sprintf("ns-%d", i%10), Name: fmt.Sprintf("svc-%d", i), Cluster: "east", Ports: port,
			Endpoints: []mesh.Endpoint{{Address: "127.0.0.1", TargetPorts: map[string]uint32{"grpc": p}, Cluster: "east", Ready: true,
				Identity: mesh.NewIdentity(trustDomain, fmt.Sprintf("ns-%d", i%10), "sa")}},
		})
	}
	return s
}

// procStatus returns this process's VmRSS and VmHWM in KiB.
func procStatus(t *testing.T) (rss, hwm int) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm
}

func dialHealth(t *testing.T, bootstrap []byte, target string) healthpb.HealthClient {
	t.Helper()
	cc := dialXDS(t, bootstrap, target)
	cc.Connect()
	return healthpb.NewHealthClient(cc)
}

// firstRPC waits (WaitForReady) for the first successful Check.
func firstRPC(hc healthpb.HealthClient, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		if _, err = hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err == nil {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return err
}

// clientProcess is a child process running grpc-go clients.
type clientProcess struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// startClientProcess writes bootstraps for count identities
// clients/<prefix>-i and starts this test binary as TestScaleClientProcess
// in mode "watch" (connect and stay until stdin closes) or "burst" (connect
// all at once, one RPC each, print the result, exit).
func startClientProcess(t *testing.T, m *testMesh, mode, prefix string, count int, target string) *clientProcess {
	t.Helper()
	dir := t.TempDir()
	for i := 0; i < count; i++ {
		b := m.ca.workloadBootstrap(t, mesh.NewIdentity(trustDomain, "clients", fmt.Sprintf("%s-%d", prefix, i)), m.addr)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.json", i)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleClientProcess$", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), "MESHFED_SCALE_CHILD="+mode, "MESHFED_SCALE_CHILD_DIR="+dir,
		"MESHFED_SCALE_CHILD_COUNT="+strconv.Itoa(count), "MESHFED_SCALE_CHILD_TARGET="+target)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &clientProcess{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	t.Cleanup(p.stop)
	return p
}

// result returns the child's RESULT line.
func (p *clientProcess) result(t *testing.T) string {
	t.Helper()
	for p.out.Scan() {
		if line, ok := strings.CutPrefix(p.out.Text(), "RESULT "); ok {
			return line
		}
	}
	t.Fatalf("client process ended without a result: %v", p.out.Err())
	return ""
}

func (p *clientProcess) stop() {
	if p.stdin != nil {
		p.stdin.Close()
		p.stdin = nil
		_ = p.cmd.Wait()
	}
}

// TestScaleClientProcess is the client side of the scale harness, run only
// as its child process.
func TestScaleClientProcess(t *testing.T) {
	mode := os.Getenv("MESHFED_SCALE_CHILD")
	if mode == "" {
		t.Skip("run by TestScaleEndpointChangeReachesAllClients")
	}
	dir, target := os.Getenv("MESHFED_SCALE_CHILD_DIR"), os.Getenv("MESHFED_SCALE_CHILD_TARGET")
	count, _ := strconv.Atoi(os.Getenv("MESHFED_SCALE_CHILD_COUNT"))
	boots := make([][]byte, count)
	for i := range boots {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%d.json", i)))
		if err != nil {
			t.Fatal(err)
		}
		boots[i] = b
	}
	start := time.Now()
	hcs := make([]healthpb.HealthClient, count)
	for i, b := range boots {
		hcs[i] = dialHealth(t, b, target)
	}
	if mode == "watch" {
		_, _ = io.Copy(io.Discard, os.Stdin)
		return
	}
	done := make([]time.Duration, count)
	var wg sync.WaitGroup
	errs := make(chan error, count)
	for i, hc := range hcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := firstRPC(hc, 60*time.Second); err != nil {
				errs <- err
			}
			done[i] = time.Since(start)
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		failed++
		t.Log(err)
	}
	sort.Slice(done, func(i, j int) bool { return done[i] < done[j] })
	fmt.Printf("RESULT %d clients connecting at once: first RPC p50 %s, p99 %s, last %s; %d failed\n",
		count, done[count/2].Round(time.Millisecond), done[count*99/100].Round(time.Millisecond), done[count-1].Round(time.Millisecond), failed)
}
