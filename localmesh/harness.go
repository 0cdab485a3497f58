package localmesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	example "github.com/meshfed/meshfed/docs/example"
	"github.com/meshfed/meshfed/localmesh/workloads"
	"github.com/meshfed/meshfed/sandbox"
)

// Config says which federation to start.
type Config struct {
	// Clusters names the clusters, in order. The first one's root CA is
	// shared by all, and the others join its federation. Cluster i gets
	// pod CIDR 10.244.<i+1>.0/24. Default: east, west.
	Clusters []string
	// Dir keeps the clusters, binaries, sockets and logs. It is emptied at
	// start. Required.
	Dir string
	// Logf receives progress messages; nil discards them.
	Logf func(format string, args ...any)
	// Progress receives the sandbox's build progress (a first run builds
	// the API server); nil discards it.
	Progress io.Writer
	// Interval is the pause between a client's RPCs. Default 50 ms.
	Interval time.Duration
	// WithdrawAfter is every cluster's spec.federation.withdrawAfter.
	// Default 5 s.
	WithdrawAfter time.Duration
	// FailStatic names the clusters whose MeshConfig sets
	// spec.federation.failStatic: they keep a lost member's services.
	FailStatic []string
	// Namespaces are created and added to the mesh in every cluster.
	// Default: bookstore, bookbuyer, bookthief, bookwarehouse.
	Namespaces []string
	// Keep is how long Stats keeps results. Default 10 minutes.
	Keep time.Duration
	// Self, when set, is a meshfed binary that plays every role: the CLI,
	// the controller (`meshfed controller`) and the bookstore workload
	// (`meshfed bookapp`), so that a released binary runs the federation
	// with no checkout. Empty: they are built from the meshfed checkout the
	// process runs in (the test suites).
	Self string
	// SVIDTTL, when set, is every cluster's
	// spec.certificate.serviceCertValidityDuration (at least 1 minute), so
	// that workloads renew within a test. Default: the MeshConfig's (24 h).
	SVIDTTL time.Duration
	// Debounce, when set, is every controller's --debounce: how long it
	// waits for a burst of Kubernetes changes to end before it builds.
	// Default: the controller's (100 ms).
	Debounce time.Duration
	// SeparateNetworks puts each cluster on its own network: its pods in a
	// network namespace of their own with no route to the other clusters'
	// pods, meshfed installed with `--network <cluster>` and an east-west
	// gateway (the stand-in for Envoy, two replicas) at GatewayAddress,
	// the only address of a cluster the other networks reach, through a
	// link (CutLink, RestoreLink). False: one flat network for all.
	SeparateNetworks bool
	// InstallControlPlane, when set, puts a cluster's control plane into
	// it in place of `meshfed install` (with a Helm chart, say), given the
	// cluster's kubeconfig and install's options. Nothing then brings a
	// CA: the controller makes the root at its first start, so only one
	// cluster may be given (the others would join a root that is not made
	// yet).
	InstallControlPlane func(ctx context.Context, kubeconfig string, o deploy.Options) error
}

// Step applies one manifest (a file or directory under
// docs/example/manifests) in one cluster.
type Step struct {
	Cluster  string
	Manifest string
}

// Cluster is one cluster of the federation and the processes serving it.
type Cluster struct {
	Name       string
	PodCIDR    string
	Kubeconfig string
	Sandbox    *sandbox.Cluster
	Installer  *installer.Client

	gossipPort  int
	gateway     string // host:port of its gateway, on separate networks
	metrics     string // host:port of /metrics
	webhook     string // host:port of the sidecar injector
	debug       string // host:port of the debug API
	xdsSock     string
	issuerSock  string
	ctrlLogPath string

	mu         sync.Mutex
	controller *process // nil when none runs
	ctrlLog    *os.File
}

// process is one run of a cluster's controller.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	err  error         // how it exited; read only after done
}

// MetricsAddress is where the cluster's controller serves /metrics,
// /readyz and /healthz: host:port on 127.0.0.1.
func (c *Cluster) MetricsAddress() string { return c.metrics }

// GatewayAddress is where the other networks reach the cluster's
// east-west gateway (host:port), "" on a flat network.
func (c *Cluster) GatewayAddress() string { return c.gateway }

// ControllerLogPath is the file the cluster's controller logs to, every
// run of it appended.
func (c *Cluster) ControllerLogPath() string { return c.ctrlLogPath }

// Harness is a running federation.
type Harness struct {
	cfg      Config
	dir      string
	bins     binaries
	nets     map[string]*workloads.UserNetwork // by cluster; one for all on a flat network
	runner   *workloads.Runner
	sb       *sandbox.Sandbox
	clusters map[string]*Cluster
	stats    *Stats
	log      *os.File

	linksMu sync.Mutex
	links   map[[2]string]*process // [from, to] network → the link process

	// debugMu guards debug: each cluster's controller debug API address,
	// read by the sandbox's port forwarding.
	debugMu sync.Mutex
	debug   map[string]string
}

// binaries are the programs the harness runs.
type binaries struct {
	controller, bookapp workloads.Program
	meshfed, kubectl    string
}

// Start starts the federation: clusters, meshfed installed and joined,
// controllers running. Apply the workloads next. On error it stops
// whatever it started.
func Start(ctx context.Context, cfg Config) (h *Harness, err error) {
	if len(cfg.Clusters) == 0 {
		cfg.Clusters = []string{"east", "west"}
	}
	if cfg.Dir == "" {
		return nil, errors.New("federated: Config.Dir is required")
	}
	if cfg.InstallControlPlane != nil && len(cfg.Clusters) > 1 {
		return nil, errors.New("federated: Config.InstallControlPlane installs one cluster only")
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Interval == 0 {
		cfg.Interval = 50 * time.Millisecond
	}
	if cfg.WithdrawAfter == 0 {
		cfg.WithdrawAfter = 5 * time.Second
	}
	if len(cfg.Namespaces) == 0 {
		cfg.Namespaces = []string{"bookstore", "bookbuyer", "bookthief", "bookwarehouse"}
	}
	if cfg.Keep == 0 {
		cfg.Keep = 10 * time.Minute
	}
	h = &Harness{cfg: cfg, dir: cfg.Dir, clusters: map[string]*Cluster{}, stats: NewStats(cfg.Keep),
		nets: map[string]*workloads.UserNetwork{}, links: map[[2]string]*process{}, debug: map[string]string{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, h.Stop())
			h = nil
		}
	}()
	if err := h.start(ctx); err != nil {
		return h, err
	}
	return h, nil
}

// Stats holds every client's results.
func (h *Harness) Stats() *Stats { return h.stats }

// Cluster returns a cluster by name, nil if there is none.
func (h *Harness) Cluster(name string) *Cluster { return h.clusters[name] }

// Clusters names the clusters in order.
func (h *Harness) Clusters() []string { return slices.Clone(h.cfg.Clusters) }

// KubectlPath is the kubectl binary the harness uses.
func (h *Harness) KubectlPath() string { return h.bins.kubectl }

// MeshfedPath is the meshfed CLI the harness runs (Meshfed), for a test
// that runs it with a kubeconfig of its own.
func (h *Harness) MeshfedPath() string { return h.bins.meshfed }

// LogPath is the file that holds the workloads' and clusters' logs.
func (h *Harness) LogPath() string { return h.log.Name() }

// DebugURL is the base URL of cluster's controller's debug API on this
// machine (its profiles are under debug.PathProfiles).
func (h *Harness) DebugURL(cluster string) string {
	h.debugMu.Lock()
	defer h.debugMu.Unlock()
	return "http://" + h.debug[cluster]
}

// Manifest is the path of a file or directory of the demo's manifests
// (docs/example/manifests, written into the harness's directory from the
// copy embedded in the binary).
func (h *Harness) Manifest(rel string) string {
	return filepath.Join(h.dir, "manifests", rel)
}

func (h *Harness) start(ctx context.Context) error {
	var err error
	if err := os.RemoveAll(h.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		return err
	}
	manifests, err := fs.Sub(example.Manifests, "manifests")
	if err != nil {
		return err
	}
	if err := os.CopyFS(filepath.Join(h.dir, "manifests"), manifests); err != nil {
		return fmt.Errorf("write the demo's manifests: %w", err)
	}
	if h.log, err = os.Create(filepath.Join(h.dir, "federation.log")); err != nil {
		return err
	}
	h.cfg.Logf("logs: %s", h.log.Name())

	bin, err := sandbox.EnsureBinaries(sandbox.AssetsOptions{Progress: h.cfg.Progress})
	if err != nil {
		return err
	}
	h.bins.kubectl = filepath.Join(bin, sandbox.BinKubectl)
	if h.cfg.Self != "" {
		h.bins.meshfed = h.cfg.Self
		h.bins.controller = workloads.Program{Path: h.cfg.Self, Args: []string{"controller"}}
		h.bins.bookapp = workloads.Program{Path: h.cfg.Self, Args: []string{"bookapp"}}
	} else {
		h.cfg.Logf("building meshfed, meshfed-controller and the bookstore app")
		if err := h.build(ctx); err != nil {
			return err
		}
	}

	// Pod networks made without root: only loopback, with each pod's
	// address on it. One for every cluster, or one each with the gateways'
	// addresses reachable through links.
	cidrs := map[string]string{}
	var all []string
	for i, name := range h.cfg.Clusters {
		cidrs[name] = fmt.Sprintf("10.244.%d.0/24", i+1)
		all = append(all, cidrs[name])
	}
	if err := h.createNetworks(cidrs, all); err != nil {
		return err
	}
	h.stats.via = h.via
	images := map[string]workloads.Program{"meshfed/bookapp": h.bins.bookapp}
	if h.cfg.SeparateNetworks {
		if err := os.MkdirAll(h.linkDir(), 0o755); err != nil {
			return err
		}
		images[envoyRepository] = workloads.Program{Path: h.bins.meshfed, Args: []string{"gateway-standin", "--link-dir", h.linkDir()}}
	}
	h.runner = workloads.New(workloads.Config{
		Images:  images,
		Meshfed: h.bins.meshfed,
		Dir:     filepath.Join(h.dir, "pods"),
		Env:     []string{fmt.Sprintf("BOOKAPP_INTERVAL=%s", h.cfg.Interval)},
		Log:     h.log,
		OnOutput: func(w workloads.Workload, line []byte) {
			now := time.Now()
			h.stats.RecordLine(SourceLabel(w.Labels["app"], w.Cluster), line, now)
			// A failed RPC's message goes to the log (the tallies keep
			// only its code); denials are expected and left out.
			if bytes.Contains(line, []byte(`"error":`)) && !bytes.Contains(line, []byte(`"code":"PermissionDenied"`)) {
				fmt.Fprintf(h.log, "%s %s/%s/%s failed RPC: %s\n", now.Format(time.RFC3339Nano), w.Cluster, w.Namespace, w.Pod, bytes.TrimSpace(line))
			}
		},
	})

	h.cfg.Logf("starting clusters %s (etcd, kube-apiserver, kube-controller-manager each)", strings.Join(h.cfg.Clusters, ", "))
	h.sb, err = sandbox.Start(ctx, sandbox.Config{
		Clusters: h.cfg.Clusters, Dir: filepath.Join(h.dir, "clusters"), Log: h.log,
		Hooks: h.hooks(), PodCIDR: cidrs,
	})
	if err != nil {
		return err
	}
	for _, name := range h.cfg.Clusters {
		sc := h.sb.Cluster(name)
		inst, err := installer.New(sc.RESTConfig())
		if err != nil {
			return err
		}
		port, err := FreePort()
		if err != nil {
			return err
		}
		mport, err := FreePort()
		if err != nil {
			return err
		}
		wport, err := FreePort()
		if err != nil {
			return err
		}
		dport, err := FreePort()
		if err != nil {
			return err
		}
		h.clusters[name] = &Cluster{
			Name: name, PodCIDR: cidrs[name], Sandbox: sc, Installer: inst, Kubeconfig: sc.KubeconfigPath,
			gossipPort: port, metrics: fmt.Sprintf("127.0.0.1:%d", mport), gateway: h.gatewayAddress(name),
			webhook:     fmt.Sprintf("127.0.0.1:%d", wport),
			debug:       fmt.Sprintf("127.0.0.1:%d", dport),
			xdsSock:     filepath.Join(h.dir, name+"-xds.sock"),
			issuerSock:  filepath.Join(h.dir, name+"-issuer.sock"),
			ctrlLogPath: filepath.Join(h.dir, name+"-controller.log"),
		}
		h.debugMu.Lock()
		h.debug[name] = h.clusters[name].debug
		h.debugMu.Unlock()
	}

	h.cfg.Logf("installing meshfed in every cluster (sharing %s's root), federating them", h.cfg.Clusters[0])
	if err := h.install(ctx); err != nil {
		return err
	}
	for _, name := range h.cfg.Clusters {
		if err := h.StartController(ctx, name); err != nil {
			return err
		}
	}
	if h.cfg.SeparateNetworks {
		for _, from := range h.cfg.Clusters {
			for _, to := range h.cfg.Clusters {
				if from != to {
					if err := h.RestoreLink(from, to); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// hooks are the sandbox's: the runner starts and stops Pods; port
// forwarding to meshfed-controller's Pod reaches the cluster's controller
// process, which serves its debug API on this machine's loopback as it
// would on its Pod's.
func (h *Harness) hooks() sandbox.PodHooks {
	hooks := h.runner.Hooks()
	hooks.PortForward = func(cluster string, pod *corev1.Pod, port int32) (net.Conn, error) {
		h.debugMu.Lock()
		addr := h.debug[cluster]
		h.debugMu.Unlock()
		if addr == "" || pod.Namespace != deploy.DefaultNamespace || pod.Labels[deploy.LabelName] != deploy.ControllerName || port != deploy.PortDebug {
			return nil, fmt.Errorf("the local clusters forward only meshfed-controller's debug port %d", deploy.PortDebug)
		}
		return net.Dial("tcp", addr)
	}
	return hooks
}

// Programs are meshfed's programs built from a checkout.
type Programs struct {
	Controller, Meshfed, Bookapp string
}

// BuildPrograms builds meshfed-controller, meshfed and the bookstore app
// from the meshfed checkout the process runs in (found by walking up from
// the working directory) into dir.
func BuildPrograms(ctx context.Context, dir string) (Programs, error) {
	repo, err := repoRoot()
	if err != nil {
		return Programs{}, err
	}
	p := Programs{Controller: filepath.Join(dir, "meshfed-controller"), Meshfed: filepath.Join(dir, "meshfed"), Bookapp: filepath.Join(dir, "bookapp")}
	for _, b := range []struct{ out, pkg string }{
		{p.Controller, "./cmd/meshfed-controller"}, {p.Meshfed, "./cmd/meshfed"}, {p.Bookapp, "./docs/example/app"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Dir = repo
		if msg, err := cmd.CombinedOutput(); err != nil {
			return Programs{}, fmt.Errorf("go build %s: %v\n%s", b.pkg, err, msg)
		}
	}
	return p, nil
}

// build builds the programs from the checkout the process runs in.
func (h *Harness) build(ctx context.Context) error {
	p, err := BuildPrograms(ctx, filepath.Join(h.dir, "bin"))
	if err != nil {
		return err
	}
	h.bins.controller, h.bins.meshfed, h.bins.bookapp = workloads.Program{Path: p.Controller}, p.Meshfed, workloads.Program{Path: p.Bookapp}
	return nil
}

// install does what a user does with `meshfed install` in each cluster and
// `meshfed cluster join <name> --peer-kubeconfig <first>` in the others.
func (h *Harness) install(ctx context.Context) error {
	first := h.clusters[h.cfg.Clusters[0]]
	for _, name := range h.cfg.Clusters {
		c := h.clusters[name]
		o := deploy.DefaultOptions()
		o.ClusterName = name
		o.Injector = true
		if h.cfg.SeparateNetworks {
			o.Network, o.GatewayAddresses = name, []string{c.gateway}
		}
		src := installer.CASource{}
		if c != first {
			src.RootFrom = first.Sandbox.Client()
		}
		if h.cfg.InstallControlPlane != nil {
			if err := h.cfg.InstallControlPlane(ctx, c.Kubeconfig, o); err != nil {
				return fmt.Errorf("install in %s: %w", name, err)
			}
		} else if _, err := c.Installer.InstallWithCA(ctx, o, src); err != nil {
			return fmt.Errorf("install in %s: %w", name, err)
		}
		if err := h.routeInjector(ctx, c, o); err != nil {
			return err
		}
		// Gossip on loopback, each cluster on its own port.
		certificate := ""
		if h.cfg.SVIDTTL > 0 {
			certificate = fmt.Sprintf(`,"certificate":{"serviceCertValidityDuration":%q}`, h.cfg.SVIDTTL.String())
		}
		patch := fmt.Sprintf(`{"spec":{"federation":{"bindAddress":"127.0.0.1","bindPort":%d,"advertiseAddress":"127.0.0.1","advertisePort":%d,"withdrawAfter":%q,"failStatic":%t}%s}}`,
			c.gossipPort, c.gossipPort, h.cfg.WithdrawAfter.String(), slices.Contains(h.cfg.FailStatic, name), certificate)
		if err := h.PatchMeshConfig(ctx, name, patch); err != nil {
			return err
		}
		for _, ns := range h.cfg.Namespaces {
			if err := h.Kubectl(ctx, name, "create", "namespace", ns); err != nil {
				return err
			}
		}
		if err := c.Installer.AddNamespaces(ctx, deploy.DefaultMeshName, h.cfg.Namespaces, installer.InjectionEnabled); err != nil {
			return err
		}
	}
	for _, name := range h.cfg.Clusters[1:] {
		out, err := exec.CommandContext(ctx, h.bins.meshfed, "cluster", "join", name,
			"--kubeconfig", h.clusters[name].Kubeconfig, "--peer-kubeconfig", first.Kubeconfig).CombinedOutput()
		fmt.Fprintf(h.log, "meshfed cluster join %s:\n%s\n", name, out)
		if err != nil {
			return fmt.Errorf("meshfed cluster join %s: %v\n%s", name, err, out)
		}
	}
	return nil
}

// routeInjector points the API server at the cluster's controller for
// sidecar injection. `meshfed install` names the controller's Service; the
// local clusters have no Service network, and the controller runs on this
// machine's loopback, so the webhook calls it by URL there (its serving
// certificate names localhost). Everything else about the webhook stays
// as installed.
func (h *Harness) routeInjector(ctx context.Context, c *Cluster, o deploy.Options) error {
	name := deploy.InjectorWebhookName(o)
	whs := c.Sandbox.Client().AdmissionregistrationV1().MutatingWebhookConfigurations()
	wh, err := whs.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the sidecar injector's webhook in %s: %w", c.Name, err)
	}
	url := "https://localhost:" + strings.TrimPrefix(c.webhook, "127.0.0.1:") + deploy.InjectorPath
	for i := range wh.Webhooks {
		wh.Webhooks[i].ClientConfig.Service, wh.Webhooks[i].ClientConfig.URL = nil, &url
	}
	if _, err := whs.Update(ctx, wh, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("route the sidecar injector's webhook in %s to %s: %w", c.Name, url, err)
	}
	return nil
}

// PatchMeshConfig merge-patches a cluster's MeshConfig.
func (h *Harness) PatchMeshConfig(ctx context.Context, cluster, patch string) error {
	c, err := h.cluster(cluster)
	if err != nil {
		return err
	}
	_, err = c.Installer.Dynamic().Resource(installer.MeshConfigGVR).Namespace(deploy.DefaultNamespace).
		Patch(ctx, deploy.MeshConfigName, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("patch MeshConfig in %s: %w", cluster, err)
	}
	return nil
}

func (h *Harness) cluster(name string) (*Cluster, error) {
	c := h.clusters[name]
	if c == nil {
		return nil, fmt.Errorf("federated: no cluster %q", name)
	}
	return c, nil
}

// StartController runs meshfed-controller for a cluster as a local process
// configured as `meshfed install` configures it, serving xDS and issuing on
// Unix sockets that the workloads' network namespace can reach. It returns
// once the controller serves: its issuer listens and /readyz says its
// first configuration is built.
func (h *Harness) StartController(ctx context.Context, cluster string) error {
	c, err := h.cluster(cluster)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.controller != nil {
		return fmt.Errorf("federated: %s's controller is running", cluster)
	}
	if c.ctrlLog == nil {
		if c.ctrlLog, err = os.Create(c.ctrlLogPath); err != nil {
			return err
		}
	}
	_ = os.Remove(c.xdsSock)
	_ = os.Remove(c.issuerSock)
	args := append(slices.Clone(h.bins.controller.Args),
		"--kubeconfig", c.Kubeconfig,
		"--xds-address", "unix://"+c.xdsSock,
		"--issuer-address", "unix://"+c.issuerSock,
		"--metrics-address", c.metrics,
		"--webhook-address", c.webhook,
		"--debug-address", c.debug,
		"--serving-name", "localhost",
		"--log-level", "info",
	)
	if h.cfg.Debounce > 0 {
		args = append(args, "--debounce", h.cfg.Debounce.String())
	}
	cmd := exec.Command(h.bins.controller.Path, args...)
	cmd.Stdout, cmd.Stderr = c.ctrlLog, c.ctrlLog
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start meshfed-controller for %s: %w", c.Name, err)
	}
	fmt.Fprintf(c.ctrlLog, "--- harness: started meshfed-controller pid %d at %s\n", cmd.Process.Pid, time.Now().Format(time.RFC3339Nano))
	p := &process{cmd: cmd, done: make(chan struct{})}
	c.controller = p
	go func() { p.err = cmd.Wait(); close(p.done) }()
	// Generous: a first configuration of a large cluster, on a shared
	// machine, takes a while.
	deadline := time.Now().Add(2 * time.Minute)
	for !c.serving() {
		select {
		case <-p.done:
			c.controller = nil
			return fmt.Errorf("meshfed-controller for %s exited (%v); see %s", c.Name, p.err, c.ctrlLogPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("meshfed-controller for %s did not start serving within 2 minutes; see %s", c.Name, c.ctrlLogPath)
		}
	}
	h.registerCluster(c)
	return nil
}

// serving says whether a cluster's controller listens on its issuer socket
// and answers /readyz.
func (c *Cluster) serving() bool {
	if _, err := os.Stat(c.issuerSock); err != nil {
		return false
	}
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + c.metrics + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (h *Harness) registerCluster(c *Cluster) {
	svc := deploy.ControllerName + "." + deploy.DefaultNamespace + ".svc"
	h.runner.AddCluster(c.Name, workloads.Cluster{
		Client: c.Sandbox.Client(), Network: h.nets[c.Name],
		Services: map[string]string{
			fmt.Sprintf("%s:%d", svc, deploy.PortIssuer): "unix://" + c.issuerSock,
			fmt.Sprintf("%s:%d", svc, deploy.PortXDS):    "unix://" + c.xdsSock,
		},
	})
}

// PodsDir holds each workload's files: <cluster>/<namespace>/<pod>/volumes
// has a directory for each of the Pod's volumes (an injected agent writes
// certificate.pem, private_key.pem and ca_certificate.pem into
// volumes/meshfed/certs).
func (h *Harness) PodsDir() string { return filepath.Join(h.dir, "pods") }

// StopController kills a cluster's controller (SIGKILL), as losing its
// control plane would. Its workloads keep running.
func (h *Harness) StopController(cluster string) {
	c := h.clusters[cluster]
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.controller == nil {
		return
	}
	_ = c.controller.cmd.Process.Signal(syscall.SIGKILL)
	<-c.controller.done
	fmt.Fprintf(c.ctrlLog, "--- harness: killed meshfed-controller at %s\n", time.Now().Format(time.RFC3339Nano))
	c.controller = nil
}

// ShutDownController stops a cluster's controller as Kubernetes stops its
// Pod: SIGTERM, then SIGKILL if it has not exited within grace. The error
// says if it did not exit on its own in time, or exited with a failure.
func (h *Harness) ShutDownController(cluster string, grace time.Duration) error {
	c, err := h.cluster(cluster)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.controller
	if p == nil {
		return nil
	}
	c.controller = nil
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		fmt.Fprintf(c.ctrlLog, "--- harness: killed meshfed-controller, still running %s after SIGTERM, at %s\n", grace, time.Now().Format(time.RFC3339Nano))
		return fmt.Errorf("meshfed-controller for %s did not stop within %s of SIGTERM; see %s", c.Name, grace, c.ctrlLogPath)
	}
	fmt.Fprintf(c.ctrlLog, "--- harness: meshfed-controller stopped on SIGTERM (%v) at %s\n", p.err, time.Now().Format(time.RFC3339Nano))
	if p.err != nil {
		return fmt.Errorf("meshfed-controller for %s, stopped with SIGTERM: %w; see %s", c.Name, p.err, c.ctrlLogPath)
	}
	return nil
}

// ControllerPID is the process ID of a cluster's running controller, 0 if
// none runs.
func (h *Harness) ControllerPID(cluster string) int {
	c := h.clusters[cluster]
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.controller == nil {
		return 0
	}
	return c.controller.cmd.Process.Pid
}

// StopWorkloads kills every workload process of a cluster, as losing the
// cluster would. Its API server still says the Pods run.
func (h *Harness) StopWorkloads(cluster string) { h.runner.StopCluster(cluster) }

// RestartWorkloads brings a cluster's workloads back as a cluster that
// returns does: its Pods in the harness's namespaces are deleted, their
// Deployments make new ones, and the sandbox runs a process for each.
func (h *Harness) RestartWorkloads(ctx context.Context, cluster string) error {
	for _, ns := range h.cfg.Namespaces {
		if err := h.Kubectl(ctx, cluster, "delete", "pods", "--all", "-n", ns, "--wait=false"); err != nil {
			return err
		}
	}
	return nil
}

// Kubectl runs kubectl against a cluster; its output goes to the log.
func (h *Harness) Kubectl(ctx context.Context, cluster string, args ...string) error {
	_, err := h.KubectlOutput(ctx, cluster, args...)
	return err
}

// KubectlOutput runs kubectl against a cluster and returns its output.
func (h *Harness) KubectlOutput(ctx context.Context, cluster string, args ...string) (string, error) {
	c, err := h.cluster(cluster)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, h.bins.kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	fmt.Fprintf(h.log, "kubectl (%s) %s:\n%s\n", c.Name, strings.Join(args, " "), out)
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s in %s: %v: %s", strings.Join(args, " "), c.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Meshfed runs the meshfed CLI against a cluster and returns its output.
func (h *Harness) Meshfed(ctx context.Context, cluster string, args ...string) (string, error) {
	c, err := h.cluster(cluster)
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, h.bins.meshfed, append(args, "--kubeconfig", c.Kubeconfig)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("meshfed %s in %s: %v: %s", strings.Join(args, " "), c.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Apply applies manifests under docs/example/manifests in a cluster.
func (h *Harness) Apply(ctx context.Context, cluster string, manifests ...string) error {
	for _, m := range manifests {
		if err := h.Kubectl(ctx, cluster, "apply", "-f", h.Manifest(m)); err != nil {
			return err
		}
	}
	return nil
}

// ApplyAll applies steps in order.
func (h *Harness) ApplyAll(ctx context.Context, steps []Step) error {
	for _, s := range steps {
		if err := h.Apply(ctx, s.Cluster, s.Manifest); err != nil {
			return err
		}
	}
	return nil
}

// Stop stops every process the harness started: workloads, controllers,
// clusters, the pod network.
func (h *Harness) Stop() error {
	var errs []error
	if h.runner != nil {
		h.runner.StopAll()
	}
	h.linksMu.Lock()
	for k, p := range h.links {
		p.stop()
		delete(h.links, k)
	}
	h.linksMu.Unlock()
	for _, c := range h.clusters {
		h.StopController(c.Name)
		if c.ctrlLog != nil {
			c.ctrlLog.Close()
		}
	}
	if h.sb != nil {
		if err := h.sb.Stop(); err != nil {
			errs = append(errs, err)
		}
		h.sb = nil
	}
	closed := map[*workloads.UserNetwork]bool{}
	for _, n := range h.nets {
		if !closed[n] {
			closed[n] = true
			if err := n.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	h.nets = nil
	if h.log != nil {
		h.log.Close()
	}
	return errors.Join(errs...)
}

// FreePort returns a port free on 127.0.0.1 now, for TCP and UDP, for a
// process started later to listen on. It is picked at random below the
// kernel's ephemeral range: a port the kernel hands out (to a socket bound
// to port 0, or as a connection's source port) would be taken by another
// test process between now and then more often than a random one.
func FreePort() (int, error) {
	lo, hi := 10000, ephemeralLow()
	for range 200 {
		p := lo + rand.IntN(hi-lo)
		if portFree(p) {
			return p, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portFree reports whether p can be bound on 127.0.0.1 for TCP and UDP.
func portFree(p int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	return u.Close() == nil
}

// ephemeralLow is the low end of the kernel's ephemeral port range
// (32768 where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	v, err := strconv.Atoi(f[0])
	if err != nil || v <= 11000 {
		return 32768
	}
	return v
}

// repoRoot finds the meshfed checkout the harness runs from: its manifests
// and programs are what it applies and builds.
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
			return "", errors.New("run it from a meshfed checkout (go run ./cmd/meshfed demo)")
		}
	}
}
