// Package capture writes and applies the traffic-capture rules of a Pod
// whose data plane is an Envoy sidecar: iptables NAT rules, installed in
// the Pod's network namespace by an init container (`meshfed capture`),
// that send the Pod's outbound TCP connections to the proxy's outbound
// port and inbound ones to its inbound port, with the original destination
// readable by the proxy (SO_ORIGINAL_DST). The proxy's own connections
// (its UID) are not captured, nor loopback, nor what the Pod's annotations
// exclude (ports, CIDRs), as Open Service Mesh's init container does.
//
// Rules is pure; Apply runs iptables-restore.
package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// Defaults, as the injected Envoy bootstrap listens.
const (
	DefaultProxyUID     = 1337
	DefaultOutboundPort = 15001
	DefaultInboundPort  = 15003
)

// Chains the rules create in the nat table.
const (
	chainInbound     = "MESHFED_INBOUND"
	chainInRedirect  = "MESHFED_IN_REDIRECT"
	chainOutbound    = "MESHFED_OUTBOUND"
	chainOutRedirect = "MESHFED_OUT_REDIRECT"
)

// Config is what is captured, and where it goes.
type Config struct {
	// ProxyUID is the proxy's user: its connections are not captured.
	ProxyUID int
	// OutboundPort and InboundPort are where the proxy listens.
	OutboundPort, InboundPort int
	// ExcludeOutboundPorts, ExcludeOutboundCIDRs and ExcludeInboundPorts
	// pass by the proxy.
	ExcludeOutboundPorts []int
	ExcludeOutboundCIDRs []netip.Prefix
	ExcludeInboundPorts  []int
}

// DefaultConfig is the proxy's defaults with nothing excluded.
func DefaultConfig() Config {
	return Config{ProxyUID: DefaultProxyUID, OutboundPort: DefaultOutboundPort, InboundPort: DefaultInboundPort}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	port := func(what string, p int) {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("capture: %s %d is not a port", what, p))
		}
	}
	if c.ProxyUID < 0 {
		errs = append(errs, fmt.Errorf("capture: proxy UID %d", c.ProxyUID))
	}
	port("outbound port", c.OutboundPort)
	port("inbound port", c.InboundPort)
	for _, p := range c.ExcludeOutboundPorts {
		port("excluded outbound port", p)
	}
	for _, p := range c.ExcludeInboundPorts {
		port("excluded inbound port", p)
	}
	for _, p := range c.ExcludeOutboundCIDRs {
		if !p.IsValid() || !p.Addr().Is4() {
			errs = append(errs, fmt.Errorf("capture: excluded CIDR %v is not an IPv4 prefix", p))
		}
	}
	return errors.Join(errs...)
}

// Rules returns the rules as iptables-restore input for the nat table.
// They add to the built-in chains and replace meshfed's own.
func Rules(c Config) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("*nat")
	for _, ch := range []string{chainInbound, chainInRedirect, chainOutbound, chainOutRedirect} {
		line(":%s - [0:0]", ch)
	}
	// Inbound: everything TCP arriving at the Pod goes to the proxy's
	// inbound port, but for excluded ports and the proxy's own ports.
	line("-A PREROUTING -p tcp -j %s", chainInbound)
	for _, p := range sortedPorts(append([]int{c.InboundPort, c.OutboundPort}, c.ExcludeInboundPorts...)) {
		line("-A %s -p tcp --dport %d -j RETURN", chainInbound, p)
	}
	line("-A %s -p tcp -j %s", chainInbound, chainInRedirect)
	line("-A %s -p tcp -j REDIRECT --to-ports %d", chainInRedirect, c.InboundPort)
	// Outbound: the proxy's own connections, loopback and exclusions pass;
	// every other TCP connection goes to the proxy's outbound port.
	line("-A OUTPUT -p tcp -j %s", chainOutbound)
	line("-A %s -m owner --uid-owner %d -j RETURN", chainOutbound, c.ProxyUID)
	line("-A %s -o lo -j RETURN", chainOutbound)
	line("-A %s -d 127.0.0.0/8 -j RETURN", chainOutbound)
	for _, p := range c.ExcludeOutboundCIDRs {
		line("-A %s -d %s -j RETURN", chainOutbound, p.Masked())
	}
	for _, p := range sortedPorts(c.ExcludeOutboundPorts) {
		line("-A %s -p tcp --dport %d -j RETURN", chainOutbound, p)
	}
	line("-A %s -p tcp -j %s", chainOutbound, chainOutRedirect)
	line("-A %s -p tcp -j REDIRECT --to-ports %d", chainOutRedirect, c.OutboundPort)
	line("COMMIT")
	return b.String()
}

func sortedPorts(ps []int) []int {
	out := slices.Clone(ps)
	slices.Sort(out)
	return slices.Compact(out)
}

// Apply installs the rules in the calling process's network namespace
// with iptables-restore (keeping the other tables' rules).
func Apply(ctx context.Context, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(Rules(c))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("capture: iptables-restore: %v: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Annotations that exclude traffic from capture (Open Service Mesh's,
// under meshfed.io): comma-separated ports or CIDRs.
const (
	AnnotationOutboundPortExclusions = "meshfed.io/outbound-port-exclusion-list"
	AnnotationOutboundCIDRExclusions = "meshfed.io/outbound-ip-range-exclusion-list"
	AnnotationInboundPortExclusions  = "meshfed.io/inbound-port-exclusion-list"
)

// FromAnnotations returns c with the exclusions a Pod's annotations ask
// for; an error names the annotation that does not parse.
func FromAnnotations(c Config, annotations map[string]string) (Config, error) {
	ports := func(key string) ([]int, error) {
		var out []int
		for _, f := range fields(annotations[key]) {
			p, err := strconv.Atoi(f)
			if err != nil || p < 1 || p > 65535 {
				return nil, fmt.Errorf("annotation %s: %q is not a port", key, f)
			}
			out = append(out, p)
		}
		return out, nil
	}
	var err error
	if c.ExcludeOutboundPorts, err = ports(AnnotationOutboundPortExclusions); err != nil {
		return c, err
	}
	if c.ExcludeInboundPorts, err = ports(AnnotationInboundPortExclusions); err != nil {
		return c, err
	}
	c.ExcludeOutboundCIDRs = nil
	for _, f := range fields(annotations[AnnotationOutboundCIDRExclusions]) {
		p, err := netip.ParsePrefix(f)
		if err != nil || !p.Addr().Is4() {
			return c, fmt.Errorf("annotation %s: %q is not an IPv4 CIDR", AnnotationOutboundCIDRExclusions, f)
		}
		c.ExcludeOutboundCIDRs = append(c.ExcludeOutboundCIDRs, p)
	}
	return c, nil
}

func fields(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
