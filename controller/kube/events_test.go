package kube

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshfed/meshfed/mesh"
)

// judging is a Sink that judges each State as the xDS server does
// (mesh.Sanitize) and records whether each split was served.
type judging struct{ states }

func (j *judging) Update(s mesh.State) ([]mesh.Problem, error) {
	clean, problems := mesh.Sanitize(s)
	_, _ = j.states.Update(clean)
	return problems, nil
}

func (m *meshedCluster) applySplit(t *testing.T, ctx context.Context, ns, name, root string, backends ...string) *unstructured.Unstructured {
	t.Helper()
	var bs []any
	for _, b := range backends {
		bs = append(bs, map[string]any{"service": b, "weight": int64(50)})
	}
	u, err := m.dyn.Resource(TrafficSplitGVR).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     map[string]any{"service": root, "backends": bs},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// events returns the Events meshfed put on TrafficSplit ns/name.
func (m *meshedCluster) events(t *testing.T, ctx context.Context, ns, name string) []corev1.Event {
	t.Helper()
	evs, err := m.kc.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=TrafficSplit,involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	return evs.Items
}

func waitEvent(t *testing.T, what string, list func() []corev1.Event, match func(corev1.Event) bool) corev1.Event {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second) // a bound against hanging, not a latency assertion
	for {
		evs := list()
		for _, ev := range evs {
			if match(ev) {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s among %d events: %v", what, len(evs), evs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A split naming a backend that exists nowhere gets a Warning once the
// grace has passed; when the backend appears, a Normal Event says the
// split is in force again. A backend created within the grace raises no
// Warning at all.
func TestMissingBackendIsReportedAfterGraceAndWithdrawnWhenItAppears(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	m := startMeshedCluster(t, ctx, "bookstore")
	m.workload(t, ctx, "bookstore", "bookstore", "bookstore", "10.244.0.10")
	const grace = 4 * time.Second
	sink := &judging{states{wake: make(chan struct{}, 1)}}
	m.runWatcher(t, sink, func(c *Config) { c.MissingReferenceGrace = grace })

	t.Run("missing everywhere: Warning after the grace", func(t *testing.T) {
		split := m.applySplit(t, ctx, "bookstore", "lonely", "bookstore", "bookstore", "bookstore-v9")
		ev := waitEvent(t, "Warning", func() []corev1.Event { return m.events(t, ctx, "bookstore", "lonely") }, func(ev corev1.Event) bool {
			return ev.Type == corev1.EventTypeWarning && ev.Reason == ReasonRejected && strings.Contains(ev.Message, "backend bookstore-v9: no such service")
		})
		// Event times have a resolution of one second.
		if early := split.GetCreationTimestamp().Add(grace - time.Second); ev.FirstTimestamp.Time.Before(early) {
			t.Errorf("Warning at %v, before the grace had passed (split created %v)", ev.FirstTimestamp, split.GetCreationTimestamp())
		}
		if ev.InvolvedObject.UID != split.GetUID() {
			t.Errorf("Warning is on UID %q, want the split's %q", ev.InvolvedObject.UID, split.GetUID())
		}

		m.workload(t, ctx, "bookstore", "bookstore-v9", "bookstore", "10.244.0.19")
		waitEvent(t, "Normal "+ReasonAccepted, func() []corev1.Event { return m.events(t, ctx, "bookstore", "lonely") }, func(ev corev1.Event) bool {
			return ev.Type == corev1.EventTypeNormal && ev.Reason == ReasonAccepted && strings.Contains(ev.Message, "in force again")
		})
	})

	t.Run("created within the grace: no Warning", func(t *testing.T) {
		m.applySplit(t, ctx, "bookstore", "early", "bookstore", "bookstore", "bookstore-v3")
		m.workload(t, ctx, "bookstore", "bookstore-v3", "bookstore", "10.244.0.13")
		_, _, servedAt := sink.waitFor(t, 0, "split early in force", func(s mesh.State) bool {
			for _, ts := range s.TrafficSplits {
				if ts.Name == "early" {
					return true
				}
			}
			return false
		})
		// The reporter would have reported by grace after it first saw the
		// problem, which was before the split was served.
		time.Sleep(time.Until(servedAt.Add(grace + 2*time.Second)))
		for _, ev := range m.events(t, ctx, "bookstore", "early") {
			if ev.Type == corev1.EventTypeWarning {
				t.Errorf("Warning on a split whose backend came within the grace: %s", ev.Message)
			}
		}
	})

	t.Run("an invalid split is reported at once", func(t *testing.T) {
		m.applySplit(t, ctx, "bookstore", "twice", "bookstore", "bookstore", "bookstore.bookstore")
		waitEvent(t, "Warning", func() []corev1.Event { return m.events(t, ctx, "bookstore", "twice") }, func(ev corev1.Event) bool {
			return ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Message, fmt.Sprintf("backend %s listed twice", "bookstore"))
		})
	})
}
