package federate_test

import (
	"context"
	"crypto/rand"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
	"github.com/meshfed/meshfed/trust/ca"
)

// The catalog epoch lives in a ConfigMap of the controller's namespace: it
// advances at every start (also from a new store object, as after a
// controller restart), never repeats under concurrent writers, and a lost
// or garbled ConfigMap starts over (the member then recovers from peers).
func TestEpochStoreKeepsTheCatalogEpochInAConfigMap(t *testing.T) {
	sb := sandboxtest.Start(t, "east")
	kube := sb.Cluster("east").Client()
	ctx := testContext(t)
	const ns = "meshfed-system"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stored := func() string {
		cm, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, federate.EpochConfigMap, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return cm.Data["epoch"]
	}
	advance := func(s *federate.EpochStore, atLeast uint32) uint32 {
		t.Helper()
		e, err := s.Advance(ctx, atLeast)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}

	s := federate.NewEpochStore(kube, ns, testLogger("east"))
	if e := advance(s, 1); e != 1 || stored() != "1" {
		t.Fatalf("first epoch %d, stored %q; want 1", e, stored())
	}
	if e := advance(s, 1); e != 2 {
		t.Errorf("second epoch %d, want 2", e)
	}
	if e := advance(s, 40); e != 40 || stored() != "40" {
		t.Errorf("epoch after recovering past 39 is %d, stored %q; want 40", e, stored())
	}
	restarted := federate.NewEpochStore(kube, ns, testLogger("east"))
	if e := advance(restarted, 1); e != 41 {
		t.Errorf("epoch after a controller restart %d, want 41", e)
	}

	t.Run("ConcurrentWritersNeverShareAnEpoch", func(t *testing.T) {
		var mu sync.Mutex
		var got []uint32
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				e, err := federate.NewEpochStore(kube, ns, nil).Advance(ctx, 1)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got = append(got, e)
				mu.Unlock()
			})
		}
		wg.Wait()
		slices.Sort(got)
		if !slices.Equal(got, []uint32{42, 43, 44, 45}) {
			t.Errorf("concurrent epochs %v, want 42..45 once each", got)
		}
	})

	t.Run("GarbledValueStartsOver", func(t *testing.T) {
		cm, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, federate.EpochConfigMap, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data["epoch"] = "not a number"
		if _, err := kube.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if e := advance(s, 1); e != 1 || stored() != "1" {
			t.Errorf("epoch after a garbled value %d, stored %q; want 1", e, stored())
		}
	})

	t.Run("DeletedConfigMapStartsOver", func(t *testing.T) {
		if err := kube.CoreV1().ConfigMaps(ns).Delete(ctx, federate.EpochConfigMap, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if e := advance(s, 1); e != 1 || stored() != "1" {
			t.Errorf("epoch after deletion %d, stored %q; want 1", e, stored())
		}
	})

	t.Run("MemberVersionsCarryTheStoredEpoch", func(t *testing.T) {
		root, err := ca.GenerateRoot(td, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			t.Fatal(err)
		}
		for run := range 2 {
			cfg := fedConfig(t, "east", root, key)
			cfg.EpochStore = federate.NewEpochStore(kube, ns, nil)
			fed, err := federation.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- fed.Run(rctx) }()
			pctx, pcancel := context.WithTimeout(ctx, time.Minute)
			v, err := fed.Publish(pctx, nil)
			pcancel()
			cancel()
			if rerr := <-done; rerr != nil {
				t.Fatal(rerr)
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := uint32(2 + run); v>>32 != uint64(want) || stored() != strconv.Itoa(int(want)) {
				t.Errorf("run %d published %s, ConfigMap holds %q; want epoch %d", run, federation.FormatVersion(v), stored(), want)
			}
		}
	})
}
