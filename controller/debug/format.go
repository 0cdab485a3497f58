package debug

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/controller/xds/server"
)

// Sync states of one resource type on one proxy, as `meshfed proxy
// status` shows them.
const (
	Synced  = "SYNCED"  // the version sent is the version accepted
	Pending = "PENDING" // a newer version is sent, not yet accepted
	NACKed  = "NACK"    // the proxy rejected the last version sent
	NotSent = "-"       // nothing of this type sent (not subscribed)
)

// SyncState says where a type's exchange stands.
func SyncState(t server.TypeStatus) string {
	switch {
	case t.NACK != nil:
		return NACKed
	case t.Sent == "":
		return NotSent
	case t.Acked == t.Sent:
		return Synced
	}
	return Pending
}

// WriteStatus writes every cluster's proxies as a table, then each NACK
// with the proxy's message.
func WriteStatus(w io.Writer, clusters []Proxies) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tPROXY\tIDENTITY\tKIND\tLDS\tRDS\tCDS\tEDS\tSDS")
	var nacks []string
	for _, c := range clusters {
		for _, p := range c.Proxies {
			cells := map[string]string{}
			for _, t := range p.Types {
				cells[t.Type] = SyncState(t)
				if t.NACK != nil {
					nacks = append(nacks, fmt.Sprintf("%s %s %s version %s at %s: %s", c.Cluster, nodeName(p), t.Type, t.NACK.Version, t.NACK.At.UTC().Format("15:04:05"), t.NACK.Message))
				}
			}
			row := []string{c.Cluster, nodeName(p), p.Identity, string(p.Kind)}
			for _, typ := range []string{"lds", "rds", "cds", "eds", "sds"} {
				row = append(row, or(cells[typ], NotSent))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(nacks) > 0 {
		fmt.Fprintln(w, "\nRejected configuration (the proxy keeps its last good one):")
		for _, n := range nacks {
			fmt.Fprintln(w, "  "+n)
		}
	}
	return nil
}

// nodeName is how a proxy is named in the table: the node ID it gave
// itself (its Pod, for meshfed agent), or its key.
func nodeName(p server.ProxyStatus) string {
	if p.NodeID != "" {
		return p.NodeID
	}
	return p.Key
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// FindProxy picks, among a cluster's proxies, the one of Pod
// namespace/pod running as serviceAccount: a proxy with the Pod's
// identity whose node ID names the Pod, else any proxy with that identity
// (proxies of one identity are served the same configuration).
func FindProxy(ps []server.ProxyStatus, namespace, pod, serviceAccount string) (server.ProxyStatus, error) {
	suffix := "/ns/" + namespace + "/sa/" + serviceAccount
	var same []server.ProxyStatus
	for _, p := range ps {
		if strings.HasSuffix(p.Identity, suffix) {
			if p.NodeID == namespace+"/"+pod {
				return p, nil
			}
			same = append(same, p)
		}
	}
	if len(same) == 0 {
		return server.ProxyStatus{}, fmt.Errorf("no proxy of ServiceAccount %s/%s (Pod %s) is connected to meshfed-controller", namespace, serviceAccount, pod)
	}
	return same[0], nil
}

// Kinds of resources `meshfed proxy get` shows, by the name users type.
var Kinds = map[string]string{"listeners": "lds", "routes": "rds", "clusters": "cds", "endpoints": "eds", "secrets": "sds"}

// WriteConfig writes c's resources of the given short types (all when
// none) as JSON or YAML.
func WriteConfig(w io.Writer, c Config, types []string, format string) error {
	out := map[string]any{"cluster": c.Cluster, "proxy": c.Key}
	res := map[string][]json.RawMessage{}
	for t, rs := range c.Resources {
		if len(types) == 0 || slices.Contains(types, t) {
			res[t] = rs
		}
	}
	out["resources"] = res
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	switch format {
	case "json":
	case "yaml":
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
	default:
		return fmt.Errorf("output %q: want json or yaml", format)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
