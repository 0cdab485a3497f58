// Package workloads runs real processes for each Pod a local cluster
// starts, from the spec the API server stored: the sandbox's kubelet
// stand-in calls Hooks().Start and Stop, and the runner plays the Pod's
// containers as local programs with their arguments and environment —
// native sidecars (init containers with restartPolicy Always) first, each
// one's startup probe passing before the next starts, then the app. What
// a container runtime and cluster DNS would provide is played too (pod.go):
// every volume is a directory filled as the kubelet fills it (ConfigMaps,
// Secrets, a projected token from a TokenRequest bound to the Pod), and
// the paths and Service addresses in arguments and environment are
// rewritten to those directories and to where the local cluster serves
// the Service. So a Pod that meshfed's injector gave an agent runs that
// agent, with the arguments the injector chose.
//
// It runs only Pods whose containers' images it has a program for
// (Config.Images: the demo's meshfed/bookapp, meshfed/meshfed, the
// gateway's Envoy played by the local clusters' stand-in); every other
// Pod is left as the sandbox made it, and so are Pods injected with the
// Envoy data plane, which needs an Envoy this machine does not have.
// Pods of one cluster share its network namespace, so each process is told
// its pod's address (MESHFED_POD_IP) to listen and dial from, as a pod's
// own network would make it. Used by the end-to-end tests and by
// `meshfed demo`.
package workloads

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/localmesh/gateway"
	"github.com/meshfed/meshfed/sandbox"
)

// Program is a local binary and the arguments it starts with.
type Program struct {
	Path string
	Args []string
}

// Config configures a Runner.
type Config struct {
	// Images maps an image repository (the image without its tag) to the
	// local program that plays it, e.g. "meshfed/bookapp" → bookapp; the
	// container's arguments follow the program's own. A Pod is run when
	// one of its containers' images is here; its native sidecars are run
	// when theirs are.
	Images map[string]Program
	// Meshfed is the meshfed CLI binary: it plays meshfed/meshfed (when
	// Images does not say otherwise) and the `meshfed` that probes run.
	Meshfed string
	// Dir holds each workload's volumes.
	Dir string
	// Env is added to every app's environment (after the Pod's own).
	Env []string
	// OnOutput, if set, receives every line an app writes to stdout. It is
	// called from one goroutine per workload and must not block for long.
	OnOutput func(w Workload, line []byte)
	// Log receives the workloads' stderr and the runner's own messages.
	Log io.Writer
}

// Cluster is what the runner needs to know about one cluster; register it
// with AddCluster once the cluster and its controller are up.
type Cluster struct {
	// Client talks to the cluster's API server: volumes' ConfigMaps,
	// Secrets and TokenRequests.
	Client kubernetes.Interface
	// Network is where the cluster's workloads run; each Pod's address is
	// added to it. Nil runs them in the runner's own network namespace
	// (then Pod addresses must exist already).
	Network PodNetwork
	// Services maps each host:port a Pod reaches through cluster DNS, as
	// its spec names it (meshfed-controller.meshfed-system.svc:15129), to
	// the address the local cluster serves it on, in gRPC target syntax
	// (unix:///path/issuer.sock), as reached from inside Network.
	Services map[string]string
}

// PodNetwork is a network namespace that pod addresses are put on and
// workloads run in, such as a UserNetwork.
type PodNetwork interface {
	// AddAddress makes a pod address exist in the network.
	AddAddress(ip string) error
	// Command returns a command that runs name inside the network.
	Command(name string, args ...string) *exec.Cmd
}

// Workload names one running Pod.
type Workload struct {
	Cluster, Namespace, Pod, ServiceAccount string
	Labels                                  map[string]string
}

// Runner starts and stops workloads. Safe for concurrent use.
type Runner struct {
	cfg      Config
	mu       sync.Mutex
	clusters map[string]Cluster
	running  map[string]*proc // cluster/namespace/pod
}

type proc struct {
	w        Workload
	ip       string
	sidecars []*exec.Cmd // in the order they started
	app      *exec.Cmd
	done     chan struct{} // closed when the app has exited and its output is read
}

// New returns a Runner.
func New(cfg Config) *Runner {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	images := maps.Clone(cfg.Images)
	if images == nil {
		images = map[string]Program{}
	}
	if _, ok := images[MeshfedImage]; !ok && cfg.Meshfed != "" {
		images[MeshfedImage] = Program{Path: cfg.Meshfed}
	}
	cfg.Images = images
	return &Runner{cfg: cfg, clusters: map[string]Cluster{}, running: map[string]*proc{}}
}

// MeshfedImage is the repository of meshfed's image: the CLI, controller
// and agent.
const MeshfedImage = "meshfed/meshfed"

// AddCluster registers a cluster. Pods of clusters not registered yet
// are retried by the sandbox until they are.
func (r *Runner) AddCluster(name string, c Cluster) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clusters[name] = c
}

// Hooks returns the sandbox hooks that drive the runner.
func (r *Runner) Hooks() sandbox.PodHooks {
	return sandbox.PodHooks{Start: r.start, Stop: r.stop}
}

// At returns the running workload with pod address ip.
func (r *Runner) At(ip string) (Workload, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.running {
		if p.ip == ip {
			return p.w, true
		}
	}
	return Workload{}, false
}

// StopAll stops every workload (tests' cleanup).
func (r *Runner) StopAll() {
	r.mu.Lock()
	procs := r.running
	r.running = map[string]*proc{}
	r.mu.Unlock()
	for _, p := range procs {
		p.terminate()
	}
}

// program is the local program that plays image, if any.
func (r *Runner) program(image string) (Program, bool) {
	repo := image
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	p, ok := r.cfg.Images[repo]
	return p, ok
}

// played returns the Pod's container the runner runs as its app and the
// program that plays it (nil, zero Program: none).
func (r *Runner) played(pod *corev1.Pod) (*corev1.Container, Program) {
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if p, ok := r.program(c.Image); ok {
			return c, p
		}
	}
	return nil, Program{}
}

// injectedEnvoy is the annotation meshfed's injector puts on a Pod it gave
// the Envoy data plane.
const injectedAnnotation, injectedEnvoy = "meshfed.io/injected", "envoy"

func (r *Runner) start(ctx context.Context, cluster string, pod *corev1.Pod) error {
	app, bin := r.played(pod)
	if app == nil {
		return nil // not ours to run
	}
	key := cluster + "/" + pod.Namespace + "/" + pod.Name
	if pod.Annotations[injectedAnnotation] == injectedEnvoy {
		fmt.Fprintf(r.cfg.Log, "workloads: %s has the Envoy data plane, which needs an Envoy the local clusters do not have: not run\n", key)
		return nil
	}
	r.mu.Lock()
	c, ok := r.clusters[cluster]
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("workloads: cluster %s is not registered yet", cluster)
	}
	if c.Network != nil {
		if err := c.Network.AddAddress(pod.Status.PodIP); err != nil {
			return err
		}
	}
	dir := filepath.Join(r.cfg.Dir, cluster, pod.Namespace, pod.Name)
	vols, err := volumes(ctx, c.Client, pod, dir)
	if err != nil {
		return fmt.Errorf("workloads: %w", err)
	}
	w := Workload{Cluster: cluster, Namespace: pod.Namespace, Pod: pod.Name, ServiceAccount: serviceAccount(pod), Labels: pod.Labels}
	p := &proc{w: w, ip: pod.Status.PodIP, done: make(chan struct{})}
	fail := func(err error) error {
		p.stopSidecars()
		return fmt.Errorf("workloads: %s: %w", key, err)
	}
	extra := []string{"CLUSTER_NAME=" + cluster, gateway.EnvPodIP + "=" + pod.Status.PodIP}
	// Native sidecars, in order, each started once the one before it
	// passed its startup probe.
	for i := range pod.Spec.InitContainers {
		spec := &pod.Spec.InitContainers[i]
		prog, ok := r.program(spec.Image)
		if spec.RestartPolicy == nil || *spec.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			fmt.Fprintf(r.cfg.Log, "workloads: %s: init container %s is not run (only native sidecars are)\n", key, spec.Name)
			continue
		}
		if !ok {
			return fail(fmt.Errorf("no program plays sidecar %s's image %s", spec.Name, spec.Image))
		}
		ct, err := newContainer(pod, spec, vols, c.Services)
		if err != nil {
			return fail(err)
		}
		cmd := r.command(c.Network, prog.Path, append(slices.Clone(prog.Args), ct.args(spec.Args)...)...)
		cmd.Env = append(append(os.Environ(), ct.env...), extra...)
		prefix := key + " " + spec.Name + ": "
		cmd.Stdout, cmd.Stderr = prefixed(r.cfg.Log, prefix), prefixed(r.cfg.Log, prefix)
		if err := cmd.Start(); err != nil {
			return fail(fmt.Errorf("sidecar %s: %w", spec.Name, err))
		}
		p.sidecars = append(p.sidecars, cmd)
		if err := r.waitStarted(ctx, c.Network, ct); err != nil {
			return fail(fmt.Errorf("sidecar %s did not pass its startup probe: %w", spec.Name, err))
		}
	}
	ct, err := newContainer(pod, app, vols, c.Services)
	if err != nil {
		return fail(err)
	}
	cmd := r.command(c.Network, bin.Path, append(slices.Clone(bin.Args), ct.args(app.Args)...)...)
	cmd.Env = append(append(append(os.Environ(), ct.env...), r.cfg.Env...), extra...)
	cmd.Stderr = prefixed(r.cfg.Log, key+": ")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	p.app = cmd
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if r.cfg.OnOutput != nil {
				r.cfg.OnOutput(w, append([]byte(nil), sc.Bytes()...))
			}
		}
		_ = cmd.Wait()
	}()
	r.mu.Lock()
	old := r.running[key]
	r.running[key] = p
	r.mu.Unlock()
	if old != nil {
		old.terminate()
	}
	fmt.Fprintf(r.cfg.Log, "workloads: started %s (%s, %d sidecars, sa %s, ip %s)\n", key, bin.Path, len(p.sidecars), w.ServiceAccount, pod.Status.PodIP)
	return nil
}

// waitStarted runs a container's startup probe until it passes, as often
// as every 100 ms (the kubelet waits periodSeconds; the local clusters do
// not need to), for as long as the probe allows and at least 30 s.
func (r *Runner) waitStarted(ctx context.Context, network PodNetwork, ct *container) error {
	p := ct.spec.StartupProbe
	if p == nil {
		return nil
	}
	limit := max(30*time.Second, time.Duration(p.PeriodSeconds*max(p.FailureThreshold, 1))*time.Second)
	deadline := time.Now().Add(limit)
	programs := map[string]string{"meshfed": r.cfg.Meshfed}
	for {
		err := ct.probe(ctx, network, programs)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (r *Runner) stop(cluster string, pod *corev1.Pod) {
	key := cluster + "/" + pod.Namespace + "/" + pod.Name
	r.mu.Lock()
	p := r.running[key]
	delete(r.running, key)
	r.mu.Unlock()
	if p != nil {
		p.terminate()
		fmt.Fprintf(r.cfg.Log, "workloads: stopped %s\n", key)
	}
}

// command runs name in the network (nil: this process's own), killed if
// the runner dies.
func (r *Runner) command(network PodNetwork, name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if network == nil {
		cmd = exec.Command(name, args...)
	} else {
		cmd = network.Command(name, args...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// StopCluster stops every workload of one cluster, as losing the cluster
// would.
func (r *Runner) StopCluster(cluster string) {
	r.StopMatching(func(w Workload) bool { return w.Cluster == cluster })
}

// StopMatching stops every workload match accepts.
func (r *Runner) StopMatching(match func(Workload) bool) {
	r.mu.Lock()
	var stop []*proc
	for key, p := range r.running {
		if match(p.w) {
			stop = append(stop, p)
			delete(r.running, key)
		}
	}
	r.mu.Unlock()
	for _, p := range stop {
		p.terminate()
	}
}

// podEnv evaluates a container's environment: values and the downward-API
// fields a workload needs (pod name, namespace, IP, SA).
func podEnv(pod *corev1.Pod, c *corev1.Container) []string {
	var env []string
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				v = pod.Name
			case "metadata.namespace":
				v = pod.Namespace
			case "status.podIP":
				v = pod.Status.PodIP
			case "spec.serviceAccountName":
				v = pod.Spec.ServiceAccountName
			case "spec.nodeName":
				v = pod.Spec.NodeName
			}
		}
		env = append(env, e.Name+"="+v)
	}
	return env
}

func (p *proc) terminate() {
	if p.app.Process != nil {
		_ = p.app.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range p.sidecars {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		kill(p.app)
		<-p.done
	}
	p.stopSidecars()
}

// stopSidecars kills the Pod's sidecars, last started first.
func (p *proc) stopSidecars() {
	for _, c := range slices.Backward(p.sidecars) {
		kill(c)
	}
}

func kill(c *exec.Cmd) {
	if c.Process == nil {
		return
	}
	_ = c.Process.Kill()
	if c.ProcessState == nil {
		_, _ = c.Process.Wait()
	}
}

// prefixed writes each line to w with a prefix.
func prefixed(w io.Writer, prefix string) io.Writer {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Fprintf(w, "%s%s\n", prefix, sc.Text())
		}
	}()
	return pw
}
