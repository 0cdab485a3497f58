package scale

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// childConfig is what a client process is told (a JSON file).
type childConfig struct {
	// Server is the xDS server's host:port; BundleFile the trust bundle
	// (PEM) its certificate chains to.
	Server, BundleFile string
	// Marker is the endpoint address prefix the clients report in EDS.
	Marker  string
	Clients []childClient
}

type childClient struct {
	Name, CertFile, KeyFile string
	Listeners               []string
}

// clientProcess is a child process running adsClients: it prints READY
// once its certificates are loaded, starts every client at once when it
// reads "go", and stops when its standard input closes.
type clientProcess struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	ready chan struct{}
	done  chan struct{}
	// startedAt is when "go" was written.
	startedAt time.Time
}

// startClientProcess re-executes this test binary as TestScaleClientProcess
// for cfg; every event it prints goes to sink.
func startClientProcess(t *testing.T, cfg childConfig, sink func(event)) *clientProcess {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clients.json")
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleClientProcess$", "-test.timeout=2h")
	cmd.Env = append(os.Environ(), "MESHFED_SCALE_CHILD="+path)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &clientProcess{cmd: cmd, stdin: stdin, ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			line := sc.Text()
			if line == "READY" {
				close(p.ready)
				continue
			}
			if js, ok := strings.CutPrefix(line, "EVENT "); ok {
				var ev event
				if json.Unmarshal([]byte(js), &ev) == nil {
					sink(ev)
				}
			}
		}
	}()
	t.Cleanup(p.stop)
	select {
	case <-p.ready:
	case <-p.done:
		t.Fatal("client process ended before it was ready")
	case <-time.After(2 * time.Minute):
		t.Fatal("client process not ready within 2 minutes")
	}
	return p
}

// start tells every client to connect now.
func (p *clientProcess) start(t *testing.T) {
	t.Helper()
	p.startedAt = time.Now()
	if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
}

func (p *clientProcess) stop() {
	if p.stdin != nil {
		p.stdin.Close()
		p.stdin = nil
		_ = p.cmd.Wait()
		<-p.done
	}
}

// TestScaleClientProcess is the client side of the harness, run only as its
// child process.
func TestScaleClientProcess(t *testing.T) {
	path := os.Getenv("MESHFED_SCALE_CHILD")
	if path == "" {
		t.Skip("run by TestScaleFromAPIServer as its client process")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg childConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(cfg.BundleFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("trust bundle has no certificates")
	}
	conns := make([]*grpc.ClientConn, len(cfg.Clients))
	for i, c := range cfg.Clients {
		pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc := &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots, MinVersion: tls.VersionTLS12}
		if conns[i], err = grpc.NewClient(cfg.Server, grpc.WithTransportCredentials(credentials.NewTLS(tc))); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	var outMu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	emit := func(ev event) {
		js, _ := json.Marshal(ev)
		outMu.Lock()
		fmt.Fprintf(out, "EVENT %s\n", js)
		out.Flush()
		outMu.Unlock()
	}
	fmt.Println("READY")
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "go" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, c := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ac := &adsClient{name: c.Name, listeners: c.Listeners, marker: cfg.Marker, emit: emit}
			if err := ac.run(ctx, conns[i]); err != nil && ctx.Err() == nil {
				emit(event{Client: c.Name, Kind: "error", Err: err.Error(), At: time.Now().UnixNano()})
			}
		}()
	}
	for in.Scan() {
	}
	cancel()
	wg.Wait()
}
