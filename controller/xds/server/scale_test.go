package server_test

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/xds"

	"github.com/meshfed/meshfed/mesh"
)

// TestScaleEndpointChangeReachesAllClients is the scale harness (skipped
// unless MESHFED_SCALE_SERVICES is set): N services, 100 real grpc-go xDS
// clients (distinct identities) all watching svc-0; 20 times, one endpoint of
// svc-0 moves and we time Update → the last client's EDS ACK.
//
//	MESHFED_SCALE_SERVICES=10000 go test ./controller/xds/server -run TestScale -v -timeout 20m
func TestScaleEndpointChangeReachesAllClients(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MESHFED_SCALE_SERVICES"))
	if n == 0 {
		t.Skip("set MESHFED_SCALE_SERVICES to run the scale harness")
	}
	const clients, rounds = 100, 20
	var mu sync.Mutex
	acked := map[string]map[string]time.Time{} // version → proxy → time
	m := startMeshWithAck(t, func(proxy, typeURL, version string) {
		if typeURL != "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment" {
			return
		}
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

	connectStart := time.Now()
	for i := 0; i < clients; i++ {
		id := mesh.NewIdentity(trustDomain, "clients", fmt.Sprintf("client-%d", i))
		rb, err := xds.NewXDSResolverWithConfigForTesting(m.ca.workloadBootstrap(t, id, m.addr))
		if err != nil {
			t.Fatal(err)
		}
		creds, _ := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
		cc, err := grpc.NewClient("xds:///svc-0.ns-0.svc.cluster.local:8080", grpc.WithResolvers(rb), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		cc.Connect()
		t.Cleanup(func() { cc.Close() })
	}
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
	t.Logf("%d clients connected and ACKed EDS in %v", clients, time.Since(connectStart))

	bytesBefore := m.metric(t, "meshfed_xds_pushed_bytes_total")
	var lat []time.Duration
	var gen []time.Duration
	for r := 1; r <= rounds; r++ {
		next := scaleState(n, r)
		t0 := time.Now()
		m.update(t, next)
		gen = append(gen, time.Since(t0))
		last := waitAcks(m.srv.EndpointsVersion())
		lat = append(lat, last.Sub(t0))
	}
	bytesPerChange := (m.metric(t, "meshfed_xds_pushed_bytes_total") - bytesBefore) / rounds
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	sort.Slice(gen, func(i, j int) bool { return gen[i] < gen[j] })
	pct := func(d []time.Duration, p float64) time.Duration { return d[int(p*float64(len(d)-1))] }
	fmt.Printf("| services | clients | update (generation) p50 / p99 | change → last client ACK p50 / p99 | bytes pushed per endpoint change (all clients) |\n")
	fmt.Printf("| %d | %d | %v / %v | %v / %v | %.0f |\n", n, clients,
		pct(gen, .5).Round(time.Millisecond), pct(gen, .99).Round(time.Millisecond),
		pct(lat, .5).Round(time.Millisecond), pct(lat, .99).Round(time.Millisecond), bytesPerChange)
}

// scaleState is n services with one endpoint each; round moves svc-0's port.
func scaleState(n, round int) mesh.State {
	s := mesh.State{Settings: mesh.Settings{ClusterName: "east", TrustDomain: trustDomain}}
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
