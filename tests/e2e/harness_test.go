package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/meshfed/meshfed/deploy"
	example "github.com/meshfed/meshfed/docs/example"
	"github.com/meshfed/meshfed/localmesh"
	"github.com/meshfed/meshfed/localmesh/workloads"
)

// buildBinaries builds the programs the test runs as processes from this
// checkout.
func buildBinaries(t *testing.T) localmesh.Programs {
	t.Helper()
	p, err := localmesh.BuildPrograms(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// writeManifests writes the demo's manifests (docs/example, as embedded in
// meshfed) into a directory of the test and returns it.
func writeManifests(t *testing.T) string {
	t.Helper()
	sub, err := fs.Sub(example.Manifests, "manifests")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "manifests")
	if err := os.CopyFS(dir, sub); err != nil {
		t.Fatal(err)
	}
	return dir
}

// pickCIDR finds a pod /24 in 10.244.100.0–10.244.250.0 that the host
// neither has an address in nor routes, so the test's network is the only
// place its addresses exist.
func pickCIDR(t *testing.T) string {
	t.Helper()
	for i := 0; i < 50; i++ {
		cidr := fmt.Sprintf("10.244.%d.0/24", 100+rand.IntN(151))
		used, err := workloads.CIDRInUse(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if !used {
			return cidr
		}
	}
	t.Fatal("no free pod CIDR in 10.244.100-250.0/24")
	return ""
}

// record is one RPC a client workload reported.
type record struct {
	w workloads.Workload
	r struct {
		Seq     int64  `json:"seq"`
		Method  string `json:"method"`
		Code    string `json:"code"`
		Error   string `json:"error"`
		Backend string `json:"backend"`
		Version string `json:"version"`
	}
}

// tally collects every RPC result the client workloads print.
type tally struct {
	mu   sync.Mutex
	recs []record
}

func (ta *tally) add(w workloads.Workload, line []byte) {
	var rec record
	if json.Unmarshal(line, &rec.r) != nil || rec.r.Method == "" {
		return
	}
	rec.w = w
	ta.mu.Lock()
	ta.recs = append(ta.recs, rec)
	ta.mu.Unlock()
}

func (ta *tally) mark() int { ta.mu.Lock(); defer ta.mu.Unlock(); return len(ta.recs) }

// since returns the records from mark on of the given app label and method.
func (ta *tally) since(mark int, app, method string) []record {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	var out []record
	for _, r := range ta.recs[mark:] {
		if r.w.Labels["app"] == app && r.r.Method == method {
			out = append(out, r)
		}
	}
	return out
}

// lastN returns the last n records of app/method since mark, or an error if
// there are fewer.
func (ta *tally) lastN(mark int, app, method string, n int) ([]record, error) {
	rs := ta.since(mark, app, method)
	if len(rs) < n {
		return nil, fmt.Errorf("%s %s: %d results so far, want %d", app, method, len(rs), n)
	}
	return rs[len(rs)-n:], nil
}

// allCode checks that the last n results of app/method since mark have code.
func (ta *tally) allCode(mark int, app, method string, n int, code string) error {
	rs, err := ta.lastN(mark, app, method, n)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.r.Code != code {
			return fmt.Errorf("%s %s: got %s (%s), want %s", app, method, r.r.Code, r.r.Error, code)
		}
	}
	return nil
}

// eventually retries f until it returns nil; it fails the test after
// timeout (generous: the machine is shared; nothing here is a latency
// assertion).
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// applier applies manifest files the way `kubectl apply --server-side`
// does.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(t *testing.T, rc *rest.Config) *applier {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dynamic.NewForConfigOrDie(rc), mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

// applyFiles applies every YAML file in paths (files or directories),
// Namespaces first.
func (a *applier) applyFiles(t *testing.T, paths ...string) {
	t.Helper()
	var objs []*unstructured.Unstructured
	for _, p := range paths {
		files := []string{p}
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			files, _ = filepath.Glob(filepath.Join(p, "*.yaml"))
			sort.Strings(files)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			o, err := deploy.Decode(b)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			objs = append(objs, o...)
		}
	}
	sort.SliceStable(objs, func(i, j int) bool { return objs[i].GetKind() == "Namespace" && objs[j].GetKind() != "Namespace" })
	for _, o := range objs {
		a.apply(t, o)
	}
}

func (a *applier) apply(t *testing.T, o *unstructured.Unstructured) {
	t.Helper()
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		a.mapper.Reset()
		if m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if o.GetNamespace() != "" {
		ri = a.dyn.Resource(m.Resource).Namespace(o.GetNamespace())
	}
	if _, err := ri.Apply(context.Background(), o.GetName(), o, metav1.ApplyOptions{FieldManager: "meshfed-e2e", Force: true}); err != nil {
		t.Fatalf("apply %s %s/%s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
	}
}

// controllerProcess runs meshfed-controller and stops it (SIGTERM) when
// the test ends; its log is printed if the test failed.
func startController(t *testing.T, bin string, args ...string) string {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "controller.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("meshfed-controller exited: %v", err)
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("meshfed-controller did not stop within 15 s of SIGINT")
		}
		logFile.Close()
		if t.Failed() {
			t.Logf("controller log (last lines):\n%s", tail(logPath, 60))
		}
	})
	return logPath
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	eventually(t, 2*time.Minute, "controller /readyz", func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	})
}

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
