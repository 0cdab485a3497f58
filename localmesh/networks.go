package localmesh

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/localmesh/gateway"
	"github.com/meshfed/meshfed/localmesh/workloads"
)

// envoyRepository is the image of the gateway's Envoy container
// (deploy.DefaultEnvoyImage without its tag), which the stand-in plays.
var envoyRepository = deploy.DefaultEnvoyImage[:strings.LastIndex(deploy.DefaultEnvoyImage, ":")]

// gatewayCIDR holds the gateways' addresses: cluster i's is 10.245.0.<i+1>,
// put on every network but its own by the links.
const gatewayCIDR = "10.245.0.0/24"

// createNetworks makes the pod networks: one for all clusters, or one each.
func (h *Harness) createNetworks(cidrs map[string]string, all []string) error {
	if !h.cfg.SeparateNetworks {
		n, err := workloads.CreateUserNetwork(all...)
		if err != nil {
			return err
		}
		for _, name := range h.cfg.Clusters {
			h.nets[name] = n
		}
		return nil
	}
	for _, name := range h.cfg.Clusters {
		n, err := workloads.CreateUserNetwork(cidrs[name], gatewayCIDR)
		if err != nil {
			return err
		}
		h.nets[name] = n
	}
	return nil
}

// gatewayAddress is a cluster's gateway address on separate networks.
func (h *Harness) gatewayAddress(cluster string) string {
	if !h.cfg.SeparateNetworks {
		return ""
	}
	for i, name := range h.cfg.Clusters {
		if name == cluster {
			return fmt.Sprintf("10.245.0.%d:%d", i+1, generate.GatewayPort)
		}
	}
	return ""
}

// linkDir holds the Unix sockets the gateway Pods listen on for the links.
func (h *Harness) linkDir() string { return filepath.Join(h.dir, "links") }

// CutLink stops carrying connections from one cluster's network to
// another's gateway, as a lost link between the networks would: open
// connections end and new ones are refused.
func (h *Harness) CutLink(from, to string) {
	h.linksMu.Lock()
	defer h.linksMu.Unlock()
	if p := h.links[[2]string{from, to}]; p != nil {
		p.stop()
		delete(h.links, [2]string{from, to})
		fmt.Fprintf(h.log, "--- harness: cut the link %s → %s's gateway at %s\n", from, to, time.Now().Format(time.RFC3339Nano))
	}
}

// RestoreLink carries connections from one cluster's network to another's
// gateway (again).
func (h *Harness) RestoreLink(from, to string) error {
	src, dst := h.clusters[from], h.clusters[to]
	if src == nil || dst == nil || dst.gateway == "" {
		return fmt.Errorf("localmesh: no link from %q to %q (separate networks only)", from, to)
	}
	h.linksMu.Lock()
	defer h.linksMu.Unlock()
	if h.links[[2]string{from, to}] != nil {
		return nil
	}
	n := h.nets[from]
	host, _, err := net.SplitHostPort(dst.gateway)
	if err != nil {
		return err
	}
	if err := n.AddAddress(host); err != nil {
		return err
	}
	// Any of the cluster's pods: 10.244.<i>.*.
	pattern := gateway.LinkSocket(h.linkDir(), strings.TrimSuffix(dst.PodCIDR, "0/24")+"*", generate.GatewayPort)
	cmd := n.Command(h.bins.meshfed, "gateway-link", "--listen", dst.gateway, "--to", pattern)
	cmd.Stdout, cmd.Stderr = h.log, h.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("localmesh: link %s → %s: %w", from, to, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	h.links[[2]string{from, to}] = p
	fmt.Fprintf(h.log, "--- harness: link %s → %s's gateway %s at %s\n", from, to, dst.gateway, time.Now().Format(time.RFC3339Nano))
	return nil
}

// stop ends the process and waits for it.
func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// via names the gateway a server saw a connection come from (its peer
// address is a gateway Pod's), "" for anything else.
func (h *Harness) via(peer string) string {
	host, _, err := net.SplitHostPort(peer)
	if err != nil {
		return ""
	}
	if w, ok := h.runner.At(host); ok && w.Labels[deploy.LabelName] == deploy.GatewayName {
		return w.Cluster + "'s gateway"
	}
	return ""
}

// NetworkCommand returns a command that runs name inside a cluster's pod
// network, as a process in one of its pods would.
func (h *Harness) NetworkCommand(cluster, name string, args ...string) (*exec.Cmd, error) {
	n := h.nets[cluster]
	if n == nil {
		return nil, fmt.Errorf("localmesh: no cluster %q", cluster)
	}
	cmd := n.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// StopGateway kills the processes of a cluster's gateway Pods, as losing
// every gateway replica would. Its API server still says they run;
// RestartGateway makes new ones.
func (h *Harness) StopGateway(cluster string) {
	h.runner.StopMatching(func(w workloads.Workload) bool {
		return w.Cluster == cluster && w.Labels[deploy.LabelName] == deploy.GatewayName
	})
}

// RestartGateway deletes a cluster's gateway Pods; their Deployment makes
// new ones, which the stand-in runs.
func (h *Harness) RestartGateway(ctx context.Context, cluster string) error {
	return h.Kubectl(ctx, cluster, "delete", "pods", "-n", deploy.DefaultNamespace, "-l", deploy.LabelName+"="+deploy.GatewayName, "--wait=false")
}
