// Package member reads and changes one cluster's installed mesh as a
// federation member: its MeshConfig, gossip address and federation status,
// and joining it to another cluster's federation (meshfed cluster).
package member

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/meshconfig"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
)

// Member is one cluster's installed mesh as `meshfed cluster` sees it: its
// installer client, the mesh found in it and its MeshConfig.
type Member struct {
	Client *installer.Client
	Mesh   *installer.Mesh
	// MeshConfig is the MeshConfig object as read, Spec its spec.
	MeshConfig *unstructured.Unstructured
	Spec       meshconfig.Spec
}

// Open finds the mesh meshName in c's cluster and reads its MeshConfig; a
// MeshConfig that does not parse is an error naming the command that fixes
// it.
func Open(ctx context.Context, c *installer.Client, meshName string) (*Member, error) {
	m, err := c.FindMesh(ctx, meshName)
	if err != nil {
		return nil, err
	}
	mc, err := c.Dynamic().Resource(deploy.MeshConfigGVR).Namespace(m.Namespace).Get(ctx, deploy.MeshConfigName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("MeshConfig %s/%s: %w", m.Namespace, deploy.MeshConfigName, err)
	}
	spec, err := meshconfig.Parse(mc)
	if err != nil {
		return nil, fmt.Errorf("MeshConfig %s/%s: %w (fix it with kubectl edit meshconfig -n %s %s)", m.Namespace, deploy.MeshConfigName, err, m.Namespace, deploy.MeshConfigName)
	}
	return &Member{Client: c, Mesh: m, MeshConfig: mc, Spec: spec}, nil
}

// GossipAddress is where other clusters reach this one's gossip port:
// spec.federation.advertiseAddress (else bindAddress unless it is
// 0.0.0.0) with advertisePort (else bindPort), or else the address the
// running controller reported in status.federation.
func (m *Member) GossipAddress() (string, error) {
	f := m.Spec.Federation
	host := f.AdvertiseAddress
	if host == "" && f.BindAddress != "0.0.0.0" && f.BindAddress != "::" {
		host = f.BindAddress
	}
	if host != "" {
		return net.JoinHostPort(host, strconv.Itoa(f.AdvertisedPort())), nil
	}
	if st, ok := m.Status(); ok {
		for _, mem := range st.Members {
			if mem.Local && mem.Address != "" {
				return mem.Address, nil
			}
		}
	}
	return "", fmt.Errorf("cluster %s: no gossip address: set spec.federation.advertiseAddress in MeshConfig %s/%s, or pass --peer-address",
		m.Mesh.ClusterName, m.Mesh.Namespace, deploy.MeshConfigName)
}

// Status returns the controller's status.federation, if any.
func (m *Member) Status() (federate.Status, bool) {
	raw, ok, _ := unstructured.NestedMap(m.MeshConfig.Object, "status", "federation")
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

// PatchFederation merge-patches spec.federation of the MeshConfig.
func (m *Member) PatchFederation(ctx context.Context, fields map[string]any) error {
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"federation": fields}})
	if err != nil {
		return err
	}
	_, err = m.Client.Dynamic().Resource(deploy.MeshConfigGVR).Namespace(m.Mesh.Namespace).Patch(ctx, deploy.MeshConfigName, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("cluster %s: MeshConfig %s/%s: %w", m.Mesh.ClusterName, m.Mesh.Namespace, deploy.MeshConfigName, err)
	}
	return nil
}

// JoinOptions are what `meshfed cluster join` was told besides the two
// clusters.
type JoinOptions struct {
	// Name, if set, must be the joining cluster's name (a safety check).
	Name string
	// PeerAddress is the peer's gossip address; empty: its GossipAddress.
	PeerAddress string
	// CA is where the joining cluster's intermediate comes from; with no
	// intermediate given, the peer's root signs one (ReplaceRoot as given).
	CA          installer.CASource
	ReplaceRoot bool
	// Progress, if set, is told each step done.
	Progress func(string)
}

// Join connects local, a newly installed cluster, to the federation peer
// belongs to: the shared root (or a signed intermediate) is installed in
// local, the gossip keyring is copied from peer (made there if it has
// none), and federation is enabled in both MeshConfigs with peer's gossip
// address as local's seed. Errors wrapping installer.ErrNoPeerRoot and
// installer.ErrDifferentRoot say the peer keeps no root key and that local
// has a root of its own.
func Join(ctx context.Context, local, peer *Member, o JoinOptions) error {
	progress := o.Progress
	if progress == nil {
		progress = func(string) {}
	}
	lm, pm := local.Mesh, peer.Mesh
	var errs []error
	if o.Name != "" && o.Name != lm.ClusterName {
		errs = append(errs, fmt.Errorf("this cluster's MeshConfig names it %q, not %q: check --context", lm.ClusterName, o.Name))
	}
	if lm.ClusterName == pm.ClusterName {
		errs = append(errs, fmt.Errorf("both clusters are named %q: every member needs its own name (reinstall one with another --cluster-name)", lm.ClusterName))
	}
	if lm.TrustDomain != pm.TrustDomain {
		errs = append(errs, fmt.Errorf("trust domains differ: this cluster %q, peer %q; a federation shares one", lm.TrustDomain, pm.TrustDomain))
	}
	peerAddress := o.PeerAddress
	if peerAddress == "" {
		addr, err := peer.GossipAddress()
		if err != nil {
			errs = append(errs, err)
		}
		peerAddress = addr
	} else if _, _, err := net.SplitHostPort(peerAddress); err != nil {
		errs = append(errs, fmt.Errorf("peer address %q: %w", peerAddress, err))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	// 1. The shared root (or a signed intermediate).
	opts := deploy.DefaultOptions()
	opts.MeshName, opts.Namespace, opts.ClusterName, opts.TrustDomain = lm.Name, lm.Namespace, lm.ClusterName, lm.TrustDomain
	src := o.CA
	if len(src.IntermediateChain) == 0 {
		src.RootFrom, src.RootFromNamespace, src.ReplaceRoot = peer.Client.Kube(), pm.Namespace, o.ReplaceRoot
	}
	msg, err := local.Client.InstallCA(ctx, opts, src)
	if err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	progress("trust: " + msg)

	// 2. The gossip keyring, from the peer (made there if it has none).
	peerSecret, localSecret := peer.Spec.Federation.GossipKeySecretName, local.Spec.Federation.GossipKeySecretName
	keys, created, err := federate.EnsureGossipKeys(ctx, peer.Client.Kube(), pm.Namespace, peerSecret)
	if err != nil {
		return fmt.Errorf("peer %s: %w", pm.ClusterName, err)
	}
	if created {
		progress(fmt.Sprintf("gossip key: created Secret %s/%s in %s", pm.Namespace, peerSecret, pm.ClusterName))
	}
	if err := federate.SaveGossipKeys(ctx, local.Client.Kube(), lm.Namespace, localSecret, keys, true); err != nil {
		return err
	}
	progress(fmt.Sprintf("gossip key: %d key(s) copied into Secret %s/%s", len(keys), lm.Namespace, localSecret))

	// 3. Both MeshConfigs: federation on, the peer as this cluster's seed.
	peers := slices.Clone(local.Spec.Federation.Peers)
	if !slices.Contains(peers, peerAddress) {
		peers = append(peers, peerAddress)
	}
	if err := local.PatchFederation(ctx, map[string]any{"enabled": true, "peers": peers}); err != nil {
		return err
	}
	if err := peer.PatchFederation(ctx, map[string]any{"enabled": true}); err != nil {
		return err
	}
	progress(fmt.Sprintf("federation: enabled in %s (seed %s) and %s", lm.ClusterName, peerAddress, pm.ClusterName))
	return nil
}
