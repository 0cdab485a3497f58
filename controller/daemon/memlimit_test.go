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
