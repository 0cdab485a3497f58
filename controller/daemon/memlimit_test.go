package daemon

import (
	"errors"
	"testing"
)

func TestMemoryLimitFromFlagEnvironmentAndCgroup(t *testing.T) {
	noEnv := func(string) string { return "" }
	cgroup := func(content string) func(string) ([]byte, error) {
		return func(path string) ([]byte, error) {
			if content == "" || path != cgroupMemoryMax {
				return nil, errors.New("no such file")
			}
			return []byte(content), nil
		}
	}
	for _, tc := range []struct {
		name, flag, cgroup string
		want               int64
	}{
		{"explicit quantity", "250Mi", "1073741824\n", 250 << 20},
		{"off despite a container limit", "off", "1073741824\n", 0},
		{"auto under a container limit takes 90%", "auto", "1000000000\n", 900000000},
		{"auto without a container limit", "auto", "max\n", 0},
		{"auto outside a cgroup", "auto", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := memoryLimit(tc.flag, noEnv, cgroup(tc.cgroup))
			if err != nil || got != tc.want {
				t.Fatalf("memoryLimit(%q) = %d, %v; want %d", tc.flag, got, err, tc.want)
			}
		})
	}
	if _, _, err := memoryLimit("lots", noEnv, cgroup("")); err == nil {
		t.Fatal("--memory-limit=lots accepted")
	}
}

// Memory is returned once per quiet spell with enough free heap: not while
// changes allocate, not twice in one quiet spell, again after the next
// burst, and not when little is free.
func TestMemoryIsReturnedOncePerQuietSpell(t *testing.T) {
	const mib = 1 << 20
	r := &releaser{quietAlloc: 16 * mib, minFree: 32 * mib}
	allocated := uint64(0)
	look := func(allocMiB, freeMiB uint64) bool {
		allocated += allocMiB * mib
		return r.look(memorySample{allocated: allocated, free: freeMiB * mib})
	}
	for i, step := range []struct {
		what              string
		allocMiB, freeMiB uint64
		want              bool
	}{
		{"burst", 100, 200, false},
		{"burst", 100, 200, false},
		{"burst", 16, 200, false},
		{"quiet, 200 MiB free", 15, 200, true},
		{"still quiet", 1, 200, false},
		{"still quiet, more free", 0, 300, false},
		{"next burst", 500, 300, false},
		{"quiet again", 2, 150, true},
		{"burst", 50, 10, false},
		{"quiet, little free", 0, 10, false},
		{"quiet, free grew", 0, 40, true},
	} {
		if got := look(step.allocMiB, step.freeMiB); got != step.want {
			t.Fatalf("look %d (%s): release %v, want %v", i, step.what, got, step.want)
		}
	}
}
