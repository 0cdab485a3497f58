package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Environment the kubelet stand-in gives a process it runs in place of a
// Pod's container.
const (
	// EnvMounts is a JSON object: each of the container's mount paths →
	// the host directory that holds that volume.
	EnvMounts = "MESHFED_MOUNTS"
	// EnvServices is a JSON object: each host:port the Pod would reach
	// through cluster DNS → the address, in gRPC target syntax, the local
	// cluster serves it on.
	EnvServices = "MESHFED_SERVICES"
	// EnvPodIP is the Pod's address, to listen and dial from.
	EnvPodIP = "MESHFED_POD_IP"
)

// Runtime is where a container's files and cluster-DNS addresses are on
// this host. The kubelet stand-in writes it (Environ); the process it runs
// reads it (RuntimeFromEnv).
type Runtime struct {
	// Mounts maps each container mount path (absolute) to a host directory.
	Mounts map[string]string
	// Services maps a host:port to a gRPC target.
	Services map[string]string
}

// RuntimeFromEnv reads EnvMounts and EnvServices (unset: empty).
func RuntimeFromEnv() (Runtime, error) {
	var r Runtime
	var errs []error
	for env, m := range map[string]*map[string]string{EnvMounts: &r.Mounts, EnvServices: &r.Services} {
		if v := os.Getenv(env); v != "" {
			if err := json.Unmarshal([]byte(v), m); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	}
	for p := range r.Mounts {
		if !path.IsAbs(p) || path.Clean(p) != p {
			errs = append(errs, fmt.Errorf("%s: mount path %q is not a clean absolute path", EnvMounts, p))
		}
	}
	return r, errors.Join(errs...)
}

// Environ returns r as the environment entries RuntimeFromEnv reads.
func (r Runtime) Environ() []string {
	m, _ := json.Marshal(r.Mounts) // a map of strings always encodes
	s, _ := json.Marshal(r.Services)
	return []string{EnvMounts + "=" + string(m), EnvServices + "=" + string(s)}
}

// Path returns where the container's file p is on the host: under the
// longest mount path that holds p (whole path elements), with the rest of
// p appended. A path under no mount is an error.
func (r Runtime) Path(p string) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("container path %q is not absolute", p)
	}
	p = path.Clean(p)
	mount, host, found := "", "", false
	for m, h := range r.Mounts {
		m = path.Clean(m)
		if (m == "/" || p == m || strings.HasPrefix(p, m+"/")) && (!found || len(m) > len(mount)) {
			mount, host, found = m, h, true
		}
	}
	if !found {
		return "", fmt.Errorf("container path %s is under none of the container's mounts (%s)", p, EnvMounts)
	}
	return filepath.Join(host, filepath.FromSlash(strings.TrimPrefix(p, mount))), nil
}

// Address returns the target the local cluster serves hostPort on, or
// hostPort itself.
func (r Runtime) Address(hostPort string) string {
	if a, ok := r.Services[hostPort]; ok {
		return a
	}
	return hostPort
}
