package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/controller/debug"
)

// `meshfed proxy status` and `meshfed proxy get`, run as a user runs them:
// the CLI reaches meshfed-controller's debug API by port forwarding
// through the API server, with the kubeconfig's credentials. A NACK
// provoked on purpose — a client with bookbuyer's SVID rejects the
// listeners it is sent — shows up with the client's message.
func TestProxyStatusAndGetThroughTheAPIServer(t *testing.T) {
	m := startBookstoreMesh(t)
	m.wait(t, converge, "bookbuyer gets answers (allowed or denied)", func() error {
		_, err := m.lastN(fromTheStart, "bookbuyer", buyBook, 5)
		return err
	})

	t.Run("proxy status lists every workload, synced", func(t *testing.T) {
		m.wait(t, converge, "bookbuyer's proxy SYNCED on lds, rds, cds, eds", func() error {
			out, err := m.h.Meshfed(m.ctx, cluster, "proxy", "status")
			if err != nil {
				return err
			}
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) == 9 && strings.HasPrefix(f[1], "bookbuyer/bookbuyer-") && strings.HasSuffix(f[2], "/ns/bookbuyer/sa/bookbuyer") &&
					f[3] == "proxyless" && f[4] == debug.Synced && f[5] == debug.Synced && f[6] == debug.Synced && f[7] == debug.Synced && f[8] == debug.NotSent {
					return nil
				}
			}
			return fmt.Errorf("no synced bookbuyer row in:\n%s", out)
		})
	})

	t.Run("proxy get shows what bookbuyer's proxy is served", func(t *testing.T) {
		pods, err := m.east.Sandbox.Client().CoreV1().Pods("bookbuyer").List(m.ctx, metav1.ListOptions{LabelSelector: "app=bookbuyer"})
		if err != nil || len(pods.Items) == 0 {
			t.Fatalf("bookbuyer's Pod: %v", err)
		}
		out, err := m.h.Meshfed(m.ctx, cluster, "proxy", "get", pods.Items[0].Name, "-n", "bookbuyer", "listeners", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Cluster   string                       `json:"cluster"`
			Proxy     string                       `json:"proxy"`
			Resources map[string][]json.RawMessage `json:"resources"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if got.Cluster != cluster || !strings.Contains(got.Proxy, "/ns/bookbuyer/sa/bookbuyer|proxyless") || len(got.Resources) != 1 ||
			!strings.Contains(string(got.Resources["lds"][0]), "bookstore.bookstore.svc.cluster.local") {
			t.Errorf("proxy get listeners: %s", out)
		}
		if _, err := m.h.Meshfed(m.ctx, cluster, "proxy", "get", "no-such-pod", "-n", "bookbuyer"); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("proxy get of a missing Pod: %v", err)
		}
	})

	t.Run("a NACK appears with the client's message", func(t *testing.T) {
		const why = "provoked on purpose: this client rejects every listener"
		nack(t, m, "bookbuyer", why)
		m.wait(t, converge, "the NACK in proxy status", func() error {
			out, err := m.h.Meshfed(m.ctx, cluster, "proxy", "status")
			if err != nil {
				return err
			}
			if !strings.Contains(out, "bookbuyer/nack-provoker") || !strings.Contains(out, debug.NACKed) || !strings.Contains(out, "lds version") || !strings.Contains(out, why) {
				return fmt.Errorf("no NACK with the message in:\n%s", out)
			}
			t.Logf("meshfed proxy status:\n%s", out)
			return nil
		})
		out, err := m.h.Meshfed(m.ctx, cluster, "proxy", "status", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var got []debug.Proxies
		if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 1 || got[0].Cluster != cluster {
			t.Fatalf("proxy status -o json: %v:\n%s", err, out)
		}
		found := false
		for _, p := range got[0].Proxies {
			for _, ty := range p.Types {
				found = found || (p.NodeID == "bookbuyer/nack-provoker" && ty.Type == "lds" && ty.NACK != nil && ty.NACK.Message == why)
			}
		}
		if !found {
			t.Errorf("the NACK is not in proxy status -o json:\n%s", out)
		}
	})
}

// nack connects to the controller as the app's workload does (its agent's
// bootstrap and SVID files), asks for listeners and rejects them with
// message, and keeps the stream open until the test ends.
func nack(t *testing.T, m *bookstoreMesh, app, message string) {
	t.Helper()
	boots, _ := filepath.Glob(filepath.Join(m.h.PodsDir(), cluster, app, app+"-*", "volumes", "meshfed", "bootstrap.json"))
	if len(boots) == 0 {
		t.Fatalf("no bootstrap of %s's agent", app)
	}
	var boot struct {
		XDSServers []struct {
			ServerURI string `json:"server_uri"`
		} `json:"xds_servers"`
	}
	b, err := os.ReadFile(boots[0])
	if err != nil || json.Unmarshal(b, &boot) != nil || len(boot.XDSServers) == 0 {
		t.Fatalf("bootstrap %s: %v", boots[0], err)
	}
	certs := filepath.Join(filepath.Dir(boots[0]), "certs")
	cert, err := tls.LoadX509KeyPair(filepath.Join(certs, "certificate.pem"), filepath.Join(certs, "private_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(certs, "ca_certificate.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	conn, err := grpc.NewClient(boot.XDSServers[0].ServerURI, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = conn.Close() })
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: app + "/nack-provoker", UserAgentName: "grpc-go"}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ListenerType,
		ResourceNames: []string{"bookstore.bookstore.svc.cluster.local:14001"}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		resp, err := stream.Recv()
		if err == nil {
			err = stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ListenerType, ResponseNonce: resp.GetNonce(),
				ResourceNames: []string{"bookstore.bookstore.svc.cluster.local:14001"}, ErrorDetail: &statuspb.Status{Code: 3, Message: message}})
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(converge):
		t.Fatal("the controller sent no listener")
	}
}
