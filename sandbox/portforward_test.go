package sandbox_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/meshfed/meshfed/internal/portforward"
	"github.com/meshfed/meshfed/sandbox"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
)

// Port forwarding goes through the real API server (it authorizes the
// caller, then calls the kubelet stand-in's API over TLS) to the port the
// PortForward hook connects; a user without pods/portforward is refused.
func TestPortForwardReachesAPodThroughTheAPIServer(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				_, _ = c.Write([]byte("echo " + line))
			}()
		}
	}()
	forwarded := make(chan string, 4)
	sb := sandboxtest.StartWith(t, sandbox.Config{Clusters: []string{"a"}, Hooks: sandbox.PodHooks{
		PortForward: func(cluster string, pod *corev1.Pod, port int32) (net.Conn, error) {
			forwarded <- pod.Namespace + "/" + pod.Name
			if port != 8080 {
				return nil, net.UnknownNetworkError("nothing listens on that port")
			}
			return net.Dial("tcp", echo.Addr().String())
		},
	}})
	c := sb.Cluster("a")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "target", Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example/app"}}}}
	if _, err := c.Client().CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := c.Client().CoreV1().Pods("default").Get(ctx, "target", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase == corev1.PodRunning {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the Pod never ran")
		case <-time.After(100 * time.Millisecond):
		}
	}

	f, err := portforward.Start(c.RESTConfig(), "default", "target", 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	conn, err := net.Dial("tcp", f.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || got != "echo hello\n" {
		t.Fatalf("through the forward: %q, %v", got, err)
	}
	if who := <-forwarded; who != "default/target" {
		t.Errorf("forwarded to %s", who)
	}

	// A user the API server does not authorize gets nothing.
	anon := rest.AnonymousClientConfig(c.RESTConfig())
	if f, err := portforward.Start(anon, "default", "target", 8080); err == nil {
		f.Close()
		t.Fatal("an anonymous user was given a port forward")
	} else if !strings.Contains(err.Error(), "Unauthorized") && !strings.Contains(err.Error(), "Forbidden") && !strings.Contains(err.Error(), "forbidden") {
		t.Logf("anonymous refused: %v", err)
	}
}
