package main

import (
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/capture"
)

func newCaptureCommand() *cobra.Command {
	c := capture.DefaultConfig()
	var cidrs []string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "capture",
		Short: "Install the traffic-capture rules of a Pod with an Envoy sidecar (its init container runs this)",
		Long: `capture installs, in the calling process's network namespace, the iptables
NAT rules that send the Pod's outbound TCP connections to the proxy's
outbound port and inbound ones to its inbound port (the proxy reads the
original destination with SO_ORIGINAL_DST). The proxy's own connections
(--proxy-uid), loopback and the exclusions pass. Needs NET_ADMIN and
iptables-restore.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, s := range cidrs {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					return err
				}
				c.ExcludeOutboundCIDRs = append(c.ExcludeOutboundCIDRs, p)
			}
			if err := c.Validate(); err != nil {
				return err
			}
			if dryRun {
				_, err := cmd.OutOrStdout().Write([]byte(capture.Rules(c)))
				return err
			}
			return capture.Apply(cmd.Context(), c)
		},
	}
	f := cmd.Flags()
	f.IntVar(&c.ProxyUID, "proxy-uid", c.ProxyUID, "the proxy's user ID: its connections are not captured")
	f.IntVar(&c.OutboundPort, "outbound-port", c.OutboundPort, "the proxy's outbound listener port")
	f.IntVar(&c.InboundPort, "inbound-port", c.InboundPort, "the proxy's inbound listener port")
	f.IntSliceVar(&c.ExcludeOutboundPorts, "exclude-outbound-port", nil, "outbound destination port not captured (repeatable)")
	f.StringSliceVar(&cidrs, "exclude-outbound-cidr", nil, "outbound destination CIDR not captured (repeatable)")
	f.IntSliceVar(&c.ExcludeInboundPorts, "exclude-inbound-port", nil, "inbound port not captured (repeatable)")
	f.BoolVar(&dryRun, "dry-run", false, "print the rules (iptables-restore input) instead of installing them")
	return cmd
}
