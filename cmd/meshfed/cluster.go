package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/controller/debug"
	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/deploy/member"
	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/mesh"
)

// openMeshCluster opens the mesh meshName in the cluster of kf.
func openMeshCluster(ctx context.Context, kf *kubeFlags, meshName string) (*member.Member, error) {
	cfg, err := kf.restConfig()
	if err != nil {
		return nil, err
	}
	inst, err := installer.New(cfg)
	if err != nil {
		return nil, err
	}
	return member.Open(ctx, inst, meshName)
}

func newClusterCommand(kf *kubeFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Join clusters into a federation, list its members, leave it"}
	var meshName string
	cmd.PersistentFlags().StringVar(&meshName, "mesh-name", deploy.DefaultMeshName, "name of the mesh")
	cmd.AddCommand(newClusterJoinCommand(kf, &meshName), newClusterListCommand(kf, &meshName), newClusterLeaveCommand(kf, &meshName))
	return cmd
}

func newClusterJoinCommand(kf *kubeFlags, meshName *string) *cobra.Command {
	var peer kubeFlags
	var peerMesh, peerAddress string
	var inter intermediateFlags
	var replaceRoot bool
	cmd := &cobra.Command{
		Use:   "join [CLUSTER] --peer-context CONTEXT",
		Short: "Connect this newly installed cluster to the federation an existing cluster belongs to",
		Long: `join connects the cluster of --kubeconfig/--context (installed with
meshfed install) to the federation of the cluster of
--peer-kubeconfig/--peer-context, in one step:

  - the shared root: the peer's root signs an intermediate for this cluster
    in the CLI's memory, and only the intermediate (with the trust bundle) is
    written into this cluster's control-plane namespace; the root key stays
    in the peer. If the peer keeps no root key (offline root), pass an
    intermediate signed offline with --intermediate-cert/--intermediate-key/--trust-bundle;
  - the gossip keyring: read from the peer's Secret (created there first if
    missing) and written into this cluster's;
  - the peer's gossip address (its MeshConfig's advertiseAddress and port,
    or what its controller reports) becomes a seed in this cluster's
    MeshConfig; federation is enabled in both MeshConfigs.

CLUSTER, if given, must be this cluster's name (a safety check).
Restart this cluster's controller if its intermediate was installed after it started.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if peer.kubeconfig == "" && peer.context == "" {
				return errors.New("--peer-context or --peer-kubeconfig is required: join needs the existing cluster's API server")
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			local, err := openMeshCluster(ctx, kf, *meshName)
			if err != nil {
				return fmt.Errorf("this cluster: %w", err)
			}
			if peerMesh == "" {
				peerMesh = *meshName
			}
			remote, err := openMeshCluster(ctx, &peer, peerMesh)
			if err != nil {
				return fmt.Errorf("peer cluster: %w", err)
			}
			var src installer.CASource
			if err := inter.read(&src); err != nil {
				return err
			}
			o := member.JoinOptions{PeerAddress: peerAddress, CA: src, ReplaceRoot: replaceRoot,
				Progress: func(msg string) { fmt.Fprintln(out, msg) }}
			if len(args) == 1 {
				o.Name = args[0]
			}
			if err := member.Join(ctx, local, remote, o); err != nil {
				return joinHint(err, local.Mesh.ClusterName)
			}
			fmt.Fprintf(out, "cluster %s joins %s's federation; check with `meshfed cluster list`\n", local.Mesh.ClusterName, remote.Mesh.ClusterName)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&peer.kubeconfig, "peer-kubeconfig", "", "kubeconfig of the existing federation member (default: the same kubeconfig as this cluster)")
	f.StringVar(&peer.context, "peer-context", "", "kubeconfig context of the existing federation member")
	f.StringVar(&peerMesh, "peer-mesh-name", "", "mesh name in the peer cluster (default: --mesh-name)")
	f.StringVar(&peerAddress, "peer-address", "", "gossip address host:port of the peer, when its MeshConfig has no advertiseAddress")
	inter.register(f)
	f.BoolVar(&replaceRoot, "replace-root", false, "this cluster was installed with a root of its own: replace it (and its intermediate) with the peer's; restart its controller and workloads afterwards")
	return cmd
}

// joinHint adds to a join error what the user can do about it.
func joinHint(err error, cluster string) error {
	switch {
	case errors.Is(err, installer.ErrNoPeerRoot):
		return fmt.Errorf("%w\nthe peer keeps no root key (its root is offline): sign an intermediate for %s with the root and pass --intermediate-cert, --intermediate-key and --trust-bundle", err, cluster)
	case errors.Is(err, installer.ErrDifferentRoot):
		return fmt.Errorf("%w\n`meshfed install` gave %s a root of its own; to take the peer's instead, run join again with --replace-root (then restart %s's controller and workloads)", err, cluster, cluster)
	}
	return err
}

func newClusterListCommand(kf *kubeFlags, meshName *string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the federation's members as this cluster's controller sees them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := openMeshCluster(cmd.Context(), kf, *meshName)
			if err != nil {
				return err
			}
			// The live view, from the controller's debug API; else what
			// it last wrote into the MeshConfig's status.
			st, live, err := liveFederation(cmd.Context(), kf, c.Mesh.Namespace)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "meshfed: the live view is not available (%v); showing the status the controller last wrote into MeshConfig %s/%s\n", err, c.Mesh.Namespace, deploy.MeshConfigName)
				var ok bool
				if st, ok = c.Status(); !ok {
					if !c.Spec.Federation.Enabled {
						return fmt.Errorf("cluster %s is not federated (spec.federation.enabled is false); see `meshfed cluster join`", c.Mesh.ClusterName)
					}
					return fmt.Errorf("cluster %s: its controller has not reported federation status yet (MeshConfig %s/%s status.federation)", c.Mesh.ClusterName, c.Mesh.Namespace, deploy.MeshConfigName)
				}
			} else if !live {
				return fmt.Errorf("cluster %s is not federated (its controller runs no federation member); see `meshfed cluster join`", c.Mesh.ClusterName)
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printMembers(cmd.OutOrStdout(), st, c.Spec.Federation.Enabled, live, time.Now())
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table (default) or json")
	return cmd
}

// liveFederation reads the federation's status from the controller's
// debug API (port forwarding through the API server); live is false when
// its federation is off.
func liveFederation(ctx context.Context, kf *kubeFlags, namespace string) (st federate.Status, live bool, err error) {
	cfg, err := kf.restConfig()
	if err != nil {
		return st, false, err
	}
	c, err := debug.Dial(ctx, cfg, namespace)
	if err != nil {
		return st, false, err
	}
	defer c.Close()
	f, err := c.Federation(ctx)
	return f.Status, f.Federated, err
}

// printMembers prints the status as a table. Everything in it may come
// from another cluster (names, addresses, reasons, fingerprints): names
// are escaped with mesh.Quote and free text with printable, so that no
// control byte, escape sequence or tab reaches the terminal.
func printMembers(w io.Writer, st federate.Status, enabled, live bool, now time.Time) {
	age := now.Sub(st.UpdatedAt).Round(time.Second)
	if live {
		fmt.Fprintf(w, "seen from %s, live", mesh.Quote(st.Cluster))
	} else {
		fmt.Fprintf(w, "seen from %s, reported %s ago", mesh.Quote(st.Cluster), age)
	}
	if !enabled {
		fmt.Fprint(w, " (federation is now disabled here)")
	} else if age > time.Minute {
		fmt.Fprint(w, " (stale: is the controller running?)")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tNETWORK\tSTATE\tSINCE\tLAST CONTACT\tCATALOG\tSERVICES\tTRUST BUNDLE")
	ago := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return now.Sub(*t).Round(time.Second).String() + " ago"
	}
	for _, m := range st.Members {
		name := mesh.Quote(m.Name)
		if m.Local {
			name += " (this)"
		}
		state := mesh.Quote(m.State)
		if m.Stale {
			state += ",stale"
		}
		contact := ago(m.LastContact)
		if m.Local {
			contact = "-"
		}
		fp := m.TrustBundleFingerprint
		if len(fp) > 16 {
			fp = fp[:16] + "..."
		}
		fp = mesh.Quote(fp)
		if m.TrustBundleFingerprint == "" {
			fp = "-"
		}
		addr := "-"
		if m.Address != "" {
			addr = mesh.Quote(m.Address)
		}
		services := strconv.Itoa(m.ServiceCount)
		if m.InvalidCount > 0 {
			services += fmt.Sprintf(" (%d invalid)", m.InvalidCount)
		}
		network := "-"
		if m.Network != "" {
			network = mesh.Quote(m.Network)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, addr, network, state, ago(m.Since), contact, federation.FormatVersion(m.CatalogVersion), services, fp)
	}
	_ = tw.Flush()
	for _, m := range st.Members {
		if len(m.Gateways) > 0 {
			fmt.Fprintf(w, "%s gateways: %s\n", mesh.Quote(m.Name), quoteAll(m.Gateways))
		}
		if m.Unreachable != "" {
			fmt.Fprintf(w, "%s unreachable: %s\n", mesh.Quote(m.Name), printable(m.Unreachable))
		}
		if len(m.Services) > 0 {
			more := ""
			if m.ServiceCount > len(m.Services) {
				more = fmt.Sprintf(" (+%d more)", m.ServiceCount-len(m.Services))
			}
			fmt.Fprintf(w, "%s exports: %s%s\n", mesh.Quote(m.Name), quoteAll(m.Services), more)
		}
		if len(m.Withdrawn) > 0 {
			fmt.Fprintf(w, "%s withdrawn: %s (%s)\n", mesh.Quote(m.Name), quoteAll(m.Withdrawn), printable(m.Reason))
		}
		for _, inv := range m.Invalid {
			fmt.Fprintf(w, "%s invalid: %s\n", mesh.Quote(m.Name), printable(inv))
		}
		if more := m.InvalidCount - len(m.Invalid); more > 0 {
			fmt.Fprintf(w, "%s invalid: %d more\n", mesh.Quote(m.Name), more)
		}
	}
}

// quoteAll joins names with ", ", each escaped with mesh.Quote.
func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = mesh.Quote(n)
	}
	return strings.Join(q, ", ")
}

// maxPrintable bounds a free-text field in `cluster list`.
const maxPrintable = 512

// printable returns free text (a reason) as it is when it is short
// printable ASCII, and escaped with mesh.Quote otherwise.
func printable(s string) string {
	if len(s) > maxPrintable {
		return mesh.Quote(s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return mesh.Quote(s)
		}
	}
	return s
}

func newClusterLeaveCommand(kf *kubeFlags, meshName *string) *cobra.Command {
	return &cobra.Command{
		Use:   "leave",
		Short: "Take this cluster out of the federation",
		Long: `leave sets spec.federation.enabled=false in this cluster's MeshConfig. The
controller then publishes an empty catalog, leaves the gossip gracefully
(other members see it as "left" and drop its services at once, as it
withdrew them itself) and removes the ServiceImports it wrote. The root and
gossip key Secrets stay; rotate the gossip key in the remaining clusters if
this one should not be able to rejoin.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := openMeshCluster(cmd.Context(), kf, *meshName)
			if err != nil {
				return err
			}
			if err := c.PatchFederation(cmd.Context(), map[string]any{"enabled": false}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s leaves the federation (spec.federation.enabled=false)\n", c.Mesh.ClusterName)
			return nil
		},
	}
}
