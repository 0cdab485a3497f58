package capture_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshfed/meshfed/capture"
)

// The rules as iptables-restore reads them: the proxy's UID and loopback
// pass, exclusions pass, the rest goes to the proxy's ports.
func TestRules(t *testing.T) {
	c := capture.DefaultConfig()
	c.ExcludeOutboundPorts = []int{5432, 5432}
	c.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("10.88.1.0/16")}
	c.ExcludeInboundPorts = []int{9090}
	r := capture.Rules(c)
	for _, want := range []string{
		"-A MESHFED_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
		"-A MESHFED_OUTBOUND -d 10.88.0.0/16 -j RETURN",
		"-A MESHFED_OUTBOUND -p tcp --dport 5432 -j RETURN",
		"-A MESHFED_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
		"-A MESHFED_INBOUND -p tcp --dport 9090 -j RETURN",
		"-A MESHFED_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15003",
	} {
		if !strings.Contains(r, want+"\n") {
			t.Errorf("rules lack %q:\n%s", want, r)
		}
	}
	if strings.Count(r, "--dport 5432") != 1 {
		t.Errorf("a repeated exclusion is written twice:\n%s", r)
	}
}

func TestFromAnnotations(t *testing.T) {
	c, err := capture.FromAnnotations(capture.DefaultConfig(), map[string]string{
		capture.AnnotationOutboundPortExclusions: "5432, 6379",
		capture.AnnotationOutboundCIDRExclusions: "10.88.0.0/16",
		capture.AnnotationInboundPortExclusions:  "9090",
	})
	if err != nil || len(c.ExcludeOutboundPorts) != 2 || len(c.ExcludeOutboundCIDRs) != 1 || c.ExcludeInboundPorts[0] != 9090 {
		t.Errorf("%+v, %v", c, err)
	}
	for key, bad := range map[string]string{
		capture.AnnotationOutboundPortExclusions: "5432,http",
		capture.AnnotationInboundPortExclusions:  "70000",
		capture.AnnotationOutboundCIDRExclusions: "10.88.0.0",
	} {
		if _, err := capture.FromAnnotations(capture.DefaultConfig(), map[string]string{key: bad}); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: %q: %v, want an error naming the annotation", key, bad, err)
		}
	}
}

// The test runs its own binary in the network namespaces it makes, as a
// helper: to apply the rules, to listen (reporting each connection's
// original destination), or to dial (as a given user).
func TestMain(m *testing.M) {
	if mode := os.Getenv("CAPTURE_HELPER"); mode != "" {
		os.Exit(helper(mode))
	}
	os.Exit(m.Run())
}

func helper(mode string) int {
	switch mode {
	case "apply":
		var c capture.Config
		if err := json.Unmarshal([]byte(os.Getenv("CAPTURE_CONFIG")), &c); err != nil {
			fmt.Println(err)
			return 1
		}
		if err := capture.Apply(context.Background(), c); err != nil {
			fmt.Println(err)
			return 1
		}
		return 0
	case "listen":
		l, err := net.Listen("tcp", os.Getenv("CAPTURE_ADDR"))
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Println("ready")
		for {
			c, err := l.Accept()
			if err != nil {
				return 1
			}
			fmt.Println("accepted", originalDst(c.(*net.TCPConn)))
			c.Close()
		}
	case "dial":
		if uid := os.Getenv("CAPTURE_UID"); uid != "" {
			var n int
			fmt.Sscan(uid, &n)
			if err := syscall.Setuid(n); err != nil {
				fmt.Println("error: setuid:", err)
				return 1
			}
		}
		c, err := net.DialTimeout("tcp", os.Getenv("CAPTURE_ADDR"), 2*time.Second)
		if err != nil {
			fmt.Println("error:", err)
			return 0
		}
		c.Close()
		fmt.Println("connected")
		return 0
	}
	return 2
}

// originalDst reads SO_ORIGINAL_DST, as Envoy's original_dst listener
// filter does: the destination before the REDIRECT.
func originalDst(c *net.TCPConn) string {
	raw, err := c.SyscallConn()
	if err != nil {
		return "error: " + err.Error()
	}
	var addr string
	_ = raw.Control(func(fd uintptr) {
		const soOriginalDst = 80
		m, err := syscall.GetsockoptIPv6Mreq(int(fd), syscall.IPPROTO_IP, soOriginalDst)
		if err != nil {
			addr = "none (" + err.Error() + ")"
			return
		}
		b := m.Multiaddr
		addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]}), uint16(b[2])<<8|uint16(b[3])).String()
	})
	return addr
}

// netns is a network namespace the test made.
type netns string

func (n netns) run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"netns", "exec", string(n)}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("in %s: %s: %v: %s", n, strings.Join(args, " "), err, out)
	}
}

// helperIn returns the test binary run as a helper in n.
func (n netns) helperIn(env ...string) *exec.Cmd {
	self, _ := os.Executable()
	cmd := exec.Command("ip", "netns", "exec", string(n), self, "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// listener is a helper listening in a namespace; accepted receives the
// original destination of each connection it accepts.
type listener struct{ accepted chan string }

func (n netns) listen(t *testing.T, addr string) *listener {
	t.Helper()
	cmd := n.helperIn("CAPTURE_HELPER=listen", "CAPTURE_ADDR="+addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	l := &listener{accepted: make(chan string, 16)}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("listener on %s in %s did not start: %q", addr, n, sc.Text())
	}
	go func() {
		for sc.Scan() {
			l.accepted <- strings.TrimPrefix(sc.Text(), "accepted ")
		}
	}()
	return l
}

func (n netns) dial(t *testing.T, addr string, uid int) string {
	t.Helper()
	env := []string{"CAPTURE_HELPER=dial", "CAPTURE_ADDR=" + addr}
	if uid >= 0 {
		env = append(env, fmt.Sprintf("CAPTURE_UID=%d", uid))
	}
	out, err := n.helperIn(env...).Output()
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, n, err)
	}
	return strings.TrimSpace(string(out))
}

// got waits for l's next connection and returns its original destination.
func (l *listener) got(t *testing.T, what string) string {
	t.Helper()
	select {
	case d := <-l.accepted:
		return d
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no connection arrived", what)
		return ""
	}
}

func (l *listener) none(t *testing.T, what string) {
	t.Helper()
	select {
	case d := <-l.accepted:
		t.Errorf("%s: a connection to %s arrived", what, d)
	case <-time.After(300 * time.Millisecond):
	}
}

// The rules applied for real in a network namespace (root, ip netns,
// iptables): a Pod's connection to any address and port reaches the
// proxy's outbound port with its original destination readable; the
// proxy's own connection (its UID) is not captured; excluded ports and
// CIDRs pass; a connection into the Pod reaches the inbound port with its
// original destination, but for an excluded inbound port.
func TestCaptureRedirectsForReal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("applying the capture rules for real needs root (ip netns, iptables); run as root to test them")
	}
	for _, tool := range []string{"ip", "iptables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("applying the capture rules for real needs %s (iproute2, iptables): %v", tool, err)
		}
	}
	id := os.Getpid() % 100000
	pod, cli := netns(fmt.Sprintf("mfcap-pod-%d", id)), netns(fmt.Sprintf("mfcap-cli-%d", id))
	for _, n := range []netns{pod, cli} {
		if out, err := exec.Command("ip", "netns", "add", string(n)).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", n, err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", string(n)).Run() })
	}
	vp, vc := fmt.Sprintf("mfp%d", id), fmt.Sprintf("mfc%d", id)
	if out, err := exec.Command("ip", "link", "add", vp, "netns", string(pod), "type", "veth", "peer", "name", vc, "netns", string(cli)).CombinedOutput(); err != nil {
		t.Fatalf("veth: %v: %s", err, out)
	}
	pod.run(t, "ip", "addr", "add", "10.77.0.2/24", "dev", vp)
	cli.run(t, "ip", "addr", "add", "10.77.0.1/24", "dev", vc)
	for _, x := range []struct {
		n   netns
		dev string
	}{{pod, vp}, {cli, vc}} {
		x.n.run(t, "ip", "link", "set", "lo", "up")
		x.n.run(t, "ip", "link", "set", x.dev, "up")
	}
	// Any destination is routable from the Pod, as with a default gateway.
	pod.run(t, "ip", "route", "add", "default", "dev", vp)

	c := capture.DefaultConfig()
	c.ExcludeOutboundPorts = []int{5432}
	c.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("10.88.0.0/16")}
	c.ExcludeInboundPorts = []int{9090}
	cfg, _ := json.Marshal(c)
	if out, err := pod.helperIn("CAPTURE_HELPER=apply", "CAPTURE_CONFIG="+string(cfg)).CombinedOutput(); err != nil {
		t.Fatalf("applying the rules in the Pod's namespace: %v: %s", err, out)
	}

	outbound := pod.listen(t, fmt.Sprintf("0.0.0.0:%d", c.OutboundPort))
	inbound := pod.listen(t, fmt.Sprintf("0.0.0.0:%d", c.InboundPort))
	podExcluded := pod.listen(t, "0.0.0.0:9090")
	remote := cli.listen(t, "10.77.0.1:8080")
	remoteDB := cli.listen(t, "10.77.0.1:5432")

	if got := pod.dial(t, "10.99.1.2:8080", -1); got != "connected" {
		t.Errorf("the app's connection to an arbitrary address: %s", got)
	}
	if d := outbound.got(t, "the app → 10.99.1.2:8080"); d != "10.99.1.2:8080" {
		t.Errorf("the proxy read the original destination %s, want 10.99.1.2:8080", d)
	}
	pod.dial(t, "10.77.0.1:8080", -1)
	if d := outbound.got(t, "the app → 10.77.0.1:8080"); d != "10.77.0.1:8080" {
		t.Errorf("the proxy read the original destination %s, want 10.77.0.1:8080", d)
	}
	remote.none(t, "the app's captured connection reached the server itself")

	if got := pod.dial(t, "10.77.0.1:8080", capture.DefaultProxyUID); got != "connected" {
		t.Errorf("the proxy's own connection: %s", got)
	}
	remote.got(t, "the proxy's own connection (UID 1337) goes straight to the server")
	outbound.none(t, "the proxy's own connection was captured")

	pod.dial(t, "10.77.0.1:5432", -1)
	remoteDB.got(t, "an excluded outbound port goes straight to the server")
	outbound.none(t, "an excluded outbound port was captured")
	pod.dial(t, "10.88.3.4:8080", -1) // nothing answers there; it must not reach the proxy
	outbound.none(t, "an excluded CIDR was captured")

	if got := cli.dial(t, "10.77.0.2:9000", -1); got != "connected" {
		t.Errorf("a connection into the Pod: %s", got)
	}
	if d := inbound.got(t, "→ the Pod's 9000"); d != "10.77.0.2:9000" {
		t.Errorf("the proxy read the inbound original destination %s, want 10.77.0.2:9000", d)
	}
	cli.dial(t, "10.77.0.2:9090", -1)
	podExcluded.got(t, "an excluded inbound port reaches the app itself")
	inbound.none(t, "an excluded inbound port was captured")
}
