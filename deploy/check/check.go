// Package check is `meshfed check`: it inspects each named cluster's
// meshfed installation (API server, CRDs, controller, injector webhook,
// intermediate CA, debug API and proxies' NACKs) and compares the clusters
// with each other (trust bundles, membership, catalog freshness, clock
// skew). Every result says what was checked; a failure says what is wrong
// and the command that fixes it. The cross-cluster comparisons are pure
// functions of what was read (cross.go); reading is in cluster.go. It does
// not repair anything itself.
package check

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Severity of a result.
type Severity string

const (
	SeverityOK      Severity = "ok"
	SeverityWarning Severity = "warning"
	SeverityError   Severity = "error"
)

// Result is one check's outcome. Cluster is empty for a check across
// clusters.
type Result struct {
	Cluster  string   `json:"cluster"`
	Check    string   `json:"check"`
	OK       bool     `json:"ok"`
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
	// Fix is the command (or step) that repairs a failure or warning.
	Fix string `json:"fix,omitempty"`
}

// MaxClockSkew is how far a controller's clock may be from the CLI's
// (after allowing for the request's round trip) before the clock-skew
// check fails: certificates and catalog timestamps are compared across
// clusters, and a few seconds of drift already shows as stale catalogs.
const MaxClockSkew = 2 * time.Second

// IntermediateWarnWithin is how close to its expiry an intermediate CA
// makes the intermediate-ca check warn.
const IntermediateWarnWithin = 7 * 24 * time.Hour

func ok(cluster, check, msg string) Result {
	return Result{Cluster: cluster, Check: check, OK: true, Severity: SeverityOK, Message: msg}
}

func warn(cluster, check, msg, fix string) Result {
	return Result{Cluster: cluster, Check: check, OK: true, Severity: SeverityWarning, Message: msg, Fix: fix}
}

func fail(cluster, check, msg, fix string) Result {
	return Result{Cluster: cluster, Check: check, OK: false, Severity: SeverityError, Message: msg, Fix: fix}
}

// Failed says whether any result is a failure (warnings are not).
func Failed(rs []Result) bool {
	for _, r := range rs {
		if !r.OK {
			return true
		}
	}
	return false
}

// Write prints one line per result — ✔, ‼ (warning) or ✘ — and, under a
// warning or failure, the fix.
func Write(w io.Writer, rs []Result) error {
	for _, r := range rs {
		mark := "✔"
		switch {
		case !r.OK:
			mark = "✘"
		case r.Severity == SeverityWarning:
			mark = "‼"
		}
		where := "federation"
		if r.Cluster != "" {
			where = r.Cluster
		}
		if _, err := fmt.Fprintf(w, "%s [%s] %s: %s\n", mark, where, r.Check, oneLine(r.Message)); err != nil {
			return err
		}
		if r.Fix != "" && (r.Severity != SeverityOK) {
			if _, err := fmt.Fprintf(w, "    fix: %s\n", oneLine(r.Fix)); err != nil {
				return err
			}
		}
	}
	return nil
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ") }
