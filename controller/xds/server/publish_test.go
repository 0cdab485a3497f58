package server

import (
	"context"
	"crypto/tls"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshfed/meshfed/mesh"
)

// Updates from many goroutines at once leave each proxy's cache entry at
// the last state the builder made: writes applied outside Server.mu never
// let an older snapshot replace a newer one.
func TestConcurrentUpdatesLeaveTheNewestSnapshot(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	cfg := DefaultConfig()
	cfg.Listener, cfg.Authenticator, cfg.TLS = lis, PeerCertificateAuthenticator{TrustDomain: td}, &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}
	cfg.DrainDelay = 0 // the cache holds exactly the last state's clusters
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var versions []uint64
	s.cache.SnapshotCache = slowCache{s.cache.SnapshotCache, &mu, &versions}
	key := proxyKey{id: mesh.NewIdentity(td, "ns-0", "sa-0"), kind: KindProxyless}
	if _, err := s.Update(syntheticMesh(1)); err != nil {
		t.Fatal(err)
	}
	s.acquire(key)
	s.mu.Lock()
	for _, typ := range snapshotTypes {
		s.keys[key].subscribe(typ, nil, true)
	}
	s.mu.Unlock()

	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				if _, err := s.Update(syntheticMesh(1 + (g*25+i)%40)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()

	s.mu.Lock()
	want := s.builder.ix.State.Services
	s.mu.Unlock()
	snap, err := s.cache.GetSnapshot(key.String())
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(versions); i++ {
		if versions[i] < versions[i-1] {
			t.Fatalf("snapshot with clusters version %d stored after version %d", versions[i], versions[i-1])
		}
	}
	t.Logf("%d snapshots stored in order", len(versions))
	got := len(snap.GetResources(resourcev3.ClusterType))
	if got != len(want) {
		t.Fatalf("cache holds %d clusters, the last state has %d services: an older snapshot was written last", got, len(want))
	}
}

// slowCache takes its time to store a snapshot, as a loaded machine may,
// so that writes decided one after the other could overtake each other;
// it records the cluster version of every snapshot stored.
type slowCache struct {
	cachev3.SnapshotCache
	mu       *sync.Mutex
	versions *[]uint64
}

func (c slowCache) SetSnapshot(ctx context.Context, node string, snap cachev3.ResourceSnapshot) error {
	time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
	v, _ := strconv.ParseUint(snap.GetVersion(resourcev3.ClusterType), 10, 64)
	c.mu.Lock()
	*c.versions = append(*c.versions, v)
	c.mu.Unlock()
	return c.SnapshotCache.SetSnapshot(ctx, node, snap)
}
