package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/tests/sandbox"
	"github.com/meshfed/meshfed/tests/workloads"
	"github.com/meshfed/meshfed/trust/ca"
)

// Config is what `meshfed demo` takes.
type Config struct {
	// Dir keeps the demo's clusters, binaries, sockets and logs. Empty:
	// <user cache dir>/meshfed/demo, emptied at start.
	Dir string
	// Out receives the live table (or, with Check, the checks' report).
	Out io.Writer
	// Check runs the scenario unattended and returns an error listing
	// every expectation missed.
	Check bool
	// Interval is the pause between a client's RPCs. Default 50 ms.
	Interval time.Duration
	// Refresh is how often the table is redrawn. Default 1 s.
	Refresh time.Duration
}

// cluster is one demo cluster and the processes that serve it.
type cluster struct {
	name       string
	podCIDR    string
	sb         *sandbox.Cluster
	inst       *installer.Client
	kubeconfig string
	gossipPort int
	metrics    string // host:port of /metrics
	xdsSock    string
	issuerSock string
	controller *exec.Cmd
	ctrlDone   chan struct{}
	ctrlLog    *os.File
}

// env is a running demo.
type env struct {
	cfg      Config
	dir      string
	repo     string
	bins     binaries
	net      *workloads.UserNetwork
	runner   *workloads.Runner
	sb       *sandbox.Sandbox
	clusters map[string]*cluster
	order    []string
	stats    *Stats
	log      *os.File
	mu       sync.Mutex
}

type binaries struct{ controller, meshfed, bookapp, kubectl string }

// Run starts the demo and runs it until ctx ends (or, with Check, until
// the scenario is done). It stops every process it started before it
// returns.
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Interval == 0 {
		cfg.Interval = 50 * time.Millisecond
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = time.Second
	}
	e := &env{cfg: cfg, clusters: map[string]*cluster{}, order: []string{"east", "west"}, stats: NewStats(2 * time.Minute)}
	defer func() {
		if cerr := e.stop(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := e.start(ctx); err != nil {
		return err
	}
	if cfg.Check {
		return e.check(ctx)
	}
	return e.live(ctx)
}

func (e *env) say(format string, args ...any) {
	fmt.Fprintf(e.cfg.Out, "demo: "+format+"\n", args...)
}

func (e *env) start(ctx context.Context) error {
	var err error
	if e.repo, err = repoRoot(); err != nil {
		return err
	}
	e.dir = e.cfg.Dir
	if e.dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return err
		}
		e.dir = filepath.Join(base, "meshfed", "demo")
	}
	if err := os.RemoveAll(e.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		return err
	}
	if e.log, err = os.Create(filepath.Join(e.dir, "demo.log")); err != nil {
		return err
	}
	e.say("logs: %s", e.log.Name())

	bin, err := sandbox.EnsureBinaries(sandbox.AssetsOptions{Progress: e.cfg.Out})
	if err != nil {
		return err
	}
	e.bins.kubectl = filepath.Join(bin, sandbox.BinKubectl)
	e.say("building meshfed, meshfed-controller and the bookstore app")
	if err := e.build(ctx); err != nil {
		return err
	}

	// One flat pod network for both clusters, made without root: only
	// loopback, with each pod's address on it.
	cidrs := map[string]string{"east": "10.244.1.0/24", "west": "10.244.2.0/24"}
	if e.net, err = workloads.CreateUserNetwork(cidrs["east"], cidrs["west"]); err != nil {
		return err
	}
	e.runner = workloads.New(workloads.Config{
		Images:  map[string]string{"meshfed/bookapp": e.bins.bookapp},
		Meshfed: e.bins.meshfed,
		Dir:     filepath.Join(e.dir, "pods"),
		Env:     []string{fmt.Sprintf("BOOKAPP_INTERVAL=%s", e.cfg.Interval)},
		Log:     e.log,
		OnOutput: func(w workloads.Workload, line []byte) {
			e.stats.RecordLine(SourceLabel(w.Labels["app"], w.Cluster), line, time.Now())
		},
	})

	e.say("starting clusters east and west (etcd, kube-apiserver, kube-controller-manager each)")
	e.sb, err = sandbox.Start(ctx, sandbox.Config{
		Clusters: e.order, Dir: filepath.Join(e.dir, "clusters"), Log: e.log,
		Hooks: e.runner.Hooks(), PodCIDR: cidrs,
	})
	if err != nil {
		return err
	}
	for _, name := range e.order {
		sc := e.sb.Cluster(name)
		inst, err := installer.New(sc.RESTConfig())
		if err != nil {
			return err
		}
		port, err := freePort()
		if err != nil {
			return err
		}
		mport, err := freePort()
		if err != nil {
			return err
		}
		e.clusters[name] = &cluster{
			name: name, podCIDR: cidrs[name], sb: sc, inst: inst, kubeconfig: sc.KubeconfigPath,
			gossipPort: port, metrics: fmt.Sprintf("127.0.0.1:%d", mport),
			xdsSock:    filepath.Join(e.dir, name+"-xds.sock"),
			issuerSock: filepath.Join(e.dir, name+"-issuer.sock"),
		}
	}

	e.say("installing meshfed in both clusters (west shares east's root), federating them")
	if err := e.install(ctx); err != nil {
		return err
	}
	for _, name := range e.order {
		if err := e.startController(ctx, e.clusters[name]); err != nil {
			return err
		}
	}
	e.say("applying the bookstore: bookbuyer, bookthief, bookstore-v1 in east; bookstore-v2 in west, exported")
	return e.applyInitial(ctx)
}

func (e *env) build(ctx context.Context) error {
	out := filepath.Join(e.dir, "bin")
	e.bins.controller = filepath.Join(out, "meshfed-controller")
	e.bins.meshfed = filepath.Join(out, "meshfed")
	e.bins.bookapp = filepath.Join(out, "bookapp")
	for _, b := range []struct{ out, pkg string }{
		{e.bins.controller, "./cmd/meshfed-controller"}, {e.bins.meshfed, "./cmd/meshfed"}, {e.bins.bookapp, "./docs/example/app"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Dir = e.repo
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b.pkg, err, msg)
		}
	}
	return nil
}

// install does what a user does with `meshfed install` in each cluster and
// `meshfed cluster join west --peer-kubeconfig <east>`.
func (e *env) install(ctx context.Context) error {
	east := e.clusters["east"]
	for _, name := range e.order {
		c := e.clusters[name]
		o := deploy.DefaultOptions()
		o.ClusterName = name
		src := installer.CASource{}
		if name != "east" {
			src.RootFrom = east.sb.Client()
		}
		if _, err := c.inst.InstallWithCA(ctx, o, src); err != nil {
			return fmt.Errorf("install in %s: %w", name, err)
		}
		// Gossip on loopback, each cluster on its own port.
		patch := fmt.Sprintf(`{"spec":{"federation":{"bindAddress":"127.0.0.1","bindPort":%d,"advertiseAddress":"127.0.0.1","advertisePort":%d,"withdrawAfter":"5s"}}}`,
			c.gossipPort, c.gossipPort)
		if err := e.patchMeshConfig(ctx, c, patch); err != nil {
			return err
		}
		for _, ns := range []string{"bookstore", "bookbuyer", "bookthief", "bookwarehouse"} {
			if err := e.kubectl(ctx, c, "create", "namespace", ns); err != nil {
				return err
			}
		}
		if err := c.inst.AddNamespaces(ctx, deploy.DefaultMeshName, []string{"bookstore", "bookbuyer", "bookthief", "bookwarehouse"}, installer.InjectionEnabled); err != nil {
			return err
		}
	}
	out, err := exec.CommandContext(ctx, e.bins.meshfed, "cluster", "join", "west",
		"--kubeconfig", e.clusters["west"].kubeconfig, "--peer-kubeconfig", east.kubeconfig).CombinedOutput()
	fmt.Fprintf(e.log, "meshfed cluster join west:\n%s\n", out)
	if err != nil {
		return fmt.Errorf("meshfed cluster join west: %v\n%s", err, out)
	}
	return nil
}

func (e *env) patchMeshConfig(ctx context.Context, c *cluster, patch string) error {
	dyn := c.inst.Dynamic()
	_, err := dyn.Resource(installer.MeshConfigGVR).Namespace(deploy.DefaultNamespace).
		Patch(ctx, deploy.MeshConfigName, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("patch MeshConfig in %s: %w", c.name, err)
	}
	return nil
}

// startController runs meshfed-controller for a cluster as a local process
// configured as `meshfed install` configures it, serving xDS and issuing on
// Unix sockets that the workloads' network namespace can reach.
func (e *env) startController(ctx context.Context, c *cluster) error {
	var err error
	if c.ctrlLog == nil {
		if c.ctrlLog, err = os.Create(filepath.Join(e.dir, c.name+"-controller.log")); err != nil {
			return err
		}
	}
	_ = os.Remove(c.xdsSock)
	_ = os.Remove(c.issuerSock)
	cmd := exec.Command(e.bins.controller,
		"--kubeconfig", c.kubeconfig,
		"--xds-address", "unix://"+c.xdsSock,
		"--issuer-address", "unix://"+c.issuerSock,
		"--metrics-address", c.metrics,
		"--serving-name", "localhost",
		"--log-level", "info",
	)
	cmd.Stdout, cmd.Stderr = c.ctrlLog, c.ctrlLog
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start meshfed-controller for %s: %w", c.name, err)
	}
	c.controller = cmd
	c.ctrlDone = make(chan struct{})
	go func() { _ = cmd.Wait(); close(c.ctrlDone) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(c.issuerSock); err == nil {
			break
		}
		select {
		case <-c.ctrlDone:
			return fmt.Errorf("meshfed-controller for %s exited; see %s", c.name, c.ctrlLog.Name())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("meshfed-controller for %s did not start; see %s", c.name, c.ctrlLog.Name())
		}
	}
	bundle, err := c.sb.Client().CoreV1().ConfigMaps(deploy.DefaultNamespace).Get(ctx, "meshfed-ca-bundle", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("trust bundle of %s: %w", c.name, err)
	}
	e.runner.AddCluster(c.name, workloads.Cluster{
		Client: c.sb.Client(), Network: e.net,
		IssuerAddress: "unix://" + c.issuerSock, XDSAddress: "unix://" + c.xdsSock,
		TrustDomain: deploy.DefaultTrustDomain, BundlePEM: []byte(bundle.Data[ca.BundleKey]),
	})
	return nil
}

// stopController kills a cluster's controller, as losing its control
// plane would.
func (e *env) stopController(c *cluster) {
	if c.controller == nil || c.controller.Process == nil {
		return
	}
	_ = c.controller.Process.Signal(syscall.SIGKILL)
	<-c.ctrlDone
	c.controller = nil
}

func (e *env) kubectl(ctx context.Context, c *cluster, args ...string) error {
	cmd := exec.CommandContext(ctx, e.bins.kubectl, append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	fmt.Fprintf(e.log, "kubectl (%s) %s:\n%s\n", c.name, strings.Join(args, " "), out)
	if err != nil {
		return fmt.Errorf("kubectl %s in %s: %v: %s", strings.Join(args, " "), c.name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (e *env) manifest(rel string) string {
	return filepath.Join(e.repo, "docs", "example", "manifests", rel)
}

// applyInitial applies the bookstore across the clusters: clients and
// bookstore-v1 in east, bookstore-v2 in west and exported, the
// TrafficTargets in both, and the split in east.
func (e *env) applyInitial(ctx context.Context) error {
	east, west := e.clusters["east"], e.clusters["west"]
	steps := []struct {
		c    *cluster
		file string
	}{
		{east, "apps/bookstore.yaml"}, {east, "apps/bookstore-v1.yaml"}, {east, "apps/bookbuyer.yaml"},
		{east, "apps/bookthief.yaml"}, {east, "apps/bookwarehouse.yaml"}, {east, "access"},
		{west, "apps/bookstore.yaml"}, {west, "apps/bookstore-v2.yaml"}, {west, "access"},
		{west, "export/bookstore-v2.yaml"},
		{east, "split/bookstore-50-50.yaml"},
	}
	for _, s := range steps {
		if err := e.kubectl(ctx, s.c, "apply", "-f", e.manifest(s.file)); err != nil {
			return err
		}
	}
	return nil
}

func (e *env) stop() error {
	var errs []error
	if e.runner != nil {
		e.runner.StopAll()
	}
	for _, c := range e.clusters {
		e.stopController(c)
		if c.ctrlLog != nil {
			c.ctrlLog.Close()
		}
	}
	if e.sb != nil {
		if err := e.sb.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if e.net != nil {
		if err := e.net.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if e.log != nil {
		e.log.Close()
	}
	return errors.Join(errs...)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// repoRoot finds the meshfed checkout the demo runs from: its manifests
// and programs are what the demo applies and builds.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/meshfed/meshfed\n") {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", errors.New("demo: run it from a meshfed checkout (go run ./cmd/meshfed demo)")
		}
	}
}
