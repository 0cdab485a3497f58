package e2e

import (
	"os"
	"sync"
)

// lockedFile is an append-only log file safe for concurrent writers.
type lockedFile struct {
	path string
	mu   sync.Mutex
}

func (l *lockedFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Write(p)
}
