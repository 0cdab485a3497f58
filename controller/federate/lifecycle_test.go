package federate_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/kube"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
)

// remoteLog records the remote clusters of every State the junction
// passes on.
type remoteLog struct {
	mu     sync.Mutex
	states [][]string
}

func (r *remoteLog) record(s mesh.State) {
	var clusters []string
	for c := range s.Remote {
		clusters = append(clusters, c)
	}
	r.mu.Lock()
	r.states = append(r.states, clusters)
	r.mu.Unlock()
}

// mark returns how many States were passed on so far.
func (r *remoteLog) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.states)
}

// last returns the remote clusters of the last State passed on.
func (r *remoteLog) last() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) == 0 {
		return nil
	}
	return r.states[len(r.states)-1]
}

// without returns how many States since mark lacked cluster.
func (r *remoteLog) without(mark int, cluster string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, cs := range r.states[mark:] {
		found := false
		for _, c := range cs {
			found = found || c == cluster
		}
		if !found {
			n++
		}
	}
	return n
}

func patchFederation(t *testing.T, dyn dynamic.Interface, fields map[string]any) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"federation": fields}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(deploy.MeshConfigGVR).Namespace(deploy.DefaultNamespace).Patch(testContext(t), deploy.MeshConfigName,
		types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// The Lifecycle follows MeshConfig spec.federation on a real API server:
// off, it does not join; `enabled` joins the peers and west's services
// reach the junction; a changed setting restarts the member without the
// junction ever passing on a State without west, and with its metrics
// registered again; a key added to the keyring Secret is applied without a
// restart; disabling leaves and clears the remote view.
func TestLifecycleFollowsMeshConfig(t *testing.T) {
	sb := sandboxtest.Start(t, "east", "west")
	root, gossipKey := newFederationKeys(t)
	west := startMember(t, sb.Cluster("west"), root, gossipKey)
	deployService(t, west, "bookstore", "bookstore-v2", 14001)
	export(t, west, "bookstore", "bookstore-v2")

	ctx := testContext(t)
	east := sb.Cluster("east")
	inst, err := installer.New(east.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	o := deploy.DefaultOptions()
	o.ClusterName = "east"
	if _, err := inst.Install(ctx, o); err != nil {
		t.Fatal(err)
	}
	eastDyn := dynamic.NewForConfigOrDie(east.RESTConfig())
	if err := federate.SaveGossipKeys(ctx, east.Client(), o.Namespace, federate.DefaultGossipKeySecret, [][]byte{gossipKey}, true); err != nil {
		t.Fatal(err)
	}

	rec := &remoteLog{}
	junction := federate.NewJunction(kube.SinkFunc(func(s mesh.State) ([]mesh.Problem, error) {
		rec.record(s)
		return nil, nil
	}), nil)
	// The informers are shared and outlive each bridge, as in the
	// controller: a restarted bridge only adds its handlers again.
	shared, err := kube.NewInformers(east.Client(), eastDyn, o.Namespace, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	member := fedConfig(t, "east", root, gossipKey)
	logs := &logRecorder{}
	lcfg := federate.LifecycleConfig{Client: east.Client(), Dynamic: eastDyn, Namespace: o.Namespace, MeshConfigName: deploy.MeshConfigName,
		ClusterName: "east", TrustDomain: trustDomain, Signer: member.Signer, Bundle: member.Bundle,
		Registerer: prometheus.NewRegistry(), Logger: slog.New(logs), Retry: time.Second, Informers: shared,
		Member: func(c *federation.Config) {
			c.BindAddr, c.BindPort, c.AdvertiseAddr = "127.0.0.1", 0, "127.0.0.1"
			c.Tune, c.JoinRetryInterval, c.FetchTimeout, c.StaleAfter = member.Tune, member.JoinRetryInterval, member.FetchTimeout, member.StaleAfter
		},
		Bridge: func(c *federate.Config) { c.StatusInterval, c.Debounce = time.Second, 20*time.Millisecond },
	}
	lifecycle, err := federate.NewLifecycle(lcfg, junction)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	shared.Start(runCtx)
	t.Cleanup(shared.Shutdown)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{junction.Run, lifecycle.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(runCtx); err != nil {
				t.Error(err)
			}
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	if _, err := junction.Update(mesh.State{Settings: mesh.Settings{ClusterName: "east", TrustDomain: trustDomain}}); err != nil {
		t.Fatal(err)
	}
	count := func(msg string) int {
		n := 0
		for _, r := range logs.find(nil) {
			if r.Msg == msg {
				n++
			}
		}
		return n
	}

	t.Run("disabled: no member", func(t *testing.T) {
		time.Sleep(2 * time.Second)
		if n := count("federation started"); n != 0 {
			t.Fatalf("federation started %d times while disabled", n)
		}
		if got := len(west.fed.Members()); got != 1 {
			t.Fatalf("west sees %d members while east's federation is disabled", got)
		}
	})

	t.Run("enabled: joins and passes on west's services", func(t *testing.T) {
		patchFederation(t, eastDyn, map[string]any{"enabled": true, "peers": []string{west.fed.Addr()}, "withdrawAfter": "20s"})
		eventually(t, time.Minute, func() (bool, string) {
			return len(rec.last()) == 1 && rec.last()[0] == "west", "east's junction does not pass on west's catalog"
		})
	})

	t.Run("a changed setting restarts the member; west stays in every State", func(t *testing.T) {
		mark := rec.mark()
		patchFederation(t, eastDyn, map[string]any{"withdrawAfter": "25s"})
		eventually(t, time.Minute, func() (bool, string) {
			return count("federation started") == 2, "the member was not restarted"
		})
		eventually(t, time.Minute, func() (bool, string) {
			return len(west.fed.Members()) == 2 && len(rec.last()) == 1, "the restarted member has not rejoined"
		})
		if n := rec.without(mark, "west"); n != 0 {
			t.Fatalf("%d States passed on without west during the restart", n)
		}
	})

	t.Run("a key added to the keyring: applied without a restart", func(t *testing.T) {
		extra := make([]byte, 32)
		if _, err := rand.Read(extra); err != nil {
			t.Fatal(err)
		}
		if err := federate.SaveGossipKeys(ctx, east.Client(), o.Namespace, federate.DefaultGossipKeySecret, [][]byte{gossipKey, extra}, true); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, func() (bool, string) {
			return count("gossip keyring updated") == 1, "the new keyring was not applied"
		})
		if n := count("federation started"); n != 2 {
			t.Fatalf("federation started %d times; a keyring change must not restart it", n)
		}
	})

	t.Run("disabled again: leaves and clears the remote view", func(t *testing.T) {
		patchFederation(t, eastDyn, map[string]any{"enabled": false})
		eventually(t, time.Minute, func() (bool, string) {
			return len(rec.last()) == 0, "the junction still passes on remote clusters"
		})
		eventually(t, time.Minute, func() (bool, string) {
			for _, m := range west.fed.Members() {
				if m.Name == "east" && m.State == federation.StateAlive {
					return false, "west still sees east alive"
				}
			}
			return true, ""
		})
	})
}
