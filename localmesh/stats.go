package localmesh

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/meshfed/meshfed/demo/bookapp"
)

// Result is one RPC as a bookapp client reports it on stdout (one JSON
// object per line); the workload defines the format.
type Result = bookapp.Result

// Outcome is where an RPC ended: a backend version in a cluster, or the
// status code it was refused with.
type Outcome struct {
	OK      bool
	Version string // bookstore version that answered (OK only)
	Cluster string // cluster that answered (OK only)
	Code    string // gRPC code (not OK only), e.g. PERMISSION_DENIED
	// Via names what carried the RPC into the answering cluster, as its
	// server saw the connection: "" (straight from the client) or
	// "<cluster>'s gateway" (OK only; on separate networks).
	Via string
}

func (o Outcome) String() string {
	if o.OK && o.Via != "" {
		return fmt.Sprintf("bookstore-%s @ %s via %s", o.Version, o.Cluster, o.Via)
	}
	if o.OK {
		return fmt.Sprintf("bookstore-%s @ %s", o.Version, o.Cluster)
	}
	if o.Code == "PermissionDenied" {
		return "DENIED"
	}
	return "FAILED " + o.Code
}

// Key groups RPCs: who called, which method, where it ended.
type Key struct {
	Source  string // e.g. "bookbuyer @ east"
	Method  string
	Outcome Outcome
}

type sample struct {
	at      time.Time
	key     Key
	backend string // the pod that answered (OK only)
	err     string // the client's error (not OK only)
	// server and caller are the identities each side verified (OK only).
	server, caller string
}

// Stats keeps recent RPC results from every client workload. Safe for
// concurrent use: Record is called from the workloads' output goroutines.
type Stats struct {
	// via names what a server saw an RPC's connection come from (a peer
	// address); nil: nothing. Set before any result is recorded.
	via func(peer string) string

	mu      sync.Mutex
	keep    time.Duration
	samples []sample
}

// NewStats keeps results for keep.
func NewStats(keep time.Duration) *Stats { return &Stats{keep: keep} }

// RecordLine parses one line of a client's output and records it; lines
// that are not results (logs) are ignored.
func (s *Stats) RecordLine(source string, line []byte, at time.Time) {
	var r Result
	if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &r) != nil || r.Code == "" {
		return
	}
	s.Record(source, r, at)
}

// Record adds one result.
func (s *Stats) Record(source string, r Result, at time.Time) {
	o := Outcome{Code: r.Code}
	if r.Code == "OK" {
		o = Outcome{OK: true, Version: r.Version, Cluster: r.Cluster}
		if s.via != nil && r.Peer != "" {
			o.Via = s.via(r.Peer)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	x := sample{at: at, key: Key{Source: source, Method: r.Method, Outcome: o}}
	if o.OK {
		x.backend, x.server, x.caller = r.Backend, r.Server, r.Caller
	} else {
		x.err = r.Error
	}
	s.samples = append(s.samples, x)
	cut := 0
	for cut < len(s.samples) && at.Sub(s.samples[cut].at) > s.keep {
		cut++
	}
	if cut > 0 {
		s.samples = append(s.samples[:0], s.samples[cut:]...)
	}
}

// Count returns how many RPCs ended in each way between from and to.
func (s *Stats) Count(from, to time.Time) map[Key]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[Key]int{}
	for _, x := range s.samples {
		if !x.at.Before(from) && x.at.Before(to) {
			out[x.key]++
		}
	}
	return out
}

// Call is one RPC a client made.
type Call struct {
	At      time.Time
	Outcome Outcome
	Error   string // the client's error message (not OK only)
	// Backend is the pod that answered; Server the SPIFFE ID on the
	// certificate the client verified; Caller the one the server saw on
	// the client's (OK only).
	Backend, Server, Caller string
}

// Calls returns source's calls of method recorded at or after from, in the
// order they were recorded.
func (s *Stats) Calls(source, method string, from time.Time) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, x := range s.samples {
		if x.key.Source == source && x.key.Method == method && !x.at.Before(from) {
			out = append(out, Call{At: x.at, Outcome: x.key.Outcome, Error: x.err, Backend: x.backend, Server: x.server, Caller: x.caller})
		}
	}
	return out
}

// FirstAnswer returns when source was first answered by the pod backend
// at or after from.
func (s *Stats) FirstAnswer(source, backend string, from time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.samples {
		if x.backend == backend && x.key.Source == source && !x.at.Before(from) {
			return x.at, true
		}
	}
	return time.Time{}, false
}

// Last returns when source's last call of method at or after from ended
// in an outcome match accepts.
func (s *Stats) Last(source, method string, from time.Time, match func(Outcome) bool) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.samples) - 1; i >= 0; i-- {
		x := s.samples[i]
		if x.at.Before(from) {
			break
		}
		if x.key.Source == source && x.key.Method == method && match(x.key.Outcome) {
			return x.at, true
		}
	}
	return time.Time{}, false
}

// Row is one line of the live table.
type Row struct {
	Key
	PerSecond float64
	Share     float64 // of the source's and method's RPCs in the window
}

// Rows summarises the last window before now, sorted by source, method,
// outcome.
func (s *Stats) Rows(now time.Time, window time.Duration) []Row {
	counts := s.Count(now.Add(-window), now.Add(time.Nanosecond))
	totals := map[[2]string]int{}
	for k, n := range counts {
		totals[[2]string{k.Source, k.Method}] += n
	}
	var rows []Row
	for k, n := range counts {
		rows = append(rows, Row{Key: k, PerSecond: float64(n) / window.Seconds(),
			Share: float64(n) / float64(totals[[2]string{k.Source, k.Method}])})
	}
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.Source != b.Source {
			return a.Source < b.Source
		}
		if a.Method != b.Method {
			return a.Method < b.Method
		}
		return a.Outcome.String() < b.Outcome.String()
	})
	return rows
}

// Render writes the table.
func Render(w io.Writer, rows []Row, window time.Duration) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "SOURCE\tMETHOD\tRESULT\tRPC/s\tSHARE (last %s)\n", window)
	last := ""
	for _, r := range rows {
		src := r.Source
		if src == last {
			src = ""
		}
		last = r.Source
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%3.0f%%\n", src, r.Method, r.Outcome, r.PerSecond, 100*r.Share)
	}
	if len(rows) == 0 {
		fmt.Fprintln(tw, "(no RPCs yet: workloads are starting)")
	}
	tw.Flush()
}

// SourceLabel names a client workload for the table: its app and cluster.
func SourceLabel(app, cluster string) string {
	return strings.TrimSpace(app) + " @ " + cluster
}
