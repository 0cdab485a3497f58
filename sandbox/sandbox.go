package sandbox

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

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshfed/meshfed/mesh"
)

// Config describes the clusters to start.
type Config struct {
	// Clusters names the clusters, in order; the i-th gets pod CIDR
	// 10.244.<i+1>.0/24 and service CIDR 10.96.<i+1>.0/24. Names must be
	// DNS labels and unique.
	Clusters []string
	// Dir holds each cluster's data, certificates and kubeconfig
	// (<Dir>/<cluster>/kubeconfig). Empty: a new temporary directory that
	// Stop removes.
	Dir string
	// Assets says where to find or build the binaries.
	Assets AssetsOptions
	// Log receives progress and the control-plane processes' output
	// (prefixed with the cluster name); nil discards it.
	Log io.Writer
	// Hooks, if set, are called as the sandbox's kubelet starts and stops
	// Pods, so that a caller can run a process for each Pod.
	Hooks PodHooks
	// PodCIDR overrides the pod address range per cluster
	// (cluster name → CIDR of a /24). Empty: 10.244.<i+1>.0/24.
	PodCIDR map[string]string
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if len(c.Clusters) == 0 {
		errs = append(errs, errors.New("no clusters named"))
	}
	if len(c.Clusters) > 200 {
		errs = append(errs, fmt.Errorf("%d clusters named, at most 200", len(c.Clusters)))
	}
	seen := map[string]bool{}
	for _, n := range c.Clusters {
		if !mesh.IsDNS1123Label(n) {
			errs = append(errs, fmt.Errorf("cluster name %q is not a DNS label", n))
		}
		if seen[n] {
			errs = append(errs, fmt.Errorf("cluster name %q given twice", n))
		}
		seen[n] = true
	}
	for n, cidr := range c.PodCIDR {
		if _, ipn, err := net.ParseCIDR(cidr); err != nil || ipn.IP.To4() == nil {
			errs = append(errs, fmt.Errorf("pod CIDR %q for cluster %s is not an IPv4 CIDR", cidr, n))
		}
	}
	return errors.Join(errs...)
}

// Sandbox is a set of running local clusters.
type Sandbox struct {
	bin      string
	dir      string
	tempDir  bool
	clusters []*Cluster
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// Cluster is one running local cluster.
type Cluster struct {
	// Name is the cluster's name.
	Name string
	// Index is the cluster's position in Config.Clusters, from 0.
	Index int
	// KubeconfigPath is an admin kubeconfig for this cluster.
	KubeconfigPath string
	// Zone is the topology.kubernetes.io/zone of the cluster's Node.
	Zone string
	// PodCIDR is the range pod addresses are taken from.
	PodCIDR string
	// NodeName is the name of the cluster's single Node.
	NodeName string

	env     *envtest.Environment
	cfg     *rest.Config
	client  kubernetes.Interface
	kcm     *exec.Cmd
	kcmDone chan error
	dir     string
	// kubeletTLS is the API server ↔ kubelet stand-in trust.
	kubeletTLS kubeletTLS
}

// RESTConfig returns an admin client configuration for the cluster.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.cfg) }

// Client returns an admin clientset for the cluster.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// Dir is the cluster's data directory.
func (c *Cluster) Dir() string { return c.dir }

// BinDir is the directory holding the control-plane binaries and kubectl.
func (s *Sandbox) BinDir() string { return s.bin }

// Clusters returns the running clusters in the order they were named.
func (s *Sandbox) Clusters() []*Cluster { return s.clusters }

// Cluster returns the named cluster, or nil.
func (s *Sandbox) Cluster(name string) *Cluster {
	for _, c := range s.clusters {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Start builds or finds the binaries and starts every named cluster: etcd,
// kube-apiserver, kube-controller-manager and the sandbox's kubelet stand-in.
// It returns when every cluster serves requests and has a Ready Node. Stop
// the sandbox with Stop; cancelling ctx also stops the kubelet stand-ins but
// not the processes.
func Start(ctx context.Context, cfg Config) (_ *Sandbox, err error) {
	quietEnvtest()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = io.Discard
	}
	if cfg.Assets.Progress == nil {
		cfg.Assets.Progress = log
	}
	bin, err := EnsureBinaries(cfg.Assets)
	if err != nil {
		return nil, err
	}
	s := &Sandbox{dir: cfg.Dir, bin: bin}
	if s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "meshfed-sandbox-"); err != nil {
			return nil, err
		}
		s.tempDir = true
	}
	// envtest starts etcd and the API server in process groups of their
	// own; wrappers make them die with this process even when it is
	// killed, so no cluster outlives its test or supervisor.
	runBin, err := dieWithParent(bin, filepath.Join(s.dir, ".bin"))
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	defer func() {
		if err != nil {
			_ = s.Stop()
		}
	}()
	for i, name := range cfg.Clusters {
		podCIDR := cfg.PodCIDR[name]
		if podCIDR == "" {
			podCIDR = fmt.Sprintf("10.244.%d.0/24", i+1)
		}
		c, err := startCluster(ctx, runBin, s.dir, name, i, podCIDR, log)
		if c != nil {
			s.clusters = append(s.clusters, c)
		}
		if err != nil {
			return nil, fmt.Errorf("sandbox: cluster %s: %w", name, err)
		}
		k, err := newKubelet(c, cfg.Hooks, log)
		if err != nil {
			return nil, fmt.Errorf("sandbox: cluster %s: %w", name, err)
		}
		if k.apiPort, err = k.serveAPI(runCtx, c.kubeletTLS); err != nil {
			return nil, fmt.Errorf("sandbox: cluster %s: kubelet API: %w", name, err)
		}
		if err := k.registerNode(ctx); err != nil {
			return nil, fmt.Errorf("sandbox: cluster %s: register node: %w", name, err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			k.run(runCtx)
		}()
	}
	return s, nil
}

// Stop stops every cluster's processes and the kubelet stand-ins and returns
// when they have exited. It removes the data directory if Start made it.
func (s *Sandbox) Stop() error {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	var errs []error
	for i := len(s.clusters) - 1; i >= 0; i-- {
		if err := s.clusters[i].stop(); err != nil {
			errs = append(errs, fmt.Errorf("cluster %s: %w", s.clusters[i].Name, err))
		}
	}
	if s.tempDir {
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func startCluster(ctx context.Context, bin, root, name string, index int, podCIDR string, log io.Writer) (*Cluster, error) {
	dir := filepath.Join(root, name)
	// Every start is a fresh cluster: envtest would not regenerate the
	// serving certificates of a directory that has them.
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	for _, d := range []string{"apiserver", "etcd"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	out := &prefixWriter{w: log, prefix: name + ": "}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    bin,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(dir, "etcd"), Out: out, Err: out}
	api := &envtest.APIServer{CertDir: filepath.Join(dir, "apiserver"), Out: out, Err: out}
	args := api.Configure()
	// The API server refuses a loopback advertise address unless it is
	// not asked to publish its own endpoints.
	args.Set("advertise-address", "127.0.0.1")
	args.Set("endpoint-reconciler-type", "none")
	args.Set("service-cluster-ip-range", fmt.Sprintf("10.96.%d.0/24", index+1))
	// The API server reaches the kubelet stand-in's API (port forwarding)
	// at the Node's InternalDNS address, localhost, over TLS both ways.
	ktls, err := makeKubeletTLS(filepath.Join(dir, "apiserver"))
	if err != nil {
		return nil, err
	}
	args.Set("kubelet-preferred-address-types", "InternalDNS")
	args.Set("kubelet-certificate-authority", ktls.CAFile)
	args.Set("kubelet-client-certificate", ktls.ClientCert)
	args.Set("kubelet-client-key", ktls.ClientKey)
	env.ControlPlane.APIServer = api
	if _, err := env.Start(); err != nil {
		return nil, fmt.Errorf("start API server: %w", err)
	}
	c := &Cluster{
		Name:       name,
		Index:      index,
		Zone:       name + "-a",
		PodCIDR:    podCIDR,
		NodeName:   "sandbox-" + name,
		env:        env,
		kubeletTLS: ktls,
		dir:        dir,
	}
	admin, err := env.AddUser(envtest.User{Name: "meshfed-sandbox-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = c.stop()
		return nil, fmt.Errorf("make admin user: %w", err)
	}
	c.cfg = admin.Config()
	c.KubeconfigPath = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(c.KubeconfigPath, name, c.cfg); err != nil {
		_ = c.stop()
		return nil, err
	}
	if c.client, err = kubernetes.NewForConfig(c.cfg); err != nil {
		_ = c.stop()
		return nil, err
	}
	if err := c.startControllerManager(bin, out); err != nil {
		_ = c.stop()
		return nil, fmt.Errorf("start controller manager: %w", err)
	}
	if err := c.waitForControllers(ctx); err != nil {
		_ = c.stop()
		return nil, err
	}
	return c, nil
}

// startControllerManager runs the real kube-controller-manager with every
// controller except those that need a cloud or a real kubelet.
func (c *Cluster) startControllerManager(bin string, out io.Writer) error {
	certDir := c.env.ControlPlane.APIServer.CertDir
	caFile := filepath.Join(c.dir, "apiserver-ca.crt")
	if err := os.WriteFile(caFile, c.cfg.CAData, 0o644); err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(bin, BinControllerManager),
		"--kubeconfig="+c.KubeconfigPath,
		"--authentication-kubeconfig="+c.KubeconfigPath,
		"--authorization-kubeconfig="+c.KubeconfigPath,
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--service-account-private-key-file="+filepath.Join(certDir, "sa-signer.key"),
		"--root-ca-file="+caFile,
		"--cluster-name="+c.Name,
		// No kubelet reports on the Node: node lifecycle would evict
		// every Pod after a few minutes; node IPAM has nothing to do with
		// one Node whose pod CIDR the sandbox sets.
		"--controllers=*,-node-lifecycle-controller,-node-ipam-controller",
		"--concurrent-endpoint-syncs=10",
		"--concurrent-service-endpoint-syncs=10",
		"--endpointslice-updates-batch-period=0s",
		"--v=1",
	)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	c.kcm = cmd
	c.kcmDone = make(chan error, 1)
	go func() { c.kcmDone <- cmd.Wait() }()
	return nil
}

// waitForControllers waits until the controller manager has made the
// default ServiceAccount, which shows that its controllers are running.
func (c *Cluster) waitForControllers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		if _, err := c.client.CoreV1().ServiceAccounts(corev1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return nil
		}
		select {
		case err := <-c.kcmDone:
			c.kcmDone <- err
			return fmt.Errorf("controller manager exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("controller manager did not start: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) stop() error {
	var errs []error
	if c.kcm != nil && c.kcm.Process != nil {
		_ = c.kcm.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.kcmDone:
		case <-time.After(10 * time.Second):
			_ = c.kcm.Process.Kill()
			<-c.kcmDone
		}
	}
	if c.env != nil {
		if err := c.env.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func writeKubeconfig(path, name string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[name+"-admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name + "-admin"}
	kc.CurrentContext = name
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// dieWithParent writes into dir a wrapper for each sandbox binary that
// runs the real one with PR_SET_PDEATHSIG (util-linux setpriv), and returns
// dir. Without setpriv, dir holds links to the binaries themselves.
func dieWithParent(bin, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	setpriv, lookErr := exec.LookPath("setpriv")
	for _, name := range []string{BinAPIServer, BinEtcd, BinKubectl, BinControllerManager} {
		real := filepath.Join(bin, name)
		path := filepath.Join(dir, name)
		_ = os.Remove(path)
		if lookErr != nil || name == BinKubectl {
			if err := os.Symlink(real, path); err != nil {
				return "", err
			}
			continue
		}
		script := fmt.Sprintf("#!/bin/sh\nexec %q --pdeathsig KILL -- %q \"$@\"\n", setpriv, real)
		if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
			return "", err
		}
	}
	return dir, nil
}

var quietOnce sync.Once

// quietEnvtest gives controller-runtime's global logger a sink, once:
// envtest logs through it, and without one it prints a warning with a
// stack trace after 30 seconds. The sandbox reports through Config.Log.
func quietEnvtest() {
	quietOnce.Do(func() { ctrllog.SetLogger(logr.Discard()) })
}

// prefixWriter prefixes each line written to w.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			break
		}
		if _, err := fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i]); err != nil {
			return len(b), nil
		}
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}
