package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"

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

// Returning memory after churn. Under a burst of changes the heap grows to
// its GC goal (up to twice the live heap without a limit); once the burst
// is over the collected pages stay mapped, and Go's background scavenger
// returns them only down to about that goal, so the controller's resident
// memory stays at the burst's level through quiet times
// (docs/benchmarks.md, scale (f)). releaseWhenQuiet returns them once the
// controller is quiet: every interval it reads how much the program
// allocated since the last look and how much heap is free but still
// mapped; after a quiet interval (less than quietAlloc allocated) with
// more than minFree of it, it runs debug.FreeOSMemory (one collection,
// tens of milliseconds at 10,000 services) — at most once per quiet
// spell.

// memorySample is what releaseWhenQuiet reads from runtime/metrics.
type memorySample struct {
	allocated uint64 // cumulative bytes allocated on the heap
	free      uint64 // heap bytes free and not returned to the system
}

// releaser decides, look after look, when memory is given back: after a
// look that found less than quietAlloc allocated since the previous one
// and at least minFree free, once until the next activity.
type releaser struct {
	quietAlloc, minFree uint64
	prev                memorySample
	released            bool
}

// look takes a new sample and reports whether to return memory now.
func (r *releaser) look(cur memorySample) bool {
	quiet := cur.allocated-r.prev.allocated < r.quietAlloc
	r.prev = cur
	if !quiet {
		r.released = false
		return false
	}
	if r.released || cur.free < r.minFree {
		return false
	}
	r.released = true
	return true
}

func readMemorySample() memorySample {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(s)
	var m memorySample
	if s[0].Value.Kind() == metrics.KindUint64 {
		m.allocated = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		m.free = s[1].Value.Uint64()
	}
	return m
}

// releaseWhenQuiet runs until ctx ends (see above), looking every
// interval.
func releaseWhenQuiet(ctx context.Context, interval time.Duration, log *slog.Logger) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	r := &releaser{quietAlloc: 16 << 20, minFree: 32 << 20, prev: readMemorySample()}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if cur := readMemorySample(); r.look(cur) {
			debug.FreeOSMemory()
			log.Debug("returned free heap memory to the system after a quiet period", "freeMiB", cur.free>>20)
			r.prev = readMemorySample()
		}
	}
}
