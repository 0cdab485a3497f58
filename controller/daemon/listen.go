package daemon

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// A listen address is host:port, or unix://PATH for a Unix socket. Unix
// sockets are how workloads in another network namespace reach a local
// controller without any routing (`meshfed demo` runs without root).

func isUnix(addr string) bool { return strings.HasPrefix(addr, "unix://") }

func checkListenAddress(addr string) error {
	if isUnix(addr) {
		if strings.TrimPrefix(addr, "unix://") == "" {
			return fmt.Errorf("no socket path")
		}
		return nil
	}
	_, _, err := net.SplitHostPort(addr)
	return err
}

// listen opens addr. A stale Unix socket file left by an earlier run is
// removed first.
func listen(addr string) (net.Listener, error) {
	if !isUnix(addr) {
		return net.Listen("tcp", addr)
	}
	path := strings.TrimPrefix(addr, "unix://")
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	return net.Listen("unix", path)
}
