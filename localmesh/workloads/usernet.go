package workloads

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// UserNetwork is a network namespace inside a new user namespace: made
// without root, holding only a loopback device on which every pod address
// of the clusters it serves is put. Workloads run inside it (through
// nsenter) and reach one another at their pod addresses; nothing in it has
// a route anywhere else, so no packet can leave it. They reach their
// controller through Unix sockets, which are files and so cross network
// namespaces.
//
// This is how `meshfed demo` and the test suites run the bookstore without
// root: one flat network for all clusters' pods, as a multi-cluster mesh
// without gateways expects.
type UserNetwork struct {
	holder *exec.Cmd
	done   chan struct{}
	cidrs  []*net.IPNet

	mu    sync.Mutex
	addrs map[string]bool
}

// CanCreateUserNetworks reports whether this machine lets this user make a
// user and network namespace (util-linux unshare and nsenter, iproute2).
func CanCreateUserNetworks() error {
	for _, tool := range []string{"unshare", "nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("workloads: %s is needed (util-linux, iproute2): %w", tool, err)
		}
	}
	out, err := exec.Command("unshare", "--user", "--map-root-user", "--net", "true").CombinedOutput()
	if err != nil {
		return fmt.Errorf("workloads: this machine does not allow unprivileged user and network namespaces (unshare -Urn: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CreateUserNetwork makes the namespace for pod addresses in cidrs.
// Close it when done.
func CreateUserNetwork(cidrs ...string) (*UserNetwork, error) {
	if err := CanCreateUserNetworks(); err != nil {
		return nil, err
	}
	n := &UserNetwork{done: make(chan struct{}), addrs: map[string]bool{}}
	for _, c := range cidrs {
		_, ipn, err := net.ParseCIDR(c)
		if err != nil || ipn.IP.To4() == nil {
			return nil, fmt.Errorf("workloads: pod CIDR %q is not an IPv4 CIDR", c)
		}
		n.cidrs = append(n.cidrs, ipn)
	}
	// The holder keeps the namespaces alive; it reads stdin so that it
	// ends when we do, even if we are killed.
	n.holder = exec.Command("unshare", "--user", "--map-root-user", "--net", "--", "sh", "-c", "echo ready; read _")
	n.holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := n.holder.StdinPipe()
	if err != nil {
		return nil, err
	}
	_ = stdin // closed by Close, or by the kernel when this process exits
	stdout, err := n.holder.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := n.holder.Start(); err != nil {
		return nil, fmt.Errorf("workloads: start namespace holder: %w", err)
	}
	go func() {
		_ = n.holder.Wait()
		close(n.done)
	}()
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("unexpected %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			return nil, errors.Join(fmt.Errorf("workloads: namespace holder: %w", err), n.Close())
		}
	case <-time.After(10 * time.Second):
		return nil, errors.Join(errors.New("workloads: namespace holder did not start"), n.Close())
	}
	if err := n.ip("link", "set", "lo", "up"); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	return n, nil
}

// Command returns a command that runs name inside the namespace, with the
// caller's credentials (mapped to root inside the user namespace).
func (n *UserNetwork) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{
		"--target", fmt.Sprint(n.holder.Process.Pid), "--user", "--net", "--preserve-credentials", "--", name}, args...)...)
}

func (n *UserNetwork) ip(args ...string) error {
	out, err := n.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (n *UserNetwork) inRange(ip string) error {
	a := net.ParseIP(ip)
	for _, c := range n.cidrs {
		if a != nil && c.Contains(a) {
			return nil
		}
	}
	return fmt.Errorf("workloads: address %q is outside the network's pod CIDRs", ip)
}

// AddAddress puts a pod address on the namespace's loopback device; adding
// one that is there is not an error. Addresses outside the pod CIDRs are
// refused.
func (n *UserNetwork) AddAddress(ip string) error {
	if err := n.inRange(ip); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.addrs[ip] {
		return nil
	}
	if err := n.ip("addr", "add", ip+"/32", "dev", "lo"); err != nil && !strings.Contains(err.Error(), "File exists") {
		return err
	}
	n.addrs[ip] = true
	return nil
}

// RemoveAddress takes a pod address away, as a network partition or a
// lost cluster would: connections to it then fail at once.
func (n *UserNetwork) RemoveAddress(ip string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.addrs[ip] {
		return nil
	}
	delete(n.addrs, ip)
	if err := n.ip("addr", "del", ip+"/32", "dev", "lo"); err != nil && !strings.Contains(err.Error(), "Cannot assign") {
		return err
	}
	return nil
}

// Close ends the namespaces. Processes started in them should be stopped
// first; any left lose their network.
func (n *UserNetwork) Close() error {
	if n.holder == nil || n.holder.Process == nil {
		return nil
	}
	_ = n.holder.Process.Signal(syscall.SIGKILL)
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		return errors.New("workloads: namespace holder did not exit")
	}
	return nil
}

// PID is the holder's process ID (for nsenter by hand).
func (n *UserNetwork) PID() int { return n.holder.Process.Pid }
