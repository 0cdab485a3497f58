// Package workloads runs a real process for each Pod a local cluster
// starts: the sandbox's kubelet stand-in calls Hooks().Start and Stop, and
// the runner starts `meshfed agent` (an SVID for the Pod's ServiceAccount,
// from the controller's issuer, with a TokenRequest token bound to the Pod)
// and the Pod's "app" container as a local program, with the Pod's
// arguments and environment, inside a network namespace where the Pod's
// address exists (see PodNetwork).
//
// It runs only Pods with a container whose image is one of Config.Images
// (the demo's meshfed/bookapp, the gateway's Envoy played by the local
// clusters' stand-in); every other Pod is left as the sandbox made it.
// Pods of one cluster share its network namespace, so each process is told
// its pod's address (MESHFED_POD_IP) to listen and dial from, as a pod's
// own network would make it. Used by the end-to-end tests and by
// `meshfed demo`.
package workloads

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

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
	// container's arguments follow the program's own. The first of a Pod's
	// containers whose image is here is run.
	Images map[string]Program
	// Meshfed is the meshfed CLI binary, for `meshfed agent`.
	Meshfed string
	// Dir holds each workload's certificates, bootstrap and output.
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
	// Client talks to the cluster's API server (TokenRequests).
	Client kubernetes.Interface
	// Network is where the cluster's workloads run; each Pod's address is
	// added to it. Nil runs them in the runner's own network namespace
	// (then Pod addresses must exist already).
	Network PodNetwork
	// IssuerAddress and XDSAddress are the controller's, as reached from
	// inside Network.
	IssuerAddress, XDSAddress string
	// TrustDomain is the mesh's SPIFFE trust domain.
	TrustDomain string
	// IssuerID is the SPIFFE ID the controller's issuer presents; the agent
	// gives its token to no other.
	IssuerID string
	// BundlePEM is the trust bundle the agent verifies the issuer with.
	BundlePEM []byte
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
	w          Workload
	ip         string
	agent, app *exec.Cmd
	done       chan struct{} // closed when the app has exited and its output is read
}

// New returns a Runner.
func New(cfg Config) *Runner {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	return &Runner{cfg: cfg, clusters: map[string]Cluster{}, running: map[string]*proc{}}
}

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

// played returns the Pod's container the runner runs and the program that
// plays it (nil, zero Program: none).
func (r *Runner) played(pod *corev1.Pod) (*corev1.Container, Program) {
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		repo := c.Image
		if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
			repo = repo[:i]
		}
		if p, ok := r.cfg.Images[repo]; ok {
			return c, p
		}
	}
	return nil, Program{}
}

func (r *Runner) start(ctx context.Context, cluster string, pod *corev1.Pod) error {
	container, bin := r.played(pod)
	if container == nil {
		return nil // not ours to run
	}
	r.mu.Lock()
	c, ok := r.clusters[cluster]
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("workloads: cluster %s is not registered yet", cluster)
	}
	key := cluster + "/" + pod.Namespace + "/" + pod.Name
	netns := c.Network
	if c.Network != nil {
		if err := c.Network.AddAddress(pod.Status.PodIP); err != nil {
			return err
		}
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	dir := filepath.Join(r.cfg.Dir, cluster, pod.Namespace, pod.Name)
	certs := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		return err
	}
	bundleFile := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundleFile, c.BundlePEM, 0o600); err != nil {
		return err
	}
	exp := int64(3600)
	tr, err := c.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{"meshfed"},
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("workloads: token for %s/%s: %w", pod.Namespace, sa, err)
	}
	w := Workload{Cluster: cluster, Namespace: pod.Namespace, Pod: pod.Name, ServiceAccount: sa, Labels: pod.Labels}
	bootstrapFile := filepath.Join(dir, "bootstrap.json")
	agent := r.command(netns, r.cfg.Meshfed, "agent",
		"--issuer-address="+c.IssuerAddress, "--issuer-id="+c.IssuerID, "--trust-domain="+c.TrustDomain,
		"--token="+tr.Status.Token, "--bundle-file="+bundleFile, "--out-dir="+certs,
		"--bootstrap="+bootstrapFile, "--xds-address="+c.XDSAddress,
		"--node-id="+pod.Namespace+"/"+pod.Name, "--min-retry=200ms", "--max-retry=5s")
	if agentArg(pod, "--xds-sni") {
		agent.Args = append(agent.Args, "--xds-sni")
	}
	agent.Stdout, agent.Stderr = prefixed(r.cfg.Log, key+" agent: "), prefixed(r.cfg.Log, key+" agent: ")
	if err := agent.Start(); err != nil {
		return fmt.Errorf("workloads: meshfed agent for %s: %w", key, err)
	}
	if err := waitForFile(ctx, filepath.Join(certs, "certificate.pem"), 30*time.Second); err != nil {
		kill(agent)
		return fmt.Errorf("workloads: %s: no certificate from the issuer: %w", key, err)
	}
	app := r.command(netns, bin.Path, append(slices.Clone(bin.Args), container.Args...)...)
	app.Env = append(append(os.Environ(), podEnv(pod, container)...), r.cfg.Env...)
	app.Env = append(app.Env, "GRPC_XDS_BOOTSTRAP="+bootstrapFile, "MESHFED_CERT_DIR="+certs, "CLUSTER_NAME="+cluster,
		"MESHFED_POD_IP="+pod.Status.PodIP)
	app.Stderr = prefixed(r.cfg.Log, key+": ")
	out, err := app.StdoutPipe()
	if err != nil {
		kill(agent)
		return err
	}
	if err := app.Start(); err != nil {
		kill(agent)
		return fmt.Errorf("workloads: %s: %w", key, err)
	}
	p := &proc{w: w, ip: pod.Status.PodIP, agent: agent, app: app, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if r.cfg.OnOutput != nil {
				r.cfg.OnOutput(w, append([]byte(nil), sc.Bytes()...))
			}
		}
		_ = app.Wait()
	}()
	r.mu.Lock()
	old := r.running[key]
	r.running[key] = p
	r.mu.Unlock()
	if old != nil {
		old.terminate()
	}
	fmt.Fprintf(r.cfg.Log, "workloads: started %s (%s, sa %s, ip %s)\n", key, bin, sa, pod.Status.PodIP)
	return nil
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

// agentArg says whether the Pod's meshfed agent container (a native
// sidecar or a container) is given arg: the runner runs its own agent with
// the local clusters' addresses, and passes on what the Pod declares.
func agentArg(pod *corev1.Pod, arg string) bool {
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		if len(c.Args) > 0 && c.Args[0] == "agent" && slices.Contains(c.Args, arg) {
			return true
		}
	}
	return false
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
	for _, c := range []*exec.Cmd{p.app, p.agent} {
		if c.Process != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		kill(p.app)
		<-p.done
	}
	kill(p.agent)
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

func waitForFile(ctx context.Context, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for " + path)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
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
