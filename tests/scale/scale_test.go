package scale

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/kube"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/localmesh"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
	"github.com/meshfed/meshfed/trust/ca"
)

const howToRun = `scale harness skipped: set MESHFED_SCALE=1 to run it. MESHFED_SCALE_FEDERATION=1 enables federation (a federation of one: the controller's member and bridge run); MESHFED_SCALE_CONTROLLER=PATH runs that meshfed-controller binary instead of building this checkout's. It needs the sandbox's etcd and kube-apiserver (built and cached on first use, see sandbox), about 1 GiB of memory and 3-5 minutes for both sizes on 2 cores:
    MESHFED_SCALE=1 go test ./tests/scale -run TestScaleFromAPIServer -v -timeout 60m
MESHFED_SCALE_SERVICES=1000,10000 (the default) chooses the mesh sizes; MESHFED_SCALE_DEBOUNCE=10ms passes --debounce to the controller (default: the controller's own, 100ms); MESHFED_SCALE_MEMORY_LIMIT=250Mi passes --memory-limit`

const (
	namespaces = 10
	clients    = 100
	// perClient is how many services each client subscribes to; the first
	// is always svc-0, the one whose endpoints change.
	perClient = 10
	// slicesManager keeps the EndpointSlice controller off the harness's
	// slices.
	slicesManager = "meshfed-scale"
	// marker is the address prefix of the endpoints added in (a); pods of
	// the Services are 10.244.1-41.x. Nothing is ever dialled at either.
	marker = "10.244.250."
	// churnChanges and churnServices are (f)'s endpoint changes and new
	// Services.
	churnChanges, churnServices = 40, 20
)

// TestScaleFromAPIServer measures, for each mesh size N (Services, each
// with one EndpointSlice of one endpoint, in 10 meshed namespaces), from the
// API server to 100 xDS clients of a real meshfed-controller process:
//
//	(a) an EndpointSlice update (one address added to svc-0's slice) → the
//	    last of the 100 clients receives the EDS response holding it; over
//	    MESHFED_SCALE_ROUNDS (20) changes;
//	(b) a new Service and its slice created → a new client (connecting
//	    once the creates return) holds its full config (LDS, RDS, CDS and
//	    EDS with the endpoint);
//	(c) 100 clients connecting at once (their process already running) →
//	    each holds its full config for its 10 services;
//	(d) the controller process's VmRSS and VmHWM with the 100 clients;
//	(e) bytes the controller pushed (meshfed_xds_pushed_bytes_total, by
//	    type) for one endpoint change and for the 100 first configs of (c);
//	(f) VmRSS and Go heap after churn (40 endpoint changes and 20 new
//	    Services) and after a quiet minute that follows it.
//
// See howToRun for the command; results are in docs/benchmarks.md.
func TestScaleFromAPIServer(t *testing.T) {
	if os.Getenv("MESHFED_SCALE") != "1" {
		t.Skip(howToRun)
	}
	sizes := []int{1000, 10000}
	if v := os.Getenv("MESHFED_SCALE_SERVICES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < perClient {
				t.Fatalf("MESHFED_SCALE_SERVICES=%q: want sizes ≥ %d separated by commas", v, perClient)
			}
			sizes = append(sizes, n)
		}
	}
	rounds := 20
	if v := os.Getenv("MESHFED_SCALE_ROUNDS"); v != "" {
		rounds, _ = strconv.Atoi(v)
	}
	ctrllog.SetLogger(logr.Discard()) // envtest's client logs through controller-runtime
	bin := os.Getenv("MESHFED_SCALE_CONTROLLER")
	if bin == "" {
		bin = buildController(t)
	}
	var results []result
	for _, n := range sizes {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			r := runScale(t, bin, n, rounds)
			results = append(results, r)
			r.print(os.Stdout)
		})
	}
	fmt.Println()
	printTable(os.Stdout, results)
}

// result is one mesh size's measurements.
type result struct {
	services, rounds, clients int
	debounce                  string
	populate, ready           time.Duration
	// (a): per change, the update call and the last/median client.
	apiCall, last, median []time.Duration
	xdsGen, kubeGen       time.Duration // mean per change, from the controller's histograms
	changeBytes           map[string]float64
	changePushes          map[string]float64
	// (b)
	freshCreate, freshConfig time.Duration
	freshBytes               map[string]float64
	// (c)
	connect       []time.Duration
	connectBytes  map[string]float64
	connectPushes map[string]float64
	// (d) and (f), KiB
	rssIdle, rss, hwm, rssChurn, rssQuiet int
	heapChurn, heapQuiet                  float64
	// the controller's Go runtime at the same time (its metrics), bytes
	heapInuse, nextGC, goSys float64
}

func runScale(t *testing.T, bin string, n, rounds int) result {
	ctx := context.Background()
	res := result{services: n, rounds: rounds, clients: clients, debounce: os.Getenv("MESHFED_SCALE_DEBOUNCE")}
	if res.debounce == "" {
		res.debounce = "100ms (default)"
	}
	sb := sandboxtest.Start(t, "east")
	cl := sb.Cluster("east")
	inst, err := installer.New(cl.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	opts := deploy.DefaultOptions()
	opts.ClusterName = "east"
	if _, err := inst.Install(ctx, opts); err != nil {
		t.Fatalf("install: %v", err)
	}
	rc := cl.RESTConfig()
	rc.QPS, rc.Burst = 500, 1000
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}

	if os.Getenv("MESHFED_SCALE_FEDERATION") == "1" {
		// A federation of one: the controller runs its member and bridge
		// (no peers, gossip on loopback), as a federated cluster does.
		if _, _, err := federate.EnsureGossipKeys(ctx, kc, opts.Namespace, federate.DefaultGossipKeySecret); err != nil {
			t.Fatal(err)
		}
		gossip := freePorts(t, 1)[0]
		patch := fmt.Sprintf(`{"spec":{"federation":{"enabled":true,"bindAddress":"127.0.0.1","bindPort":%d,"advertiseAddress":"127.0.0.1"}}}`, gossip)
		dyn := dynamic.NewForConfigOrDie(rc)
		if _, err := dyn.Resource(deploy.MeshConfigGVR).Namespace(opts.Namespace).Patch(ctx, deploy.MeshConfigName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		res.debounce += ", federation on"
	}
	start := time.Now()
	populate(t, kc, n)
	res.populate = time.Since(start)
	t.Logf("populated %d Services and EndpointSlices in %v", n, res.populate)

	// The controller, on loopback only.
	ports := freePorts(t, 4)
	xdsAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d", ports[2])
	args := []string{"--kubeconfig=" + cl.KubeconfigPath, "--xds-address=" + xdsAddr,
		fmt.Sprintf("--issuer-address=127.0.0.1:%d", ports[1]), fmt.Sprintf("--metrics-address=127.0.0.1:%d", ports[2]),
		fmt.Sprintf("--webhook-address=127.0.0.1:%d", ports[3]), "--debug-address=127.0.0.1:0", "--serving-name=127.0.0.1", "--log-level=warn"}
	if d := os.Getenv("MESHFED_SCALE_DEBOUNCE"); d != "" {
		args = append(args, "--debounce="+d)
	}
	if m := os.Getenv("MESHFED_SCALE_MEMORY_LIMIT"); m != "" {
		args = append(args, "--memory-limit="+m)
	}
	start = time.Now()
	pid := startController(t, bin, args...)
	waitReady(t, metricsURL+"/readyz")
	res.ready = time.Since(start)
	res.rssIdle, _ = procStatus(t, pid)
	t.Logf("controller ready (first state of %d services accepted) %v after start; VmRSS %d MiB", n, res.ready, res.rssIdle>>10)

	// Client certificates from the cluster's intermediate CA, as the
	// issuer would sign them.
	td := spiffeid.RequireTrustDomainFromString(deploy.DefaultTrustDomain)
	inter, err := ca.LoadIntermediate(ctx, kc, deploy.DefaultNamespace, "meshfed-intermediate-ca", td)
	if err != nil {
		t.Fatalf("intermediate CA: %v", err)
	}
	certDir := t.TempDir()
	bundleFile := filepath.Join(certDir, "bundle.pem")
	if err := os.WriteFile(bundleFile, inter.BundlePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	newClient := func(ns, sa string, listeners []string) childClient {
		id := spiffeid.RequireFromPath(td, "/ns/"+ns+"/sa/"+sa)
		svid, err := inter.IssueSVID(id, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, keyPEM, err := svid.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		c := childClient{Name: id.String(), CertFile: filepath.Join(certDir, sa+".crt"), KeyFile: filepath.Join(certDir, sa+".key"), Listeners: listeners}
		if err := os.WriteFile(c.CertFile, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(c.KeyFile, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		return c
	}
	watchCfg := childConfig{Server: xdsAddr, BundleFile: bundleFile, Marker: marker}
	for i := 0; i < clients; i++ {
		ls := []string{listenerName(0)}
		for k := 0; k < perClient-1; k++ {
			ls = append(ls, listenerName(1+(i*(perClient-1)+k)%(n-1)))
		}
		watchCfg.Clients = append(watchCfg.Clients, newClient(nsName(i), fmt.Sprintf("watcher-%d", i), ls))
	}
	rec := newRecorder()

	// (c) 100 clients connecting at once.
	m0 := scrape(t, metricsURL)
	watchers := startClientProcess(t, watchCfg, rec.add)
	watchers.start(t)
	for _, c := range watchCfg.Clients {
		for _, l := range c.Listeners {
			at := rec.wait(t, "complete "+l, c.Name, 3*time.Minute)
			_ = at
		}
	}
	for _, c := range watchCfg.Clients {
		var last int64
		for _, l := range c.Listeners {
			last = max(last, rec.get("complete "+l, c.Name))
		}
		res.connect = append(res.connect, time.Unix(0, last).Sub(watchers.startedAt))
	}
	m1 := scrape(t, metricsURL)
	res.connectBytes, res.connectPushes = m1.byType(m0, "meshfed_xds_pushed_bytes_total"), m1.byType(m0, "meshfed_xds_pushes_total")
	sortDurations(res.connect)
	t.Logf("(c) %d clients connecting at once: full config p50 %v, last %v", clients, res.connect[len(res.connect)/2], res.connect[len(res.connect)-1])

	// (a) endpoint changes to svc-0.
	slice, err := kc.DiscoveryV1().EndpointSlices(nsName(0)).Get(ctx, "svc-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // let the connect burst's ACKs settle
	m0 = scrape(t, metricsURL)
	for r := 1; r <= rounds; r++ {
		addr := fmt.Sprintf("%s%d", marker, r)
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}})
		t0 := time.Now()
		if slice, err = kc.DiscoveryV1().EndpointSlices(nsName(0)).Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("round %d: update EndpointSlice: %v", r, err)
		}
		res.apiCall = append(res.apiCall, time.Since(t0))
		var ats []time.Duration
		for _, c := range watchCfg.Clients {
			ats = append(ats, time.Unix(0, rec.wait(t, "marker "+addr, c.Name, time.Minute)).Sub(t0))
		}
		sortDurations(ats)
		res.last = append(res.last, ats[len(ats)-1])
		res.median = append(res.median, ats[len(ats)/2])
		time.Sleep(300 * time.Millisecond) // rounds apart by more than the debounce
	}
	m1 = scrape(t, metricsURL)
	res.changeBytes, res.changePushes = m1.perRound(m0, "meshfed_xds_pushed_bytes_total", rounds), m1.perRound(m0, "meshfed_xds_pushes_total", rounds)
	res.xdsGen = m1.meanDelta(m0, "meshfed_xds_generation_seconds")
	res.kubeGen = m1.meanDelta(m0, "meshfed_controller_config_generation_seconds")

	// (d) memory with the 100 clients connected.
	res.rss, res.hwm = procStatus(t, pid)
	mem := scrape(t, metricsURL)
	res.heapInuse, res.nextGC, res.goSys = mem["go_memstats_heap_inuse_bytes"], mem["go_memstats_next_gc_bytes"], mem["go_memstats_sys_bytes"]

	// (b) a new Service → a new client's full config for it. The client's
	// process runs and holds its certificate; it connects as soon as the
	// creates return.
	freshListener := "fresh." + nsName(0) + ".svc.cluster.local:8080"
	freshCfg := childConfig{Server: xdsAddr, BundleFile: bundleFile, Clients: []childClient{newClient(nsName(0), "newcomer", []string{freshListener})}}
	fresh := startClientProcess(t, freshCfg, rec.add)
	m0 = scrape(t, metricsURL)
	t0 := time.Now()
	createService(t, kc, nsName(0), "fresh", "10.244.251.1")
	res.freshCreate = time.Since(t0)
	fresh.start(t)
	res.freshConfig = time.Unix(0, rec.wait(t, "complete "+freshListener, freshCfg.Clients[0].Name, time.Minute)).Sub(t0)
	time.Sleep(time.Second)
	m1 = scrape(t, metricsURL)
	res.freshBytes = m1.byType(m0, "meshfed_xds_pushed_bytes_total")

	// (f) churn: 40 endpoint changes (one address added to each of
	// svc-1…svc-40) and 20 new Services, 300 ms apart, with the clients
	// connected; then a quiet minute. Memory right after and after the
	// quiet minute.
	for i := 1; i <= churnChanges; i++ {
		name := fmt.Sprintf("svc-%d", i)
		sl, err := kc.DiscoveryV1().EndpointSlices(nsName(i)).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.244.252.%d", i)}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}})
		if _, err := kc.DiscoveryV1().EndpointSlices(nsName(i)).Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("churn: update EndpointSlice %s: %v", name, err)
		}
		time.Sleep(300 * time.Millisecond)
		if i <= churnServices {
			createService(t, kc, nsName(i), fmt.Sprintf("churn-%d", i), fmt.Sprintf("10.244.253.%d", i))
			time.Sleep(300 * time.Millisecond)
		}
	}
	res.rssChurn, _ = procStatus(t, pid)
	mem = scrape(t, metricsURL)
	res.heapChurn = mem["go_memstats_heap_inuse_bytes"]
	time.Sleep(time.Minute)
	res.rssQuiet, _ = procStatus(t, pid)
	mem = scrape(t, metricsURL)
	res.heapQuiet = mem["go_memstats_heap_inuse_bytes"]
	t.Logf("(f) churn: VmRSS %d MiB before, %d MiB right after, %d MiB after a quiet minute", res.rss>>10, res.rssChurn>>10, res.rssQuiet>>10)
	fresh.stop()
	watchers.stop()
	if errs := rec.errors(); len(errs) > 0 {
		t.Errorf("client errors: %v", errs)
	}
	return res
}

func nsName(i int) string { return fmt.Sprintf("scale-%d", i%namespaces) }

// listenerName is the target a client of svc-i dials (xds:///...).
func listenerName(i int) string {
	return fmt.Sprintf("svc-%d.%s.svc.cluster.local:8080", i, nsName(i))
}

// populate creates the meshed namespaces and n selector-less Services, each
// with an EndpointSlice of one endpoint, 16 creates at a time. The Services
// are headless: the sandbox's service range is a /24, and the controller
// does not read cluster IPs.
func populate(t *testing.T, kc kubernetes.Interface, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < namespaces; i++ {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i), Labels: map[string]string{kube.LabelMonitoredBy: deploy.DefaultMeshName}}}
		if _, err := kc.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := tryCreateService(kc, nsName(i), fmt.Sprintf("svc-%d", i), fmt.Sprintf("10.244.%d.%d", 1+i/250, 1+i%250)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func createService(t *testing.T, kc kubernetes.Interface, ns, name, addr string) {
	t.Helper()
	if err := tryCreateService(kc, ns, name, addr); err != nil {
		t.Fatal(err)
	}
}

func tryCreateService(kc kubernetes.Interface, ns, name, addr string) error {
	ctx := context.Background()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone,
			Ports: []corev1.ServicePort{{Name: "grpc", Port: 8080, Protocol: corev1.ProtocolTCP}}},
	}
	if _, err := kc.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Service %s/%s: %w", ns, name, err)
	}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: slicesManager}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("grpc"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	if _, err := kc.DiscoveryV1().EndpointSlices(ns).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create EndpointSlice %s/%s: %w", ns, name, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// recorder keeps the first time each client reported each thing:
// "complete <listener>" and "marker <address>".
type recorder struct {
	mu    sync.Mutex
	first map[string]map[string]int64
	errs  []string
}

func newRecorder() *recorder { return &recorder{first: map[string]map[string]int64{}} }

func (r *recorder) add(ev event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	note := func(key string) {
		if r.first[key] == nil {
			r.first[key] = map[string]int64{}
		}
		if _, ok := r.first[key][ev.Client]; !ok {
			r.first[key][ev.Client] = ev.At
		}
	}
	switch ev.Kind {
	case "complete":
		note("complete " + ev.Listener)
	case "eds":
		for _, m := range ev.Markers {
			note("marker " + m)
		}
	case "error":
		r.errs = append(r.errs, ev.Client+": "+ev.Err)
	}
}

func (r *recorder) get(key, client string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.first[key][client]
}

func (r *recorder) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// wait returns when client first reported key, failing the test after
// timeout.
func (r *recorder) wait(t *testing.T, key, client string, timeout time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if at := r.get(key, client); at != 0 {
			return at
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s: %s not reported within %v (client errors: %v)", client, key, timeout, r.errors())
	return 0
}

// buildController builds cmd/meshfed-controller from this checkout.
func buildController(t *testing.T) string {
	t.Helper()
	p, err := localmesh.BuildPrograms(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p.Controller
}

// startController runs the controller until the test ends and returns its
// PID; its log is printed if the test failed.
//
// It does not start the controller with localmesh.Harness, as the other
// suites do, because that would change what is measured here: the harness fills the API
// server before the controller starts and times the start to /readyz
// (localmesh starts controllers before anything is applied), runs it with
// --log-level=warn, the caller's --debounce and --memory-limit, or another
// binary (MESHFED_SCALE_CONTROLLER), and lets the ADS clients dial it over
// TCP. localmesh would also run a pod network and workload processes
// beside it, competing with it for the machine while latencies are timed.
func startController(t *testing.T, bin string, args ...string) int {
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
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(string(b), "\n")
			t.Logf("controller log (last lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return cmd.Process.Pid
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 5 minutes", url)
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	var ls []net.Listener
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// procStatus returns a process's VmRSS and VmHWM in KiB.
func procStatus(t *testing.T, pid int) (rss, hwm int) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
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

// metrics is one scrape of a Prometheus text endpoint: sample (name with
// labels, as printed) → value.
type metrics map[string]float64

func scrape(t *testing.T, base string) metrics {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// byType is the increase since before of name's samples, by their "type"
// label.
func (m metrics) byType(before metrics, name string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		base, labels, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		_, typ, _ := strings.Cut(labels, `type="`)
		typ, _, _ = strings.Cut(typ, `"`)
		if d := v - before[k]; d != 0 {
			out[typ] = d
		}
	}
	return out
}

func (m metrics) perRound(before metrics, name string, rounds int) map[string]float64 {
	out := m.byType(before, name)
	for k := range out {
		out[k] /= float64(rounds)
	}
	return out
}

// meanDelta is a histogram's mean over the observations since before.
func (m metrics) meanDelta(before metrics, name string) time.Duration {
	n := m[name+"_count"] - before[name+"_count"]
	if n == 0 {
		return 0
	}
	return time.Duration((m[name+"_sum"] - before[name+"_sum"]) / n * float64(time.Second))
}

func sortDurations(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

// pct is the p-th quantile (nearest rank, rounding up) of a sorted slice.
func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sortDurations(s)
	i := int(p*float64(len(s)) + 0.999999)
	return s[min(max(i-1, 0), len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func kib(v float64) string { return fmt.Sprintf("%.1f KiB", v/1024) }

func sum(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

func typesString(m map[string]float64, unit func(float64) string) string {
	var parts []string
	for _, k := range []string{"lds", "rds", "cds", "eds", "sds"} {
		if v, ok := m[k]; ok {
			parts = append(parts, k+" "+unit(v))
		}
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

func (r result) print(w *os.File) {
	count := func(v float64) string { return fmt.Sprintf("%.1f", v) }
	fmt.Fprintf(w, "\n== %d services, %d clients × %d services each, debounce %s ==\n", r.services, r.clients, perClient, r.debounce)
	fmt.Fprintf(w, "populate %v; controller ready %v after start; VmRSS %d MiB before clients\n", r.populate.Round(time.Millisecond), r.ready.Round(time.Millisecond), r.rssIdle>>10)
	fmt.Fprintf(w, "(a) %d EndpointSlice updates: update call p50 %s p99 %s; last client p50 %s p99 %s max %s; median client p50 %s; controller per change: kube generation %s, xDS generation %s\n",
		r.rounds, ms(pct(r.apiCall, .5)), ms(pct(r.apiCall, .99)), ms(pct(r.last, .5)), ms(pct(r.last, .99)), ms(pct(r.last, 1)), ms(pct(r.median, .5)), ms(r.kubeGen), ms(r.xdsGen))
	fmt.Fprintf(w, "    all rounds, last client: %v\n", r.last)
	fmt.Fprintf(w, "(b) new Service: creates %s; new client's full config at %s\n", ms(r.freshCreate), ms(r.freshConfig))
	fmt.Fprintf(w, "(c) %d clients at once: full config p50 %s p99 %s last %s\n", r.clients, ms(pct(r.connect, .5)), ms(pct(r.connect, .99)), ms(pct(r.connect, 1)))
	fmt.Fprintf(w, "(d) controller VmRSS %d MiB with %d clients (VmHWM %d MiB); Go heap in use %.0f MiB, next GC at %.0f MiB, Go sys %.0f MiB\n",
		r.rss>>10, r.clients, r.hwm>>10, r.heapInuse/(1<<20), r.nextGC/(1<<20), r.goSys/(1<<20))
	fmt.Fprintf(w, "(f) after %d endpoint changes and %d new Services: VmRSS %d MiB (Go heap in use %.0f MiB); after a quiet minute: VmRSS %d MiB (heap in use %.0f MiB)\n",
		churnChanges, churnServices, r.rssChurn>>10, r.heapChurn/(1<<20), r.rssQuiet>>10, r.heapQuiet/(1<<20))
	fmt.Fprintf(w, "(e) per endpoint change: %s pushed (%s) in %s responses; 100 first configs: %s (%s) in %s responses; during (b): %s\n",
		kib(sum(r.changeBytes)), typesString(r.changeBytes, kib), typesString(r.changePushes, count),
		kib(sum(r.connectBytes)), typesString(r.connectBytes, kib), typesString(r.connectPushes, count), typesString(r.freshBytes, kib))
}

func printTable(w *os.File, rs []result) {
	fmt.Fprintln(w, "| services | (a) change → last of 100 clients p50 / p99 | (b) new Service → new client's full config | (c) 100 clients at once: last full config | (d) VmRSS / VmHWM | (e) bytes per endpoint change (all clients) / 100 first configs | (f) VmRSS after churn / after a quiet minute |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %d | %s / %s | %s | %s | %d / %d MiB | %s / %s | %d / %d MiB |\n", r.services, ms(pct(r.last, .5)), ms(pct(r.last, .99)), ms(r.freshConfig),
			ms(pct(r.connect, 1)), r.rss>>10, r.hwm>>10, kib(sum(r.changeBytes)), kib(sum(r.connectBytes)), r.rssChurn>>10, r.rssQuiet>>10)
	}
}
