package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/localmesh"
	"github.com/meshfed/meshfed/localmesh/workloads"
)

// cluster is the suites' one cluster.
const cluster = "east"

// fromTheStart, the zero time, selects every RPC the clients made.
var fromTheStart time.Time

// bookstoreMesh is one local cluster started by localmesh, as `meshfed
// demo` and tests/federated start theirs: meshfed installed, the
// controller running as a process, the bookstore apps applied from
// docs/example/manifests/apps and run as processes.
type bookstoreMesh struct {
	h    *localmesh.Harness
	east *localmesh.Cluster
	ctx  context.Context
}

func startBookstoreMesh(t *testing.T) *bookstoreMesh {
	t.Helper()
	if err := workloads.CanCreateUserNetworks(); err != nil {
		t.Skipf("end-to-end traffic needs pod addresses in a network namespace the test creates: %v", err)
	}
	// Not t.Context(): it ends before the cleanups, and the controller's
	// shutdown below is checked while the cluster still runs.
	ctx := context.Background()
	h, err := localmesh.Start(ctx, localmesh.Config{
		Clusters: []string{cluster}, Dir: t.TempDir(), Logf: t.Logf, Progress: os.Stderr,
		Interval: 2 * time.Millisecond, Debounce: 50 * time.Millisecond,
		Keep: time.Hour, // every result of the test
	})
	if err != nil {
		t.Fatal(err)
	}
	m := &bookstoreMesh{h: h, east: h.Cluster(cluster), ctx: ctx}
	t.Cleanup(func() {
		if err := h.ShutDownController(cluster, 15*time.Second); err != nil {
			t.Error(err)
		}
		if err := h.Stop(); err != nil {
			t.Errorf("stop the cluster: %v", err)
		}
		if t.Failed() {
			t.Logf("controller log (last lines):\n%s", tail(m.east.ControllerLogPath(), 60))
			t.Logf("workloads' and cluster's log %s (last lines):\n%s", h.LogPath(), tail(h.LogPath(), 40))
		}
	})
	m.apply(t, "apps")
	return m
}

// apply applies files or directories under docs/example/manifests.
func (m *bookstoreMesh) apply(t *testing.T, manifests ...string) {
	t.Helper()
	if err := m.h.Apply(m.ctx, cluster, manifests...); err != nil {
		t.Fatal(err)
	}
}

// applyObject applies one object given as its JSON fields.
func (m *bookstoreMesh) applyObject(t *testing.T, obj map[string]any) {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "object.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.h.Kubectl(m.ctx, cluster, "apply", "-f", path); err != nil {
		t.Fatal(err)
	}
}

// wait fails the test unless cond returns nil within limit (generous: the
// machine is shared; nothing here is a latency assertion).
func (m *bookstoreMesh) wait(t *testing.T, limit time.Duration, what string, cond func() error) {
	t.Helper()
	err := localmesh.WaitUntil(m.ctx, limit, what, func(time.Time) (bool, string) {
		if err := cond(); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
}

// calls returns the RPCs of method the app's client made from from on, in
// order.
func (m *bookstoreMesh) calls(from time.Time, app, method string) []localmesh.Call {
	return m.h.Stats().Calls(localmesh.SourceLabel(app, cluster), method, from)
}

// lastN returns the last n RPCs of app/method from from on, or an error if
// there are fewer.
func (m *bookstoreMesh) lastN(from time.Time, app, method string, n int) ([]localmesh.Call, error) {
	cs := m.calls(from, app, method)
	if len(cs) < n {
		return nil, fmt.Errorf("%s %s: %d results so far, want %d", app, method, len(cs), n)
	}
	return cs[len(cs)-n:], nil
}

// allCode checks that the last n RPCs of app/method from from on ended
// with code.
func (m *bookstoreMesh) allCode(from time.Time, app, method string, n int, code string) error {
	cs, err := m.lastN(from, app, method, n)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if codeOf(c) != code {
			return fmt.Errorf("%s %s: got %s (%s), want %s", app, method, codeOf(c), c.Error, code)
		}
	}
	return nil
}

// codeOf is the gRPC status code an RPC ended with.
func codeOf(c localmesh.Call) string {
	if c.Outcome.OK {
		return ok
	}
	return c.Outcome.Code
}

// metricsURL is the controller's /metrics.
func (m *bookstoreMesh) metricsURL() string { return "http://" + m.east.MetricsAddress() + "/metrics" }

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// scrape sums the samples of one metric (all label sets) on a Prometheus
// text endpoint.
func scrape(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		metric, value, found := strings.Cut(line, " ")
		if !found || strings.HasPrefix(line, "#") {
			continue
		}
		if base, _, _ := strings.Cut(metric, "{"); base != name {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(value, &v); err == nil {
			sum += v
		}
	}
	return sum
}
