package sandbox

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Binary names the sandbox needs in its assets directory.
const (
	BinAPIServer         = "kube-apiserver"
	BinControllerManager = "kube-controller-manager"
	BinKubectl           = "kubectl"
	BinEtcd              = "etcd"
)

// kubeVersionLDFlags stamps the version that the API server reports, so that
// clients see v1.37.2 and not a development version.
const kubeVersionLDFlags = "-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2 " +
	"-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"

// AssetsOptions says where the pinned tools modules are and where to cache
// what they build.
type AssetsOptions struct {
	// ToolsDir is the repository's tools/ directory holding the kube and
	// etcd modules. Empty: found from MESHFED_TOOLS_DIR or by walking up
	// from the working directory and the executable; failing that, the
	// copy embedded in the binary is written under CacheDir/tools.
	ToolsDir string
	// CacheDir is where built binaries are kept, one subdirectory per
	// version of the tools modules. Empty: MESHFED_CACHE_DIR, or
	// <user cache dir>/meshfed.
	CacheDir string
	// Progress receives one line per build step; nil discards it.
	Progress io.Writer
}

// EnsureBinaries returns a directory holding kube-apiserver,
// kube-controller-manager, kubectl and etcd, building them from the pinned
// tools modules the first time (several minutes on two cores) and reusing
// them afterwards. Concurrent callers wait for one build.
func EnsureBinaries(opts AssetsOptions) (string, error) {
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	cacheDir, err := cacheRoot(opts.CacheDir)
	if err != nil {
		return "", err
	}
	toolsDir, err := findToolsDir(opts.ToolsDir)
	if errors.Is(err, errNoToolsDir) {
		// No checkout: the copy this binary carries.
		toolsDir, err = writeEmbeddedTools(filepath.Join(cacheDir, "tools"))
	}
	if err != nil {
		return "", err
	}
	key, err := toolsKey(toolsDir)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cacheDir, "bin", "k8s-v1.37.2-etcd-v3.6.6-"+key)
	if haveAll(dir) {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("sandbox: make binary cache %s: %w", dir, err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return "", err
	}
	defer unlock()
	if haveAll(dir) { // another process built them while we waited
		return dir, nil
	}
	fmt.Fprintf(progress, "sandbox: building Kubernetes v1.37.2 and etcd v3.6.6 from their Go modules into %s\n", dir)
	fmt.Fprintf(progress, "sandbox: this happens once and takes about 10 minutes on 2 cores; later runs reuse the binaries\n")
	builds := []struct {
		module  string
		ldflags string
		pkgs    []string
	}{
		{"etcd", "-s -w", []string{"."}},
		{"kube", kubeVersionLDFlags, []string{
			"k8s.io/kubernetes/cmd/kube-apiserver",
			"k8s.io/kubernetes/cmd/kube-controller-manager",
			"k8s.io/kubernetes/cmd/kubectl",
		}},
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	for _, b := range builds {
		out := tmp + string(filepath.Separator)
		if b.module == "etcd" {
			out = filepath.Join(tmp, BinEtcd)
		}
		args := append([]string{"build", "-v", "-ldflags", b.ldflags, "-o", out}, b.pkgs...)
		if err := runBuild(filepath.Join(toolsDir, b.module), args, progress); err != nil {
			return "", fmt.Errorf("sandbox: build %s: %w", b.module, err)
		}
	}
	for _, name := range []string{BinAPIServer, BinControllerManager, BinKubectl, BinEtcd} {
		if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("sandbox: install %s: %w", name, err)
		}
	}
	fmt.Fprintf(progress, "sandbox: binaries ready in %s\n", dir)
	return dir, nil
}

// runBuild runs go with args in dir and reports how many packages have been
// compiled every few seconds, so that a long first build shows progress.
func runBuild(dir string, args []string, progress io.Writer) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	var (
		count int
		last  = time.Now()
		tail  []string
		start = time.Now()
	)
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		count++
		tail = append(tail, line)
		if len(tail) > 40 {
			tail = tail[1:]
		}
		if time.Since(last) > 5*time.Second {
			fmt.Fprintf(progress, "sandbox: building %s: %d packages compiled (%s)\n",
				filepath.Base(dir), count, time.Since(start).Round(time.Second))
			last = time.Now()
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%w\n%s", err, strings.Join(tail, "\n"))
	}
	fmt.Fprintf(progress, "sandbox: built %s in %s\n", filepath.Base(dir), time.Since(start).Round(time.Second))
	return nil
}

func haveAll(dir string) bool {
	for _, name := range []string{BinAPIServer, BinControllerManager, BinKubectl, BinEtcd} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// toolsKey is a short digest of the tools modules' go.mod and go.sum files,
// so that changing a pinned version builds new binaries.
func toolsKey(toolsDir string) (string, error) {
	h := sha256.New()
	for _, f := range []string{"kube/go.mod", "kube/go.sum", "etcd/go.mod", "etcd/go.sum", "etcd/main.go"} {
		b, err := os.ReadFile(filepath.Join(toolsDir, f))
		if err != nil {
			return "", fmt.Errorf("sandbox: read tools module: %w", err)
		}
		h.Write([]byte(f))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

func findToolsDir(explicit string) (string, error) {
	if explicit == "" {
		explicit = os.Getenv("MESHFED_TOOLS_DIR")
	}
	if explicit != "" {
		if _, err := os.Stat(filepath.Join(explicit, "kube", "go.mod")); err != nil {
			return "", fmt.Errorf("sandbox: tools directory %s: %w", explicit, err)
		}
		return explicit, nil
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, start := range starts {
		for dir := start; ; dir = filepath.Dir(dir) {
			cand := filepath.Join(dir, "tools")
			if _, err := os.Stat(filepath.Join(cand, "kube", "go.mod")); err == nil {
				return cand, nil
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	return "", errNoToolsDir
}

// errNoToolsDir says that no checkout's tools/ directory was found.
var errNoToolsDir = errors.New("sandbox: no meshfed checkout's tools/ directory here")

func cacheRoot(explicit string) (string, error) {
	if explicit == "" {
		explicit = os.Getenv("MESHFED_CACHE_DIR")
	}
	if explicit != "" {
		return explicit, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("sandbox: no cache directory: %w", err)
	}
	return filepath.Join(base, "meshfed"), nil
}

// lockDir takes an exclusive lock on dir/.lock, waiting for other holders.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("sandbox: lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("sandbox: lock %s: %w", dir, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
