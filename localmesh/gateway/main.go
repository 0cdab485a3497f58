package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// How the local clusters run the stand-in as a gateway Pod: the kubelet
// stand-in (localmesh/workloads) plays the Deployment's Envoy container
// with `meshfed gateway-standin` followed by the container's own arguments
// (Envoy's -c and --log-level, read and not used: the stand-in takes the
// controller's address and its SVID from the files meshfed agent keeps for
// the Pod, which is what the Envoy bootstrap names too). It listens on its
// Pod's address, and also on a Unix socket in the link directory, which is
// how the other networks reach it (see LinkMain).

// Environment the kubelet stand-in gives every process it runs.
const (
	envBootstrap = "GRPC_XDS_BOOTSTRAP" // the agent's bootstrap: xDS address and SVID files
	envPodIP     = "MESHFED_POD_IP"
)

// LinkSocket is the Unix socket a gateway Pod at podIP listens on for port
// in the link directory.
func LinkSocket(dir, podIP string, port uint32) string {
	return filepath.Join(dir, fmt.Sprintf("%s-%d.sock", podIP, port))
}

// Main runs the stand-in as a gateway Pod until SIGTERM (ctx).
func Main(ctx context.Context, args []string, stderr *os.File) error {
	fs := flag.NewFlagSet("gateway-standin", flag.ContinueOnError)
	linkDir := fs.String("link-dir", "", "directory of the Unix sockets the other networks' links dial (required)")
	_ = fs.String("c", "", "Envoy's bootstrap (not read: the stand-in follows the agent's bootstrap)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *linkDir == "" {
		return errors.New("gateway-standin: --link-dir is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("gateway-standin: --log-level: %w", err)
	}
	podIP := os.Getenv(envPodIP)
	if net.ParseIP(podIP) == nil {
		return fmt.Errorf("gateway-standin: %s=%q is not an address", envPodIP, podIP)
	}
	addr, tlsCfg, err := fromBootstrap(os.Getenv(envBootstrap))
	if err != nil {
		return err
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

// fromBootstrap reads the controller's address and the SVID files from a
// gRPC xDS bootstrap as meshfed agent writes it (controller/bootstrap).
func fromBootstrap(path string) (string, *tls.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("gateway-standin: the agent's bootstrap (%s): %w", envBootstrap, err)
	}
	var boot struct {
		XDSServers []struct {
			ServerURI    string `json:"server_uri"`
			ChannelCreds []struct {
				Config struct {
					Cert string `json:"certificate_file"`
					Key  string `json:"private_key_file"`
					CA   string `json:"ca_certificate_file"`
				} `json:"config"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
	}
	if err := json.Unmarshal(b, &boot); err != nil || len(boot.XDSServers) == 0 || len(boot.XDSServers[0].ChannelCreds) == 0 {
		return "", nil, fmt.Errorf("gateway-standin: %s holds no xDS server with credentials (%v)", path, err)
	}
	s := boot.XDSServers[0]
	files := s.ChannelCreds[0].Config
	// As grpc-go: the server's name is the target's host; a Unix socket's
	// is "localhost".
	serverName := "localhost"
	if u, err := url.Parse(s.ServerURI); err == nil && u.Scheme != "unix" {
		if h, _, err := net.SplitHostPort(s.ServerURI); err == nil {
			serverName = h
		}
	}
	caPEM, err := os.ReadFile(files.CA)
	if err != nil {
		return "", nil, fmt.Errorf("gateway-standin: trust bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return "", nil, fmt.Errorf("gateway-standin: %s holds no certificate", files.CA)
	}
	return s.ServerURI, &tls.Config{
		ServerName: serverName, RootCAs: pool, MinVersion: tls.VersionTLS12,
		// Read at every handshake: the agent renews the SVID in place.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(files.Cert, files.Key)
			return &c, err
		},
	}, nil
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
