package federate_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/kube"
	"github.com/meshfed/meshfed/controller/xds/server"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
)

// judged records what the xDS server was given and the problems it found.
type judged struct {
	mu   sync.Mutex
	last mesh.State
	prob []mesh.Problem
}

func (j *judged) record(s mesh.State, p []mesh.Problem) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.last, j.prob = s, p
}

// served reports whether split ns/name was in the last State and the xDS
// server found no problem with it.
func (j *judged) served(ns, name string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	found := false
	for _, ts := range j.last.TrafficSplits {
		found = found || ts.Namespace == ns && ts.Name == name
	}
	for _, p := range j.prob {
		if p.Kind == mesh.ObjectTrafficSplit && p.Namespace == ns && p.Name == name {
			return false
		}
	}
	return found
}

// Two real clusters federated over memberlist. East runs meshfed's
// Kubernetes watcher, the junction and a real xDS server; its TrafficSplits
// name backends that west exports, or that exist nowhere until west
// exports them. Problems are judged on the merged state.
func TestJunctionJudgesProblemsOnMergedState(t *testing.T) {
	sb := sandboxtest.Start(t, "east", "west")
	root, gossipKey := newFederationKeys(t)
	east := startMember(t, sb.Cluster("east"), root, gossipKey)
	west := startMember(t, sb.Cluster("west"), root, gossipKey, east.fed.Addr())
	eventually(t, time.Minute, func() (bool, string) {
		return len(east.fed.Members()) == 2 && len(west.fed.Members()) == 2, "east and west do not see each other"
	})
	ctx := testContext(t)
	if _, err := east.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: "bookstore", Labels: map[string]string{kube.LabelMonitoredBy: deploy.DefaultMeshName}}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	deployService(t, east, "bookstore", "bookstore", 14001)

	const grace = 3 * time.Second
	rec := &judged{}
	junction := startEastControlPlane(t, east, rec, grace)
	junction.SetRemote(east.bridge)

	t.Run("backend supplied by another cluster: no Warning", func(t *testing.T) {
		deployService(t, west, "bookstore", "bookstore-v2", 14001)
		export(t, west, "bookstore", "bookstore-v2")
		eventually(t, time.Minute, func() (bool, string) {
			_, ok := findService(east.bridge.Remote().Remote["west"], "bookstore", "bookstore-v2")
			return ok, "east does not see west's bookstore-v2"
		})
		createSplit(t, east, "bookstore-split", "bookstore", "bookstore-v2")
		eventually(t, time.Minute, func() (bool, string) {
			return rec.served("bookstore", "bookstore-split"), "the split is not served"
		})
		servedAt := time.Now()
		// A Warning could only come grace after the problem was first
		// seen, which was before the split was served.
		time.Sleep(time.Until(servedAt.Add(grace + 2*time.Second)))
		for _, ev := range splitEvents(t, east, "bookstore-split") {
			if ev.Type == corev1.EventTypeWarning {
				t.Errorf("Warning on a split served with west's backend: %s", ev.Message)
			}
		}
	})

	t.Run("backend missing everywhere: Warning", func(t *testing.T) {
		createSplit(t, east, "bookstore-canary", "bookstore", "bookstore-v9")
		waitSplitEvent(t, east, "bookstore-canary", corev1.EventTypeWarning, kube.ReasonRejected, "backend bookstore-v9: no such service")
	})

	t.Run("backend appears in another cluster later: Warning withdrawn", func(t *testing.T) {
		// Nothing changes in east: only west's catalog does.
		deployService(t, west, "bookstore", "bookstore-v9", 14001)
		export(t, west, "bookstore", "bookstore-v9")
		waitSplitEvent(t, east, "bookstore-canary", corev1.EventTypeNormal, kube.ReasonAccepted, "in force again")
		if !rec.served("bookstore", "bookstore-canary") {
			t.Error("the split was declared in force but is not served")
		}
	})

	t.Run("backend withdrawn everywhere: Warning again", func(t *testing.T) {
		// Again only west changes; the same Warning is recorded a second
		// time (Events aggregate: its count goes up).
		unexport(t, west, "bookstore", "bookstore-v9")
		eventually(t, 90*time.Second, func() (bool, string) {
			for _, ev := range splitEvents(t, east, "bookstore-canary") {
				if ev.Type == corev1.EventTypeWarning && ev.Reason == kube.ReasonRejected && ev.Count >= 2 {
					return true, ""
				}
			}
			return false, "no second Warning after west withdrew bookstore-v9"
		})
		if rec.served("bookstore", "bookstore-canary") {
			t.Error("the split is still served without its backend")
		}
	})
}

// startEastControlPlane runs east's watcher → junction → xDS server until
// the test ends.
func startEastControlPlane(t *testing.T, m *member, rec *judged, grace time.Duration) *federate.Junction {
	t.Helper()
	xcfg := server.DefaultConfig()
	xcfg.Address = "127.0.0.1:0" // Update only; never served
	xcfg.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}
	xcfg.Authenticator = server.PeerCertificateAuthenticator{TrustDomain: trustDomain}
	xds, err := server.New(xcfg)
	if err != nil {
		t.Fatal(err)
	}
	junction := federate.NewJunction(kube.SinkFunc(func(s mesh.State) ([]mesh.Problem, error) {
		p, err := xds.Update(s)
		rec.record(s, p)
		return p, err
	}), nil)
	kcfg := kube.DefaultConfig()
	kcfg.Client, kcfg.Dynamic, kcfg.Sink = m.kube, m.dyn, junction
	kcfg.ClusterName, kcfg.TrustDomain = m.name, trustDomain
	kcfg.MissingReferenceGrace = grace
	w, err := kube.New(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{junction.Run, w.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return junction
}

func createSplit(t *testing.T, m *member, name string, backends ...string) {
	t.Helper()
	var bs []any
	for _, b := range backends {
		bs = append(bs, map[string]any{"service": b, "weight": int64(50)})
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
		"metadata": map[string]any{"name": name, "namespace": "bookstore"},
		"spec":     map[string]any{"service": "bookstore", "backends": bs},
	}}
	if _, err := m.dyn.Resource(kube.TrafficSplitGVR).Namespace("bookstore").Create(testContext(t), u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func splitEvents(t *testing.T, m *member, name string) []corev1.Event {
	t.Helper()
	evs, err := m.kube.CoreV1().Events("bookstore").List(testContext(t), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=TrafficSplit,involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	return evs.Items
}

func waitSplitEvent(t *testing.T, m *member, name, typ, reason, text string) {
	t.Helper()
	eventually(t, 90*time.Second, func() (bool, string) {
		evs := splitEvents(t, m, name)
		for _, ev := range evs {
			if ev.Type == typ && ev.Reason == reason && strings.Contains(ev.Message, text) {
				return true, ""
			}
		}
		return false, "no " + typ + " " + reason + " event mentioning " + text
	})
}

// A watcher whose junction has stopped gets an error, not a hang.
func TestJunctionUpdateAfterRunReturnsAnError(t *testing.T) {
	j := federate.NewJunction(kube.SinkFunc(func(mesh.State) ([]mesh.Problem, error) { return nil, nil }), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	if _, err := j.Update(mesh.State{}); err != nil {
		t.Fatalf("Update while running: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := j.Update(mesh.State{}); !errors.Is(err, federate.ErrJunctionStopped) {
		t.Fatalf("Update after Run returned: err = %v, want ErrJunctionStopped", err)
	}
	j.SetRemote(nil) // returns at once
}
