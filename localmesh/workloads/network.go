package workloads

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
)

// Network is a Linux network namespace the runner made for one cluster's
// pods, joined to the host by a veth pair:
//
//	host netns:  <HostDevice> with HostIP (the pod CIDR's .1, where the
//	             controller listens) and the route to the pod CIDR
//	pod netns:   lo, <Device> with the CIDR's .2 and every pod address (/32)
//
// Every pod of the cluster runs in the one namespace, so pod-to-pod traffic
// never leaves it; pod-to-controller traffic crosses only the veth pair.
// Nothing is routed anywhere else. Creating it needs root (CAP_NET_ADMIN).
type Network struct {
	Name       string // `ip netns` name
	Device     string // veth end inside the namespace
	HostDevice string // veth end on the host
	HostIP     string // address of HostDevice, e.g. 10.244.123.1
	CIDR       *net.IPNet
}

// ErrNeedsRoot is returned when network namespaces cannot be made.
var ErrNeedsRoot = errors.New("workloads: creating network namespaces needs root (CAP_NET_ADMIN)")

// CanCreateNetworks reports whether this process may create networks.
func CanCreateNetworks() error {
	if os.Geteuid() != 0 {
		return ErrNeedsRoot
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("workloads: the ip command (iproute2) is needed: %w", err)
	}
	return nil
}

// CIDRInUse reports whether the host already has an address or a route in
// cidr (then a test must pick another range).
func CIDRInUse(cidr string) (bool, error) {
	_, want, err := net.ParseCIDR(cidr)
	if err != nil {
		return false, err
	}
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		return false, err
	}
	for _, f := range strings.Fields(string(out)) {
		if ip, _, err := net.ParseCIDR(f); err == nil && want.Contains(ip) {
			return true, nil
		}
	}
	out, err = exec.Command("ip", "-4", "route", "show").Output()
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if _, n, err := net.ParseCIDR(f[0]); err == nil && (n.Contains(want.IP) || want.Contains(n.IP)) {
			return true, nil
		}
	}
	return false, nil
}

// CreateNetwork makes a namespace and veth pair for the /24 cidr. Delete
// it when done.
func CreateNetwork(cidr string) (*Network, error) {
	if err := CanCreateNetworks(); err != nil {
		return nil, err
	}
	ip, ipn, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, err
	}
	if ones, _ := ipn.Mask.Size(); ones != 24 || ip.To4() == nil {
		return nil, fmt.Errorf("workloads: pod CIDR %s: want an IPv4 /24", cidr)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	base := ipn.IP.To4()
	n := &Network{
		Name: "meshfed-" + id, Device: "mfp-" + id, HostDevice: "mfh-" + id,
		HostIP: net.IPv4(base[0], base[1], base[2], 1).String(), CIDR: ipn,
	}
	podSide := net.IPv4(base[0], base[1], base[2], 2).String()
	steps := [][]string{
		{"netns", "add", n.Name},
		{"link", "add", n.HostDevice, "type", "veth", "peer", "name", n.Device, "netns", n.Name},
		{"addr", "add", n.HostIP + "/24", "dev", n.HostDevice},
		{"link", "set", n.HostDevice, "up"},
		{"-n", n.Name, "link", "set", "lo", "up"},
		{"-n", n.Name, "addr", "add", podSide + "/24", "dev", n.Device},
		{"-n", n.Name, "link", "set", n.Device, "up"},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return nil, errors.Join(err, n.Delete())
		}
	}
	return n, nil
}

// AddAddress puts a pod address on the namespace's device; adding one that
// is there already is not an error. Addresses outside the CIDR are refused,
// so that no test ever sends traffic to an address it did not make.
func (n *Network) AddAddress(ip string) error {
	a := net.ParseIP(ip)
	if a == nil || !n.CIDR.Contains(a) {
		return fmt.Errorf("workloads: address %q is outside the network %s", ip, n.CIDR)
	}
	err := ipCmd("-n", n.Name, "addr", "add", ip+"/32", "dev", n.Device)
	if err != nil && strings.Contains(err.Error(), "File exists") {
		return nil
	}
	return err
}

// Command returns a command that runs name inside the namespace (through
// `ip netns exec`, which execs the program itself).
func (n *Network) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Delete removes the namespace and the veth pair.
func (n *Network) Delete() error {
	var errs []error
	if err := ipCmd("link", "del", n.HostDevice); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
		errs = append(errs, err)
	}
	if err := ipCmd("netns", "del", n.Name); err != nil && !strings.Contains(err.Error(), "No such file") {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
