package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/meshconfig"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/mesh"
)

// meshCluster is one cluster's installed mesh as `meshfed cluster` sees it.
type meshCluster struct {
	inst *installer.Client
	kube kubernetes.Interface
	dyn  dynamic.Interface
	mesh *installer.Mesh
	// meshConfig is the MeshConfig object as read, spec its spec.
	meshConfig *unstructured.Unstructured
	spec       meshconfig.Spec
}

func openMeshCluster(ctx context.Context, kf *kubeFlags, meshName string) (*meshCluster, error) {
	cfg, err := kf.restConfig()
	if err != nil {
		return nil, err
	}
	inst, err := installer.New(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	m, err := inst.FindMesh(ctx, meshName)
	if err != nil {
		return nil, err
	}
	mc, err := dyn.Resource(federate.MeshConfigGVR).Namespace(m.Namespace).Get(ctx, deploy.MeshConfigName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("MeshConfig %s/%s: %w", m.Namespace, deploy.MeshConfigName, err)
	}
	spec, err := meshconfig.Parse(mc)
	if err != nil {
		return nil, fmt.Errorf("MeshConfig %s/%s: %w (fix it with kubectl edit meshconfig -n %s %s)", m.Namespace, deploy.MeshConfigName, err, m.Namespace, deploy.MeshConfigName)
	}
	return &meshCluster{inst: inst, kube: inst.Kube(), dyn: dyn, mesh: m, meshConfig: mc, spec: spec}, nil
}

// gossipAddress is where other clusters reach this one's gossip port:
// spec.federation.advertiseAddress (else bindAddress unless it is
// 0.0.0.0) with advertisePort (else bindPort), or else the address the
// running controller reported in status.federation.
func (c *meshCluster) gossipAddress() (string, error) {
	f := c.spec.Federation
	host := f.AdvertiseAddress
	if host == "" && f.BindAddress != "0.0.0.0" && f.BindAddress != "::" {
		host = f.BindAddress
	}
	if host != "" {
		return net.JoinHostPort(host, strconv.Itoa(f.AdvertisedPort())), nil
	}
	if st, ok := c.status(); ok {
		for _, m := range st.Members {
			if m.Local && m.Address != "" {
				return m.Address, nil
			}
		}
	}
	return "", fmt.Errorf("cluster %s: no gossip address: set spec.federation.advertiseAddress in MeshConfig %s/%s, or pass --peer-address",
		c.mesh.ClusterName, c.mesh.Namespace, deploy.MeshConfigName)
}

// status returns the controller's status.federation, if any.
func (c *meshCluster) status() (federate.Status, bool) {
	raw, ok, _ := unstructured.NestedMap(c.meshConfig.Object, "status", "federation")
	if !ok {
		return federate.Status{}, false
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return federate.Status{}, false
	}
	var st federate.Status
	if err := json.Unmarshal(b, &st); err != nil {
		return federate.Status{}, false
	}
	return st, true
}

// patchFederation merge-patches spec.federation of the MeshConfig.
func (c *meshCluster) patchFederation(ctx context.Context, fields map[string]any) error {
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"federation": fields}})
	if err != nil {
		return err
	}
	_, err = c.dyn.Resource(federate.MeshConfigGVR).Namespace(c.mesh.Namespace).Patch(ctx, deploy.MeshConfigName, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("cluster %s: MeshConfig %s/%s: %w", c.mesh.ClusterName, c.mesh.Namespace, deploy.MeshConfigName, err)
	}
	return nil
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
			return join(ctx, out, local, remote, args, peerAddress, src, replaceRoot)
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

func join(ctx context.Context, out io.Writer, local, peer *meshCluster, args []string, peerAddress string, src installer.CASource, replaceRoot bool) error {
	lm, pm := local.mesh, peer.mesh
	var errs []error
	if len(args) == 1 && args[0] != lm.ClusterName {
		errs = append(errs, fmt.Errorf("this cluster's MeshConfig names it %q, not %q: check --context", lm.ClusterName, args[0]))
	}
	if lm.ClusterName == pm.ClusterName {
		errs = append(errs, fmt.Errorf("both clusters are named %q: every member needs its own name (reinstall one with another --cluster-name)", lm.ClusterName))
	}
	if lm.TrustDomain != pm.TrustDomain {
		errs = append(errs, fmt.Errorf("trust domains differ: this cluster %q, peer %q; a federation shares one", lm.TrustDomain, pm.TrustDomain))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if peerAddress == "" {
		addr, err := peer.gossipAddress()
		if err != nil {
			return err
		}
		peerAddress = addr
	} else if _, _, err := net.SplitHostPort(peerAddress); err != nil {
		return fmt.Errorf("--peer-address %q: %w", peerAddress, err)
	}

	// 1. The shared root (or a signed intermediate).
	opts := deploy.DefaultOptions()
	opts.MeshName, opts.Namespace, opts.ClusterName, opts.TrustDomain = lm.Name, lm.Namespace, lm.ClusterName, lm.TrustDomain
	if len(src.IntermediateChain) == 0 {
		src.RootFrom, src.RootFromNamespace, src.ReplaceRoot = peer.kube, pm.Namespace, replaceRoot
	}
	msg, err := local.inst.InstallCA(ctx, opts, src)
	if err != nil {
		if errors.Is(err, installer.ErrNoPeerRoot) {
			return fmt.Errorf("%w\nthe peer keeps no root key (its root is offline): sign an intermediate for %s with the root and pass --intermediate-cert, --intermediate-key and --trust-bundle", err, lm.ClusterName)
		}
		if errors.Is(err, installer.ErrDifferentRoot) {
			return fmt.Errorf("trust: %w\n`meshfed install` gave %s a root of its own; to take the peer's instead, run join again with --replace-root (then restart %s's controller and workloads)", err, lm.ClusterName, lm.ClusterName)
		}
		return fmt.Errorf("trust: %w", err)
	}
	fmt.Fprintf(out, "trust: %s\n", msg)

	// 2. The gossip keyring, from the peer (made there if it has none).
	keys, created, err := federate.EnsureGossipKeys(ctx, peer.kube, pm.Namespace, peer.spec.Federation.GossipKeySecretName)
	if err != nil {
		return fmt.Errorf("peer %s: %w", pm.ClusterName, err)
	}
	if created {
		fmt.Fprintf(out, "gossip key: created Secret %s/%s in %s\n", pm.Namespace, peer.spec.Federation.GossipKeySecretName, pm.ClusterName)
	}
	if err := federate.SaveGossipKeys(ctx, local.kube, lm.Namespace, local.spec.Federation.GossipKeySecretName, keys, true); err != nil {
		return err
	}
	fmt.Fprintf(out, "gossip key: %d key(s) copied into Secret %s/%s\n", len(keys), lm.Namespace, local.spec.Federation.GossipKeySecretName)

	// 3. Both MeshConfigs: federation on, the peer as this cluster's seed.
	peers := slices.Clone(local.spec.Federation.Peers)
	if !slices.Contains(peers, peerAddress) {
		peers = append(peers, peerAddress)
	}
	if err := local.patchFederation(ctx, map[string]any{"enabled": true, "peers": peers}); err != nil {
		return err
	}
	if err := peer.patchFederation(ctx, map[string]any{"enabled": true}); err != nil {
		return err
	}
	fmt.Fprintf(out, "federation: enabled in %s (seed %s) and %s\n", lm.ClusterName, peerAddress, pm.ClusterName)
	fmt.Fprintf(out, "cluster %s joins %s's federation; check with `meshfed cluster list`\n", lm.ClusterName, pm.ClusterName)
	return nil
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
			st, ok := c.status()
			if !ok {
				if !c.spec.Federation.Enabled {
					return fmt.Errorf("cluster %s is not federated (spec.federation.enabled is false); see `meshfed cluster join`", c.mesh.ClusterName)
				}
				return fmt.Errorf("cluster %s: its controller has not reported federation status yet (MeshConfig %s/%s status.federation)", c.mesh.ClusterName, c.mesh.Namespace, deploy.MeshConfigName)
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printMembers(cmd.OutOrStdout(), st, c.spec.Federation.Enabled, time.Now())
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: table (default) or json")
	return cmd
}

// printMembers prints the status as a table. Everything in it may come
// from another cluster (names, addresses, reasons, fingerprints): names
// are escaped with mesh.Quote and free text with printable, so that no
// control byte, escape sequence or tab reaches the terminal.
func printMembers(w io.Writer, st federate.Status, enabled bool, now time.Time) {
	age := now.Sub(st.UpdatedAt).Round(time.Second)
	fmt.Fprintf(w, "seen from %s, reported %s ago", mesh.Quote(st.Cluster), age)
	if !enabled {
		fmt.Fprint(w, " (federation is now disabled here)")
	} else if age > time.Minute {
		fmt.Fprint(w, " (stale: is the controller running?)")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tSTATE\tSINCE\tLAST CONTACT\tCATALOG\tSERVICES\tTRUST BUNDLE")
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, addr, state, ago(m.Since), contact, federation.FormatVersion(m.CatalogVersion), services, fp)
	}
	_ = tw.Flush()
	for _, m := range st.Members {
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
			if err := c.patchFederation(cmd.Context(), map[string]any{"enabled": false}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s leaves the federation (spec.federation.enabled=false)\n", c.mesh.ClusterName)
			return nil
		},
	}
}
