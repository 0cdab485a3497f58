package check

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshfed/meshfed/controller/debug"
)

// Facts are what was read from one cluster, the input of the comparisons
// across clusters.
type Facts struct {
	// Name is the cluster as the user named it (its context, or its
	// federation name for the current context); Context is the
	// kubeconfig context for fix commands ("" for the current one).
	Name    string
	Context string
	// ClusterName is its name in the federation (its MeshConfig's), as
	// the other members' views name it; Namespace its control plane's.
	ClusterName string
	Namespace   string
	// BundleRoots are the fingerprints of the roots of its trust bundle,
	// read from BundleSource; nil when it could not be read.
	BundleRoots  []string
	BundleSource string
	// SigningRoot is the fingerprint of the root its intermediate CA
	// chains to ("" when unknown).
	SigningRoot string
	// Federation is its controller's answer (nil when the debug API was
	// not reached); Sent and Received bracket that request by the CLI's
	// clock.
	Federation     *debug.Federation
	Sent, Received time.Time
}

func (f Facts) contextFlag() string {
	if f.Context == "" {
		return ""
	}
	return " --context " + f.Context
}

func (f Facts) federationName() string {
	if f.ClusterName != "" {
		return f.ClusterName
	}
	return f.Name
}

// Across compares the clusters with each other.
func Across(facts []Facts, maxSkew time.Duration) []Result {
	var out []Result
	out = append(out, TrustBundles(facts)...)
	out = append(out, Membership(facts)...)
	out = append(out, Catalogs(facts)...)
	out = append(out, ClockSkew(facts, maxSkew)...)
	return out
}

// TrustBundles fails for every pair of clusters where one's trust bundle
// lacks the root the other's intermediate is signed by (their workloads
// cannot verify each other); bundles that differ otherwise (a rotation
// in progress) are a warning.
func TrustBundles(facts []Facts) []Result {
	const name = "trust-bundles"
	var out []Result
	var read []Facts
	for _, f := range facts {
		if f.BundleRoots != nil {
			read = append(read, f)
		}
	}
	if len(read) < 2 {
		return nil
	}
	contexts := contextsFlag(facts)
	for _, a := range read {
		for _, b := range read {
			if a.Name == b.Name || b.SigningRoot == "" || slices.Contains(a.BundleRoots, b.SigningRoot) {
				continue
			}
			out = append(out, fail(a.Name, name,
				fmt.Sprintf("%s's trust bundle (%s: %s) lacks %s's signing root %s: workloads of %s reject %s's certificates",
					a.Name, a.BundleSource, strings.Join(a.BundleRoots, ","), b.Name, b.SigningRoot, a.Name, b.Name),
				fmt.Sprintf("`meshfed certificate status%s` shows each cluster's roots; restart %s's controller to republish its bundle (`kubectl%s -n %s rollout restart deploy/meshfed-controller`), or, if %s was installed with a root of its own, `meshfed cluster join%s --peer-context %s --replace-root`",
					contexts, a.Name, a.contextFlag(), a.Namespace, a.Name, a.contextFlag(), b.Context)))
		}
	}
	if len(out) > 0 {
		return out
	}
	first := read[0]
	for _, f := range read[1:] {
		if !sameSet(first.BundleRoots, f.BundleRoots) {
			return []Result{warn("", name,
				fmt.Sprintf("every cluster trusts every other's signing root, but the bundles differ: %s has %s, %s has %s (a root rotation in progress?)",
					first.Name, strings.Join(first.BundleRoots, ","), f.Name, strings.Join(f.BundleRoots, ",")),
				fmt.Sprintf("`meshfed certificate status%s`; finish the rotation with `meshfed certificate rotate --phase=finish%s`", contexts, contexts))}
		}
	}
	return []Result{ok("", name, fmt.Sprintf("%d clusters trust the same roots: %s", len(read), strings.Join(first.BundleRoots, ",")))}
}

// Membership fails for every named cluster that another named cluster's
// controller does not see alive.
func Membership(facts []Facts) []Result {
	const name = "members-alive"
	var out []Result
	var read, unread []string
	for _, a := range facts {
		if a.Federation == nil {
			unread = append(unread, a.Name)
			continue
		}
		read = append(read, a.Name)
		for _, b := range facts {
			if a.Name == b.Name {
				continue
			}
			m, found := memberIn(a.Federation, b.federationName())
			switch {
			case !a.Federation.Federated:
				out = append(out, fail(a.Name, name, fmt.Sprintf("%s's federation is off: it sees no member", a.Name),
					fmt.Sprintf("`meshfed cluster join%s --peer-context %s`", a.contextFlag(), b.Context)))
			case !found:
				out = append(out, fail(a.Name, name, fmt.Sprintf("%s does not know %s", a.Name, b.Name),
					fmt.Sprintf("`meshfed cluster join%s --peer-context %s`", b.contextFlag(), a.Context)))
			case m.State != "alive":
				msg := fmt.Sprintf("%s sees %s %s", a.Name, b.Name, m.State)
				if m.Reason != "" {
					msg += " (" + m.Reason + ")"
				}
				out = append(out, fail(a.Name, name, msg,
					fmt.Sprintf("`meshfed cluster list%s` shows why; is %s's controller running? `kubectl%s -n %s rollout restart deploy/meshfed-controller`",
						a.contextFlag(), b.Name, b.contextFlag(), b.Namespace)))
			}
			if !a.Federation.Federated {
				break
			}
		}
	}
	if len(read) == 0 || len(out) > 0 {
		return out
	}
	msg := read[0] + " sees every other named cluster alive"
	if len(read) > 1 {
		msg = strings.Join(read, ", ") + " each see every other alive"
	}
	if len(unread) > 0 {
		msg += fmt.Sprintf(" (the view of %s was not read: see its debug-api check)", strings.Join(unread, ", "))
	}
	return []Result{ok("", name, msg)}
}

// Catalogs fails for every member a cluster marks stale (its catalog is
// older than its last contact says).
func Catalogs(facts []Facts) []Result {
	const name = "catalogs-fresh"
	var out []Result
	views := 0
	for _, a := range facts {
		if a.Federation == nil || !a.Federation.Federated {
			continue
		}
		views++
		for _, m := range a.Federation.Status.Members {
			if !m.Stale {
				continue
			}
			out = append(out, fail(a.Name, name,
				fmt.Sprintf("%s holds a stale catalog of %s (version %d)", a.Name, m.Name, m.CatalogVersion),
				fmt.Sprintf("`meshfed cluster list%s` shows its last contact; restart %s's controller to pull it again: `kubectl%s -n %s rollout restart deploy/meshfed-controller`",
					a.contextFlag(), a.Name, a.contextFlag(), a.Namespace)))
		}
	}
	if views == 0 || len(out) > 0 {
		return out
	}
	return []Result{ok("", name, "no cluster holds a stale catalog")}
}

// ClockSkew fails for every cluster whose controller's clock is more than
// max from the CLI's at the midpoint of the request it answered.
func ClockSkew(facts []Facts, max time.Duration) []Result {
	const name = "clock-skew"
	var out []Result
	for _, f := range facts {
		if f.Federation == nil || f.Federation.Now.IsZero() {
			continue
		}
		skew := Skew(f.Federation.Now, f.Sent, f.Received)
		if skew.Abs() > max {
			out = append(out, fail(f.Name, name,
				fmt.Sprintf("%s's controller clock is %s off this machine's (more than %s)", f.Name, skew.Round(time.Millisecond), max),
				fmt.Sprintf("synchronize the clocks (NTP) of %s's nodes and of this machine", f.Name)))
			continue
		}
		out = append(out, ok(f.Name, name, fmt.Sprintf("clock within %s of this machine's (%s)", max, skew.Round(time.Millisecond))))
	}
	return out
}

// Skew is how far reported is from the midpoint of sent and received.
func Skew(reported, sent, received time.Time) time.Duration {
	mid := sent.Add(received.Sub(sent) / 2)
	return reported.Sub(mid)
}

func memberIn(f *debug.Federation, name string) (m struct{ State, Reason string }, found bool) {
	for _, ms := range f.Status.Members {
		if ms.Name == name {
			m.State, m.Reason = ms.State, ms.Reason
			return m, true
		}
	}
	return m, false
}

func contextsFlag(facts []Facts) string {
	var names []string
	for _, f := range facts {
		if f.Context != "" {
			names = append(names, f.Context)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return " --contexts " + strings.Join(names, ",")
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}
