package gateway

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// How the local clusters run the stand-in as a gateway Pod: the kubelet
// stand-in (localmesh/workloads) plays the Deployment's Envoy container
// with `meshfed gateway-standin` followed by the container's own arguments,
// the path in -c rewritten to where the config volume is on the host. Like
// Envoy, the stand-in reads that bootstrap and the SDS files it names for
// the controller's address and the gateway's SVID (ReadEnvoyBootstrap);
// the Runtime in its environment says where the container's other paths
// and the cluster's DNS names are here. It listens on its Pod's address
// (EnvPodIP), and also on a Unix socket in the link directory, which is
// how the other networks reach it (see LinkMain).

// LinkSocket is the Unix socket a gateway Pod at podIP listens on for port
// in the link directory.
func LinkSocket(dir, podIP string, port uint32) string {
	return filepath.Join(dir, fmt.Sprintf("%s-%d.sock", podIP, port))
}

// Main runs the stand-in as a gateway Pod until SIGTERM (ctx).
func Main(ctx context.Context, args []string, stderr *os.File) error {
	fs := flag.NewFlagSet("gateway-standin", flag.ContinueOnError)
	linkDir := fs.String("link-dir", "", "directory of the Unix sockets the other networks' links dial (required)")
	bootstrap := fs.String("c", "", "Envoy's bootstrap, on this host (required)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *linkDir == "" || *bootstrap == "" {
		return errors.New("gateway-standin: --link-dir and -c are required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("gateway-standin: --log-level: %w", err)
	}
	podIP := os.Getenv(EnvPodIP)
	if net.ParseIP(podIP) == nil {
		return fmt.Errorf("gateway-standin: %s=%q is not an address", EnvPodIP, podIP)
	}
	rt, err := RuntimeFromEnv()
	if err != nil {
		return fmt.Errorf("gateway-standin: %w", err)
	}
	addr, tlsCfg, err := ReadEnvoyBootstrap(*bootstrap, rt)
	if err != nil {
		return fmt.Errorf("gateway-standin: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	g := New(Config{
		XDSAddress: addr, TLS: tlsCfg, Logger: log,
		Dialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(podIP)}},
		Listen: func(port uint32) (net.Listener, error) {
			return listenBoth(net.JoinHostPort(podIP, strconv.Itoa(int(port))), LinkSocket(*linkDir, podIP, port))
		},
	})
	log.Info("gateway stand-in started", "pod-ip", podIP, "xds", addr)
	return g.Run(ctx)
}

// both accepts connections from a TCP and a Unix listener.
type both struct {
	tcp, unix net.Listener
	conns     chan net.Conn
	once      sync.Once
	closed    chan struct{}
}

func listenBoth(tcpAddr, sock string) (net.Listener, error) {
	t, err := net.Listen("tcp", tcpAddr)
	if err != nil {
		return nil, err
	}
	_ = os.Remove(sock)
	u, err := net.Listen("unix", sock)
	if err != nil {
		t.Close()
		return nil, err
	}
	b := &both{tcp: t, unix: u, conns: make(chan net.Conn), closed: make(chan struct{})}
	for _, l := range []net.Listener{t, u} {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					_ = b.Close()
					return
				}
				select {
				case b.conns <- c:
				case <-b.closed:
					c.Close()
					return
				}
			}
		}()
	}
	return b, nil
}

func (b *both) Accept() (net.Conn, error) {
	select {
	case c := <-b.conns:
		return c, nil
	case <-b.closed:
		return nil, net.ErrClosed
	}
}

func (b *both) Close() error {
	b.once.Do(func() {
		close(b.closed)
		_ = b.tcp.Close()
		_ = b.unix.Close()
	})
	return nil
}

func (b *both) Addr() net.Addr { return b.tcp.Addr() }

// LinkMain runs one network's end of the link to another network's
// gateway: it listens on the gateway's address inside this network and
// carries each connection, bytes untouched, to one of the gateway Pods'
// Unix sockets (round robin, skipping Pods that are gone), as the load
// balancer in front of a real gateway Service would. Stopping it cuts the
// link. Runs until ctx ends.
func LinkMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gateway-link", flag.ContinueOnError)
	listen := fs.String("listen", "", "the remote gateway's address, host:port, to listen on here (required)")
	pattern := fs.String("to", "", "glob of the remote gateway Pods' Unix sockets (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *listen == "" || *pattern == "" {
		return errors.New("gateway-link: --listen and --to are required")
	}
	if _, err := filepath.Match(*pattern, ""); err != nil {
		return fmt.Errorf("gateway-link: --to: %w", err)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); l.Close() }()
	var next int
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		socks, _ := filepath.Glob(*pattern)
		next++
		go carry(c, socks, next)
	}
}

// carry dials the sockets from start on, the first that answers takes c.
func carry(c net.Conn, socks []string, start int) {
	defer c.Close()
	for i := range socks {
		up, err := net.Dial("unix", socks[(start+i)%len(socks)])
		if err != nil {
			continue
		}
		defer up.Close()
		splice(c, up)
		return
	}
}
