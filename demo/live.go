package demo

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/meshfed/meshfed/localmesh"
)

// window is what the live table summarises.
const window = 3 * time.Second

// live redraws the table every Refresh until ctx ends, with the commands a
// user can run meanwhile to change what it shows.
func (e *env) live(ctx context.Context) error {
	east, west := e.h.Cluster("east"), e.h.Cluster("west")
	help := fmt.Sprintf(`Try, in another terminal (the table follows within a second or two):
  %[1]s --kubeconfig %[2]s apply -f %[4]s
  %[1]s --kubeconfig %[2]s apply -f %[5]s
  %[1]s --kubeconfig %[3]s delete traffictarget bookbuyer-access-bookstore -n bookstore   # west stops letting bookbuyer in
  %[1]s --kubeconfig %[3]s apply -f %[6]s   # and lets it in again
  %[1]s --kubeconfig %[2]s patch meshconfig meshfed-mesh-config -n meshfed-system --type merge -p '{"spec":{"traffic":{"enablePermissiveTrafficPolicyMode":true}}}'
  kill -STOP %[7]d   # freeze west's controller: workloads keep their config (fail-static)
  kill -CONT %[7]d
Press Ctrl-C to stop everything.
`, e.h.KubectlPath(), east.Kubeconfig, west.Kubeconfig,
		e.h.Manifest("split/bookstore-0-100.yaml"), e.h.Manifest("split/bookstore-50-50.yaml"),
		e.h.Manifest("access"), e.h.ControllerPID("west"))
	networks := ", on separate networks (west through its gateway " + west.GatewayAddress() + ")"
	if e.cfg.FlatNetwork {
		networks = ", on one network"
	}
	tick := time.NewTicker(e.cfg.Refresh)
	defer tick.Stop()
	for {
		var buf bytes.Buffer
		buf.WriteString("\x1b[H\x1b[2J")
		fmt.Fprintf(&buf, "meshfed demo — clusters east and west, federated%s; the bookstore split across them (%s)\n\n", networks, time.Now().Format("15:04:05"))
		localmesh.Render(&buf, e.h.Stats().Rows(time.Now(), window), window)
		buf.WriteString("\n" + help)
		if _, err := e.cfg.Out.Write(buf.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(e.cfg.Out, "\nstopping the demo: workloads, controllers, clusters")
			return nil
		case <-tick.C:
		}
	}
}
