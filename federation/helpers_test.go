package federation

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/federation/internal/testpki"
)

const testTD = "meshfed.test"

// testFederation is the shared parts of a test federation: one root, one
// gossip key.
type testFederation struct {
	t    *testing.T
	root *testpki.Root
	key  []byte
	// epochs is each cluster's epoch store, kept across restarts of its
	// member as the controller's ConfigMap is.
	epochs map[string]*MemoryEpochStore
}

func newTestFederation(t *testing.T) *testFederation {
	t.Helper()
	root, err := testpki.NewRoot("test root")
	if err != nil {
		t.Fatal(err)
	}
	return &testFederation{t: t, root: root, key: newKey(t), epochs: map[string]*MemoryEpochStore{}}
}

func newKey(t *testing.T) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// fastGossip makes memberlist quick enough for tests on loopback.
func fastGossip(c *memberlist.Config) {
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 50 * time.Millisecond
	c.PushPullInterval = 2 * time.Second
	c.SuspicionMult = 2
	c.TCPTimeout = 2 * time.Second
}

// config returns a test config for cluster name, signed by tf's root.
func (tf *testFederation) config(name string, seeds ...*node) Config {
	tf.t.Helper()
	key, chain, err := tf.root.Signer(catalog.ClusterID(testTD, name))
	if err != nil {
		tf.t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ClusterName = name
	cfg.Network = "net-" + name
	cfg.TrustDomain = testTD
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.AdvertiseAddr = "127.0.0.1"
	cfg.GossipKeys = [][]byte{tf.key}
	cfg.Signer = StaticSigner{Key: key, Chain: chain}
	cfg.Bundle = StaticBundle{Roots: tf.root.Pool, Fingerprint: "test-root"}
	cfg.Tune = fastGossip
	cfg.JoinRetryInterval = time.Second
	cfg.FetchTimeout = 2 * time.Second
	cfg.Registerer = prometheus.NewRegistry()
	if tf.epochs[name] == nil {
		tf.epochs[name] = &MemoryEpochStore{}
	}
	cfg.EpochStore = tf.epochs[name]
	if os.Getenv("FEDERATION_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, s := range seeds {
		cfg.Seeds = append(cfg.Seeds, s.f.Addr())
	}
	return cfg
}

type node struct {
	f      *Federation
	cancel context.CancelFunc
	done   chan error
}

// start runs a member until the test ends (or stop/kill).
func start(t *testing.T, cfg Config) *node {
	t.Helper()
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{f: f, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- f.Run(ctx) }()
	eventually(t, 10*time.Second, func() (bool, string) { return f.Addr() != "", "listening" })
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop leaves gracefully and waits for Run to return.
func (n *node) stop(t *testing.T) error {
	n.cancel()
	select {
	case err, ok := <-n.done:
		if ok {
			close(n.done)
		}
		return err
	case <-time.After(30 * time.Second):
		t.Errorf("Run of %s did not return", n.f.cfg.ClusterName)
		return errors.New("timeout")
	}
}

// kill shuts memberlist down without a leave, as a crash would, and waits
// for Run to return.
func (n *node) kill(t *testing.T) {
	t.Helper()
	n.f.abrupt.Store(true)
	ml := n.f.ml.Load()
	if err := ml.Shutdown(); err != nil {
		t.Fatal(err)
	}
	n.stop(t)
}

func eventually(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("condition not met within %v: %s", timeout, last)
}

func publish(t *testing.T, n *node, services ...catalog.ExportedService) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, err := n.f.Publish(ctx, services)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func svc(ns, name string, addrs ...string) catalog.ExportedService {
	s := catalog.ExportedService{Namespace: ns, Name: name, Ports: []catalog.Port{{Name: "grpc", Port: 14001, Protocol: "GRPC"}}}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, catalog.Endpoint{Address: a, Ready: true, Zone: "z1", Identity: "spiffe://" + testTD + "/ns/" + ns + "/sa/" + name})
	}
	return s
}

// sees reports whether n's view holds cluster's catalog at >= version.
func sees(n *node, cluster string, version uint64) (bool, string) {
	cv, ok := n.f.Snapshot().Clusters[cluster]
	if !ok || cv.Catalog == nil {
		return false, fmt.Sprintf("%s has no catalog of %s", n.f.cfg.ClusterName, cluster)
	}
	return cv.Catalog.Version >= version, fmt.Sprintf("%s holds %s v%d, want v%d (%s)", n.f.cfg.ClusterName, cluster, cv.Catalog.Version, version, cv.Reason)
}

func memberState(n *node, name string) MemberState {
	for _, m := range n.f.Members() {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}

func hasService(n *node, cluster, key string) bool {
	for _, s := range n.f.Snapshot().Clusters[cluster].Services {
		if s.Key() == key {
			return true
		}
	}
	return false
}
