package federation

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
)

// Catalog versions are epoch<<32 | sequence. The epoch is kept in an
// EpochStore and advanced every time a member starts; the sequence counts
// publications within one run. Versions therefore increase across restarts
// and clock corrections alike: nothing in them comes from a clock.
// See docs/decisions/0003-catalog-versions-epoch-and-sequence.md.

// makeVersion joins an epoch and a sequence number into a catalog version.
func makeVersion(epoch, seq uint32) uint64 { return uint64(epoch)<<32 | uint64(seq) }

// epochOf is the epoch part of a catalog version.
func epochOf(v uint64) uint32 { return uint32(v >> 32) }

// FormatVersion renders a catalog version for people: "e<epoch>.<sequence>",
// e.g. "e7.42" is the 42nd catalog of the 7th run; "-" for none.
func FormatVersion(v uint64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("e%d.%d", v>>32, uint32(v))
}

// maxEpochAhead is how far ahead of the held catalog an unsigned version
// claim may be and still be believed: an owner advances its epoch by one
// per start, so a claim thousands of starts ahead (such as 2^64-1) is a
// forgery and is refused outright.
const maxEpochAhead = 1 << 10

// farFuture reports whether an unsigned claim of version v about a catalog
// of which held is held is too far ahead to be believed.
func farFuture(v, held uint64) bool {
	return held != 0 && uint64(epochOf(v)) > uint64(epochOf(held))+maxEpochAhead
}

// EpochStore keeps this cluster's catalog epoch across restarts.
//
// Contract: Advance is called from the federation's own goroutine, once
// when Run starts and again, rarely, when the member learns from its peers
// that it had used a higher epoch than the store remembers (the store was
// lost or restored from an old backup). It may block on I/O until ctx ends
// and must not call back into the Federation.
type EpochStore interface {
	// Advance stores and returns an epoch greater than the stored one and
	// at least atLeast. It returns an error if the epoch cannot be stored.
	Advance(ctx context.Context, atLeast uint32) (uint32, error)
}

// ErrEpochExhausted is returned when no greater epoch is left (2^32-1
// starts).
var ErrEpochExhausted = errors.New("catalog epochs exhausted")

// NextEpoch is the epoch an EpochStore stores after stored, given atLeast:
// stored+1 or atLeast, whichever is greater.
func NextEpoch(stored, atLeast uint32) (uint32, error) {
	if stored == math.MaxUint32 {
		return 0, ErrEpochExhausted
	}
	return max(stored+1, atLeast, 1), nil
}

// MemoryEpochStore is an EpochStore that lives as long as the process: for
// tests, and for a member whose epoch is recovered from its peers after each
// restart. The zero value is ready to use.
type MemoryEpochStore struct {
	mu    sync.Mutex
	epoch uint32
}

// Advance implements EpochStore.
func (m *MemoryEpochStore) Advance(_ context.Context, atLeast uint32) (uint32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next, err := NextEpoch(m.epoch, atLeast)
	if err != nil {
		return 0, err
	}
	m.epoch = next
	return next, nil
}

// Epoch returns the stored epoch (0: none yet).
func (m *MemoryEpochStore) Epoch() uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.epoch
}
