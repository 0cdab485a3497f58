package gateway

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/trust/agent"
	"github.com/meshfed/meshfed/trust/ca"
)

// gatewayPod lays out, in a temporary directory, the volumes of the
// Envoy container of the gateway `meshfed install --network` deploys: its
// ConfigMap as the kubelet projects it and the SVID files meshfed agent
// writes (issued by inter), as the kubelet stand-in does. It returns the
// bootstrap's host path (Envoy's -c, rewritten), the Runtime that finds
// the container's paths, with the controller's Service served at xds, and
// the SVID's certificate file.
func gatewayPod(t *testing.T, inter *ca.Intermediate, xds string) (string, Runtime, string) {
	t.Helper()
	o := deploy.DefaultOptions()
	o.ClusterName, o.Network, o.TrustDomain = "east", "east-net", td
	objs, err := deploy.Manifests(o)
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	var dep appsv1.Deployment
	for _, u := range objs {
		if u.GetName() != deploy.GatewayName {
			continue
		}
		switch u.GetKind() {
		case "ConfigMap":
			err = runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cm)
		case "Deployment":
			err = runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &dep)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	pod := dep.Spec.Template.Spec
	i := slices.IndexFunc(pod.Containers, func(c corev1.Container) bool { return c.Name == "envoy" })
	if i < 0 || cm.Data == nil {
		t.Fatal("no gateway ConfigMap or Envoy container in meshfed's manifests")
	}
	envoy := pod.Containers[i]

	svid, err := inter.IssueSVID(spiffeid.RequireFromString(string(gatewayID)), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rt := Runtime{Mounts: map[string]string{}, Services: map[string]string{
		net.JoinHostPort(deploy.ControllerName+"."+o.Namespace+".svc", strconv.Itoa(deploy.PortXDS)): xds,
	}}
	root := t.TempDir()
	for _, m := range envoy.VolumeMounts {
		dir := filepath.Join(root, "volumes", m.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		rt.Mounts[m.MountPath] = dir
		v := pod.Volumes[slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })]
		switch {
		case v.ConfigMap != nil:
			for name, data := range cm.Data {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		case v.EmptyDir != nil: // the agent's
			if err := agent.WriteFiles(dir, svid, inter.Bundle()); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := slices.Index(envoy.Args, "-c")
	if c < 0 || c+1 == len(envoy.Args) {
		t.Fatalf("the Envoy container's args %v have no -c", envoy.Args)
	}
	boot, err := rt.Path(envoy.Args[c+1])
	if err != nil {
		t.Fatal(err)
	}
	cert, err := rt.Path(filepath.Join(agentCertDir(t, pod), agent.CertificateFile))
	if err != nil {
		t.Fatal(err)
	}
	return boot, rt, cert
}

// agentCertDir is where meshfed agent writes the SVID in the gateway Pod.
func agentCertDir(t *testing.T, pod corev1.PodSpec) string {
	t.Helper()
	for _, a := range pod.InitContainers[0].Args {
		if dir, ok := strings.CutPrefix(a, "--out-dir="); ok {
			return dir
		}
	}
	t.Fatal("meshfed agent has no --out-dir")
	return ""
}

// The stand-in reads the Envoy bootstrap meshfed deploys, and the SDS
// files it names, to reach the controller the way Envoy would: at the
// address the local cluster serves the controller's Service on, with the
// SVID meshfed agent wrote, accepting the controller by its SPIFFE ID
// (its certificate names neither the Service nor "localhost").
func TestStandInFollowsTheControllerItsEnvoyBootstrapNames(t *testing.T) {
	f := startController(t)
	boot, rt, certFile := gatewayPod(t, f.inter, f.addr)
	target, cfg, err := ReadEnvoyBootstrap(boot, rt)
	if err != nil {
		t.Fatal(err)
	}
	if target != f.addr {
		t.Fatalf("xDS target %q; want the controller's, %q", target, f.addr)
	}
	cert, err := cfg.GetClientCertificate(&tls.CertificateRequestInfo{})
	if err != nil {
		t.Fatal(err)
	}
	written, err := tls.LoadX509KeyPair(certFile, filepath.Join(filepath.Dir(certFile), agent.PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(cert.Certificate, written.Certificate, slices.Equal) {
		t.Fatal("the client certificate is not the SVID meshfed agent wrote")
	}

	f.update(t, []net.Addr{startBackend(t, f, "127.0.0.2", "pod-1")}, true)
	g := New(Config{XDSAddress: target, TLS: cfg,
		Listen: func(uint32) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }})
	done := make(chan error, 1)
	go func() { done <- g.Run(t.Context()) }() // ended before the cleanups
	t.Cleanup(func() { <-done })
	eventually(t, "the gateway takes its listener from the controller", func() error {
		if g.Addr(generate.GatewayPort) == "" {
			return errors.New("no listener yet")
		}
		return nil
	})
	if n := g.NACKs(); len(n) > 0 {
		t.Errorf("NACKs: %v", n)
	}
}

// A server that is not the controller the validation context names is
// refused, even with a certificate from the mesh's CA.
func TestStandInRefusesAnotherIdentityAsController(t *testing.T) {
	inter := newIntermediate(t)
	boot, rt, _ := gatewayPod(t, inter, "unix:///nowhere.sock")
	_, cfg, err := ReadEnvoyBootstrap(boot, rt)
	if err != nil {
		t.Fatal(err)
	}
	handshake := func(id mesh.Identity) error {
		c, s := net.Pipe()
		defer c.Close()
		defer s.Close()
		srv := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{issue(t, inter, id)}})
		go func() { _ = srv.Handshake(); srv.Close() }()
		return tls.Client(c, cfg).Handshake()
	}
	if err := handshake(mesh.NewIdentity(td, "meshfed-system", deploy.ControllerName)); err != nil {
		t.Fatalf("the controller was refused: %v", err)
	}
	if err := handshake(bookstoreID); err == nil || !strings.Contains(err.Error(), string(bookstoreID)) {
		t.Fatalf("bookstore accepted as controller, or refused without saying why: %v", err)
	}
}

// What Envoy would not find, the stand-in refuses, naming the file and
// what is missing.
func TestReadEnvoyBootstrapRefusesWhatIsNotThere(t *testing.T) {
	inter := newIntermediate(t)
	for _, tc := range []struct {
		name string
		// spoil changes the Pod's files or runtime and returns what else
		// the error must say.
		spoil func(t *testing.T, boot string, rt *Runtime) []string
		want  []string
	}{
		{"malformed JSON", func(t *testing.T, boot string, _ *Runtime) []string {
			write(t, boot, "{")
			return nil
		}, []string{"envoy.json"}},
		{"the certificates' mount is gone", func(_ *testing.T, _ string, rt *Runtime) []string {
			delete(rt.Mounts, "/var/run/meshfed/certs")
			return nil
		}, []string{"/var/run/meshfed/certs/certificate.pem", EnvMounts}},
		{"the ADS cluster is missing", func(t *testing.T, boot string, _ *Runtime) []string {
			b := readBootstrap(t, boot)
			ads := b.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()
			b.GetStaticResources().Clusters[0].Name = "other"
			out, err := protojson.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			write(t, boot, string(out))
			return []string{"ADS cluster " + ads + " "}
		}, []string{"envoy.json"}},
		{"an SDS file holds the other secret", func(t *testing.T, boot string, _ *Runtime) []string {
			dir := filepath.Dir(boot)
			b, err := os.ReadFile(filepath.Join(dir, generate.GatewayBundleFile))
			if err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(dir, generate.GatewaySVIDFile), string(b))
			return nil
		}, []string{generate.GatewaySVIDFile, "gateway-trust-bundle"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			boot, rt, _ := gatewayPod(t, inter, "unix:///nowhere.sock")
			want := append(tc.want, tc.spoil(t, boot, &rt)...)
			_, _, err := ReadEnvoyBootstrap(boot, rt)
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// A certificate file gone at handshake time is reported by its name.
func TestClientCertificateReadAtHandshakeNamesAMissingFile(t *testing.T) {
	boot, rt, certFile := gatewayPod(t, newIntermediate(t), "unix:///nowhere.sock")
	_, cfg, err := ReadEnvoyBootstrap(boot, rt)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.GetClientCertificate(&tls.CertificateRequestInfo{}); err == nil || !strings.Contains(err.Error(), certFile) {
		t.Fatalf("got %v; want an error naming %s", err, certFile)
	}
}

// The longest mount holding a path wins, by whole path elements; the
// cluster's DNS names go to where the local cluster serves them.
func TestRuntimeFindsContainerPathsAndServices(t *testing.T) {
	rt := Runtime{
		Mounts:   map[string]string{"/etc/meshfed": "/h/config", "/var/run/meshfed": "/h/run", "/var/run/meshfed/certs": "/h/certs"},
		Services: map[string]string{"meshfed-controller.meshfed-system.svc:15128": "unix:///tmp/east-xds.sock"},
	}
	for p, want := range map[string]string{
		"/etc/meshfed/envoy.json":                       "/h/config/envoy.json",
		"/etc/meshfed":                                  "/h/config",
		"/var/run/meshfed/certs/certificate.pem":        "/h/certs/certificate.pem",
		"/var/run/meshfed/other/x":                      "/h/run/other/x",
		"/var/run/meshfed/certs/../other/x":             "/h/run/other/x",
		"/etc/meshfedx/envoy.json":                      "",
		"/etc/meshfed/../passwd":                        "",
		"etc/meshfed/envoy.json":                        "",
		"/var/run/meshfed/certs/..data/private_key.pem": "/h/certs/..data/private_key.pem",
	} {
		got, err := rt.Path(p)
		switch {
		case want == "" && err == nil:
			t.Errorf("%s: resolved to %s; want refused", p, got)
		case want == "" && !strings.Contains(err.Error(), path.Clean(p)):
			t.Errorf("%s: error %q does not name the path", p, err)
		case want != "" && got != want:
			t.Errorf("%s: %q, %v; want %s", p, got, err, want)
		}
	}
	if got := rt.Address("meshfed-controller.meshfed-system.svc:15128"); got != "unix:///tmp/east-xds.sock" {
		t.Errorf("the controller's Service: %s", got)
	}
	if got := rt.Address("10.0.0.1:15128"); got != "10.0.0.1:15128" {
		t.Errorf("an address the cluster does not serve: %s", got)
	}
}

// What the kubelet stand-in writes (Environ) the stand-in reads back;
// a relative mount path is refused.
func TestRuntimeTravelsThroughTheEnvironment(t *testing.T) {
	want := Runtime{Mounts: map[string]string{"/etc/meshfed": "/h/config"}, Services: map[string]string{"a.svc:1": "unix:///s"}}
	for _, kv := range want.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	got, err := RuntimeFromEnv()
	if err != nil || got.Mounts["/etc/meshfed"] != "/h/config" || got.Services["a.svc:1"] != "unix:///s" {
		t.Fatalf("got %+v, %v", got, err)
	}
	t.Setenv(EnvMounts, `{"etc/meshfed":"/h"}`)
	if _, err := RuntimeFromEnv(); err == nil || !strings.Contains(err.Error(), "etc/meshfed") {
		t.Fatalf("a relative mount path: %v", err)
	}
}

func write(t *testing.T, file, data string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readBootstrap(t *testing.T, file string) *bootstrapv3.Bootstrap {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	boot := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(b, boot); err != nil {
		t.Fatal(err)
	}
	return boot
}
