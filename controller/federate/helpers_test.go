package federate_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/sandbox"
	"github.com/meshfed/meshfed/trust/ca"
)

const trustDomain = "meshfed.local"

var td = spiffeid.RequireTrustDomainFromString(trustDomain)

// fastGossip makes memberlist quick on loopback.
func fastGossip(c *memberlist.Config) {
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 50 * time.Millisecond
	c.PushPullInterval = 2 * time.Second
	c.SuspicionMult = 2
	c.TCPTimeout = 2 * time.Second
}

// withdrawAfter is short so that the lost-cluster test is quick.
const withdrawAfter = 2 * time.Second

// member is one cluster of the test federation: a real API server, a real
// memberlist member on 127.0.0.1 and a bridge.
type member struct {
	name   string
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	fed    *federation.Federation
	bridge *federate.Bridge
	reg    *prometheus.Registry
	// logs holds what the bridge logged.
	logs *logRecorder

	bcfg       federate.Config
	stopBridge func()
}

// startBridge starts m's bridge, with a fresh metrics registry; it stops
// when the test ends or stopBridge is called.
func (m *member) startBridge(t *testing.T) {
	t.Helper()
	m.reg = prometheus.NewRegistry()
	cfg := m.bcfg
	cfg.Registerer = m.reg
	var err error
	if m.bridge, err = federate.New(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func(b *federate.Bridge) {
		defer close(done)
		if err := b.Run(ctx); err != nil {
			t.Errorf("%s: bridge: %v", m.name, err)
		}
	}(m.bridge)
	var once sync.Once
	m.stopBridge = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(m.stopBridge)
}

// restartBridge stops m's bridge and starts a new one, as a controller
// restart does; the federation member keeps running.
func (m *member) restartBridge(t *testing.T) {
	t.Helper()
	m.stopBridge()
	m.logs.reset()
	m.startBridge(t)
}

func fedConfig(t *testing.T, name string, root *ca.Root, gossipKey []byte, seeds ...string) federation.Config {
	t.Helper()
	inter, err := root.NewIntermediate(name, 24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, chain, err := inter.IssueClusterCertificate(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root.Certificate)
	cfg := federation.DefaultConfig()
	cfg.ClusterName, cfg.Network, cfg.TrustDomain = name, "flat", trustDomain
	cfg.BindAddr, cfg.BindPort, cfg.AdvertiseAddr = "127.0.0.1", 0, "127.0.0.1"
	cfg.Seeds = seeds
	cfg.GossipKeys = [][]byte{gossipKey}
	cfg.Signer = federation.StaticSigner{Key: key, Chain: chain}
	cfg.Bundle = federation.StaticBundle{Roots: pool, Fingerprint: "test-root"}
	cfg.Tune = fastGossip
	cfg.JoinRetryInterval = 500 * time.Millisecond
	cfg.FetchTimeout = 2 * time.Second
	cfg.WithdrawAfter = withdrawAfter
	cfg.StaleAfter = 5 * time.Second
	cfg.Registerer = prometheus.NewRegistry()
	return cfg
}

// startMember installs meshfed's CRDs and MeshConfig in cluster c, starts
// its federation member and its bridge, and stops both when the test ends.
func startMember(t *testing.T, c *sandbox.Cluster, root *ca.Root, gossipKey []byte, seeds ...string) *member {
	t.Helper()
	return startMemberWith(t, c, root, gossipKey, nil, seeds...)
}

// startMemberWith is startMember with the bridge's configuration changed
// by tune (if not nil) before it starts.
func startMemberWith(t *testing.T, c *sandbox.Cluster, root *ca.Root, gossipKey []byte, tune func(*federate.Config), seeds ...string) *member {
	t.Helper()
	ctx := testContext(t)
	inst, err := installer.New(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	o := deploy.DefaultOptions()
	o.ClusterName = c.Name
	if _, err := inst.Install(ctx, o); err != nil {
		t.Fatal(err)
	}
	// The controller's default request rate (--kube-api-qps/burst).
	rc := c.RESTConfig()
	rc.QPS, rc.Burst = 50, 100
	m := &member{name: c.Name, kube: c.Client(), dyn: dynamic.NewForConfigOrDie(rc), reg: prometheus.NewRegistry(), logs: &logRecorder{}}
	m.fed, err = federation.New(fedConfig(t, c.Name, root, gossipKey, seeds...))
	if err != nil {
		t.Fatal(err)
	}
	bcfg := federate.DefaultConfig()
	bcfg.Client, bcfg.Dynamic, bcfg.Federation = m.kube, m.dyn, m.fed
	bcfg.ClusterName, bcfg.Network, bcfg.TrustDomain = c.Name, "flat", trustDomain
	bcfg.Namespace, bcfg.MeshConfigName = o.Namespace, deploy.MeshConfigName
	bcfg.StatusInterval = time.Second
	bcfg.Debounce = 20 * time.Millisecond
	bcfg.Resync = 30 * time.Second
	bcfg.Logger = slog.New(m.logs)
	if os.Getenv("FEDERATE_TEST_LOG") != "" {
		m.logs.tee = testLogger(c.Name).Handler()
	}
	if tune != nil {
		tune(&bcfg)
	}
	m.bcfg = bcfg
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := m.fed.Run(runCtx); err != nil {
			t.Errorf("%s: %v", c.Name, err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	m.startBridge(t)
	eventually(t, 30*time.Second, func() (bool, string) { return m.fed.Addr() != "", c.Name + " is not listening" })
	return m
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds, failing the test after timeout
// (a bound against hanging, not a latency assertion).
func eventually(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ensureNamespace(t *testing.T, m *member, ns string) {
	t.Helper()
	_, err := m.kube.CoreV1().Namespaces().Create(testContext(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// deployService creates a ServiceAccount, a Deployment of one replica
// running as it and a Service selecting it, as a user would; the
// cluster's real controllers make the Pod and the EndpointSlice.
func deployService(t *testing.T, m *member, ns, name string, port int32) {
	t.Helper()
	ctx := testContext(t)
	ensureNamespace(t, m, ns)
	if _, err := m.kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	labels := map[string]string{"app": name}
	one := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: name,
					Containers: []corev1.Container{{Name: "app", Image: "example.invalid/" + name,
						Ports: []corev1.ContainerPort{{Name: "grpc", ContainerPort: 8080}}}},
				},
			},
		},
	}
	if _, err := m.kube.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "grpc", Port: port, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if _, err := m.kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func export(t *testing.T, m *member, ns, name string) {
	t.Helper()
	ensureNamespace(t, m, ns)
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
		"metadata": map[string]any{"namespace": ns, "name": name},
	}}
	if _, err := m.dyn.Resource(federate.ServiceExportGVR).Namespace(ns).Create(testContext(t), u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func unexport(t *testing.T, m *member, ns, name string) {
	t.Helper()
	if err := m.dyn.Resource(federate.ServiceExportGVR).Namespace(ns).Delete(testContext(t), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// serviceImport returns the clusters and ports of ServiceImport ns/name,
// or ok=false if there is none.
func serviceImport(t *testing.T, m *member, ns, name string) (clusters []string, ports []int64, typ string, ok bool) {
	t.Helper()
	u, err := m.dyn.Resource(federate.ServiceImportGVR).Namespace(ns).Get(testContext(t), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	cs, _, _ := unstructured.NestedSlice(u.Object, "status", "clusters")
	for _, c := range cs {
		clusters = append(clusters, c.(map[string]any)["cluster"].(string))
	}
	ps, _, _ := unstructured.NestedSlice(u.Object, "spec", "ports")
	for _, p := range ps {
		ports = append(ports, p.(map[string]any)["port"].(int64))
	}
	typ, _, _ = unstructured.NestedString(u.Object, "spec", "type")
	return clusters, ports, typ, true
}

// condition returns the status, reason and message of a ServiceExport's
// condition.
func condition(t *testing.T, m *member, ns, name, typ string) (status, reason, msg string) {
	t.Helper()
	u, err := m.dyn.Resource(federate.ServiceExportGVR).Namespace(ns).Get(testContext(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		c := c.(map[string]any)
		if c["type"] == typ {
			return fmt.Sprint(c["status"]), fmt.Sprint(c["reason"]), fmt.Sprint(c["message"])
		}
	}
	return "", "", ""
}

// remoteMember runs a federation member in a child process (this test
// binary), so that the test can kill it as a crash would: no leave.
type remoteMember struct {
	cmd  *exec.Cmd
	addr string
}

const childEnv = "FEDERATE_TEST_CHILD"

// childSpec is what the child member needs, passed in its environment.
type childSpec struct {
	Name      string                    `json:"name"`
	Seed      string                    `json:"seed"`
	GossipKey string                    `json:"gossipKey"`
	KeyPEM    string                    `json:"keyPEM"`
	ChainPEM  string                    `json:"chainPEM"`
	RootPEM   string                    `json:"rootPEM"`
	Services  []catalog.ExportedService `json:"services"`
	Network   string                    `json:"network"`
	Gateways  []string                  `json:"gateways"`
}

func startChildMember(t *testing.T, name string, root *ca.Root, gossipKey []byte, seed string, services ...catalog.ExportedService) *remoteMember {
	t.Helper()
	return startChildMemberOn(t, name, "flat", nil, root, gossipKey, seed, services...)
}

// startChildMemberOn is startChildMember for a cluster on network with
// the east-west gateway addresses gateways.
func startChildMemberOn(t *testing.T, name, network string, gateways []string, root *ca.Root, gossipKey []byte, seed string, services ...catalog.ExportedService) *remoteMember {
	t.Helper()
	inter, err := root.NewIntermediate(name, 24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, chain, err := inter.IssueClusterCertificate(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := ca.EncodePrivateKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(childSpec{
		Name: name, Seed: seed, GossipKey: base64.StdEncoding.EncodeToString(gossipKey),
		KeyPEM: string(keyPEM), ChainPEM: string(ca.EncodeCertificatesPEM(chain)),
		RootPEM: string(ca.EncodeCertificatesPEM([]*x509.Certificate{root.Certificate})), Services: services,
		Network: network, Gateways: gateways,
	})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rm := &remoteMember{cmd: cmd}
	t.Cleanup(func() { rm.kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child member %s: %v", name, err)
	}
	rm.addr = strings.TrimSpace(line)
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return rm
}

func (r *remoteMember) kill() {
	if r.cmd.Process != nil && r.cmd.ProcessState == nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
	}
}

// runChild is the child process: a federation member that publishes the
// given services and runs until killed.
func runChild(specJSON string) error {
	var spec childSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return err
	}
	gk, err := base64.StdEncoding.DecodeString(spec.GossipKey)
	if err != nil {
		return err
	}
	key, err := ca.ParsePrivateKeyPEM([]byte(spec.KeyPEM))
	if err != nil {
		return err
	}
	chain, err := ca.ParseCertificatesPEM([]byte(spec.ChainPEM))
	if err != nil {
		return err
	}
	roots, err := ca.ParseCertificatesPEM([]byte(spec.RootPEM))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	cfg := federation.DefaultConfig()
	cfg.ClusterName, cfg.Network, cfg.TrustDomain = spec.Name, spec.Network, trustDomain
	cfg.Gateways = spec.Gateways
	cfg.BindAddr, cfg.BindPort, cfg.AdvertiseAddr = "127.0.0.1", 0, "127.0.0.1"
	cfg.Seeds = []string{spec.Seed}
	cfg.GossipKeys = [][]byte{gk}
	cfg.Signer = federation.StaticSigner{Key: key, Chain: chain}
	cfg.Bundle = federation.StaticBundle{Roots: pool, Fingerprint: "test-root"}
	cfg.Tune = fastGossip
	cfg.JoinRetryInterval = 500 * time.Millisecond
	f, err := federation.New(cfg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() { errc <- f.Run(ctx) }()
	if _, err := f.Publish(ctx, spec.Services); err != nil {
		return err
	}
	for f.Addr() == "" {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println(f.Addr())
	return errors.Join(<-errc, errors.New("member stopped"))
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		if err := runChild(spec); err != nil {
			fmt.Fprintln(os.Stderr, "child member:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testLogger(cluster string) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("cluster", cluster)
}

// startBareMember runs a federation member with no cluster behind it,
// in this process, on 127.0.0.1: a member that holds the gossip key and its
// own cluster's intermediate, and publishes whatever the test says.
func startBareMember(t *testing.T, name string, root *ca.Root, gossipKey []byte, seed string) *federation.Federation {
	t.Helper()
	cfg := fedConfig(t, name, root, gossipKey, seed)
	f, err := federation.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f.Run(ctx); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, 30*time.Second, func() (bool, string) { return f.Addr() != "", name + " is not listening" })
	return f
}

// logRecorder is a slog.Handler that keeps every record's message and
// attributes (as text), optionally passing them on to tee.
type logRecorder struct {
	mu      sync.Mutex
	records []loggedRecord
	attrs   []slog.Attr
	tee     slog.Handler
	parent  *logRecorder
}

type loggedRecord struct {
	Msg   string
	Attrs map[string]string
}

func (l *logRecorder) root() *logRecorder {
	if l.parent != nil {
		return l.parent.root()
	}
	return l
}

// reset forgets what was logged so far.
func (l *logRecorder) reset() {
	root := l.root()
	root.mu.Lock()
	root.records = nil
	root.mu.Unlock()
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(ctx context.Context, r slog.Record) error {
	rec := loggedRecord{Msg: r.Message, Attrs: map[string]string{}}
	for _, a := range l.attrs {
		rec.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.String()
		return true
	})
	root := l.root()
	root.mu.Lock()
	root.records = append(root.records, rec)
	tee := root.tee
	root.mu.Unlock()
	if tee != nil {
		return tee.Handle(ctx, r)
	}
	return nil
}

func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{attrs: append(append([]slog.Attr(nil), l.attrs...), as...), parent: l.root()}
}

func (l *logRecorder) WithGroup(string) slog.Handler { return l }

// find returns the records whose attributes include every one of want.
func (l *logRecorder) find(want map[string]string) []loggedRecord {
	root := l.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	var out []loggedRecord
	for _, r := range root.records {
		ok := true
		for k, v := range want {
			if r.Attrs[k] != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, r)
		}
	}
	return out
}

// newFederationKeys makes what the members of a test federation share: a
// root CA and a gossip key.
func newFederationKeys(t *testing.T) (*ca.Root, []byte) {
	t.Helper()
	root, err := ca.GenerateRoot(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gossipKey := make([]byte, 32)
	if _, err := rand.Read(gossipKey); err != nil {
		t.Fatal(err)
	}
	return root, gossipKey
}
