package daemon

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// cgroupMemoryMax is the cgroup v2 file holding the container's memory
// limit ("max" when there is none).
const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// memoryLimit works out the Go runtime's soft memory limit
// (runtime/debug.SetMemoryLimit) from --memory-limit:
//
//   - a quantity ("250Mi", "1Gi", bytes) sets it;
//   - "0" or "off" leaves the heap unlimited (the GC keeps GOGC=100
//     headroom: up to twice the live heap);
//   - "auto" (the default) keeps GOMEMLIMIT when it is set, and otherwise
//     uses 90 % of the container's memory limit (cgroup v2 memory.max)
//     when there is one, so the GC works harder before the kernel kills
//     the process rather than after.
//
// It returns the limit in bytes and where it came from; 0 means none. Why
// it matters: most of the controller's resident memory above its live
// heap is garbage awaiting collection (docs/benchmarks.md), which a soft
// limit bounds at the cost of more GC cycles near the limit.
func memoryLimit(flag string, getenv func(string) string, readFile func(string) ([]byte, error)) (int64, string, error) {
	switch strings.ToLower(flag) {
	case "0", "off", "none":
		return 0, "--memory-limit", nil
	case "", "auto":
		if v := getenv("GOMEMLIMIT"); v != "" {
			return debug.SetMemoryLimit(-1), "GOMEMLIMIT", nil
		}
		b, err := readFile(cgroupMemoryMax)
		if err != nil {
			return 0, "", nil
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, "", nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return 0, "", nil
		}
		return n / 10 * 9, "90% of " + cgroupMemoryMax, nil
	}
	q, err := resource.ParseQuantity(flag)
	if err != nil {
		return 0, "", fmt.Errorf("--memory-limit %q: %w", flag, err)
	}
	n, ok := q.AsInt64()
	if !ok || n < 0 {
		return 0, "", fmt.Errorf("--memory-limit %q: must be a non-negative number of bytes", flag)
	}
	return n, "--memory-limit", nil
}

// applyMemoryLimit sets the runtime's soft memory limit from flag and
// describes what it did.
func applyMemoryLimit(flag string) (string, error) {
	n, from, err := memoryLimit(flag, os.Getenv, os.ReadFile)
	switch {
	case err != nil:
		return "", err
	case from == "GOMEMLIMIT":
		return fmt.Sprintf("%d MiB from GOMEMLIMIT", n>>20), nil
	case n == 0:
		debug.SetMemoryLimit(math.MaxInt64)
		return "none", nil
	}
	debug.SetMemoryLimit(n)
	return fmt.Sprintf("%d MiB from %s", n>>20, from), nil
}
