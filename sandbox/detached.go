package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The CLI keeps a sandbox running after `meshfed sandbox up` returns: up
// starts a supervisor process (`meshfed sandbox serve`) in its own session,
// which runs Start and waits for a signal; down signals it and then removes
// anything left in its process group.

// State is what a running background sandbox records in <dir>/state.json.
type State struct {
	// PID is the supervisor's process ID; it leads its own process group.
	PID int `json:"pid"`
	// Started is when the clusters became ready.
	Started time.Time `json:"started"`
	// Clusters are the running clusters.
	Clusters []ClusterState `json:"clusters"`
	// BinDir holds the kube-apiserver, etcd, kube-controller-manager and
	// kubectl binaries the sandbox runs.
	BinDir string `json:"binDir"`
}

// ClusterState describes one cluster of a background sandbox.
type ClusterState struct {
	Name       string `json:"name"`
	Kubeconfig string `json:"kubeconfig"`
	Zone       string `json:"zone"`
	PodCIDR    string `json:"podCIDR"`
	Node       string `json:"node"`
}

// DefaultDir is where the CLI keeps a background sandbox: MESHFED_SANDBOX_DIR
// or <user cache dir>/meshfed/sandbox.
func DefaultDir() (string, error) {
	if d := os.Getenv("MESHFED_SANDBOX_DIR"); d != "" {
		return d, nil
	}
	root, err := cacheRoot("")
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "sandbox"), nil
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }
func logPath(dir string) string   { return filepath.Join(dir, "sandbox.log") }

// Serve runs the clusters of cfg until ctx ends, recording State in cfg.Dir
// once they are ready, then stops them and removes the record.
func Serve(ctx context.Context, cfg Config) error {
	if cfg.Dir == "" {
		return errors.New("sandbox: serve needs a directory")
	}
	sb, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	st := State{PID: os.Getpid(), Started: time.Now(), BinDir: sb.BinDir()}
	for _, c := range sb.Clusters() {
		st.Clusters = append(st.Clusters, ClusterState{
			Name: c.Name, Kubeconfig: c.KubeconfigPath, Zone: c.Zone, PodCIDR: c.PodCIDR, Node: c.NodeName,
		})
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	tmp := statePath(cfg.Dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err == nil {
		err = os.Rename(tmp, statePath(cfg.Dir))
	}
	if err != nil {
		_ = sb.Stop()
		return fmt.Errorf("sandbox: record state: %w", err)
	}
	<-ctx.Done()
	_ = os.Remove(statePath(cfg.Dir))
	return sb.Stop()
}

// Up starts a background sandbox by running serveCmd (the CLI's own
// `sandbox serve` command) in a new session, and waits until the clusters
// are ready or the supervisor fails. Progress of a first build is copied to
// progress.
func Up(ctx context.Context, dir string, serveCmd []string, progress io.Writer) (*State, error) {
	if st, err := ReadState(dir); err == nil && processAlive(st.PID) {
		return nil, fmt.Errorf("sandbox: already running in %s (pid %d); run `meshfed sandbox down` first", dir, st.PID)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	_ = os.Remove(statePath(dir))
	logf, err := os.Create(logPath(dir))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(serveCmd[0], serveCmd[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("sandbox: start supervisor: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var shown int64
	for {
		shown = copyNew(logPath(dir), shown, progress)
		if st, err := ReadState(dir); err == nil {
			return st, nil
		}
		select {
		case err := <-exited:
			// Whatever the supervisor had started dies with it.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			copyNew(logPath(dir), shown, progress)
			return nil, fmt.Errorf("sandbox: supervisor exited before the clusters were ready (%v); last lines of %s:\n%s", err, logPath(dir), LogTail(logPath(dir), 5))
		case <-ctx.Done():
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// copyNew copies build progress lines ("sandbox: ...") written to the log
// after offset to w and returns the new offset.
func copyNew(path string, offset int64, w io.Writer) int64 {
	f, err := os.Open(path)
	if err != nil {
		return offset
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return offset
	}
	b, _ := io.ReadAll(f)
	last := 0
	for i, ch := range b {
		if ch != '\n' {
			continue
		}
		line := b[last:i]
		if len(line) > 9 && string(line[:9]) == "sandbox: " {
			fmt.Fprintf(w, "%s\n", line)
		}
		last = i + 1
	}
	return offset + int64(last)
}

// ReadState reads the record of a background sandbox in dir.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("sandbox: %s: %w", statePath(dir), err)
	}
	return &st, nil
}

// Down stops the background sandbox in dir and waits until no process of
// it is left. It is not an error if none is running.
func Down(dir string) error {
	st, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	pgid := st.PID
	if processAlive(st.PID) {
		_ = syscall.Kill(st.PID, syscall.SIGTERM)
		deadline := time.Now().Add(90 * time.Second)
		for processAlive(st.PID) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Anything still in the supervisor's process group (an API server
	// that did not stop in time) is killed.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for groupAlive(pgid) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if groupAlive(pgid) {
		return fmt.Errorf("sandbox: processes of group %d still running", pgid)
	}
	_ = os.Remove(statePath(dir))
	return nil
}

// ClusterHealth is what ReadStatus finds for one cluster.
type ClusterHealth struct {
	ClusterState
	// Ready says the API server answered /readyz.
	Ready bool
	// Nodes and Pods count the cluster's objects; Err says why they could
	// not be read.
	Nodes, Pods int
	Err         error
}

// ReadStatus reports whether the background sandbox in dir is running and
// how each of its clusters is.
func ReadStatus(ctx context.Context, dir string) (*State, []ClusterHealth, bool, error) {
	st, err := ReadState(dir)
	if err != nil {
		return nil, nil, false, err
	}
	running := processAlive(st.PID)
	var out []ClusterHealth
	for _, c := range st.Clusters {
		h := ClusterHealth{ClusterState: c}
		h.Err = func() error {
			cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
			if err != nil {
				return err
			}
			cfg.Timeout = 3 * time.Second
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return err
			}
			if _, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
				return err
			}
			h.Ready = true
			nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			h.Nodes, h.Pods = len(nodes.Items), len(pods.Items)
			return nil
		}()
		out = append(out, h)
	}
	return st, out, running, nil
}

func processAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

func groupAlive(pgid int) bool {
	return pgid > 0 && syscall.Kill(-pgid, 0) == nil
}

// LogTail returns the last n lines of the file at path, or "" if it cannot
// be read: what a failed start prints of the control planes' log.
func LogTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
