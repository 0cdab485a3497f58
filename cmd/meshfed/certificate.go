package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/member"
	"github.com/meshfed/meshfed/trust/rotation"
)

// certFlags select the clusters of a federation: every --context (with
// --kubeconfig), every --kubeconfigs entry, or the one cluster of
// --kubeconfig/--context.
type certFlags struct {
	kf          *kubeFlags
	contexts    []string
	kubeconfigs []string
	meshName    string
}

func (c *certFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringSliceVar(&c.contexts, "contexts", nil, "kubeconfig contexts of every cluster of the federation (comma-separated or repeated)")
	f.StringSliceVar(&c.kubeconfigs, "kubeconfigs", nil, "kubeconfig files of every cluster of the federation, each at its current context")
	f.StringVar(&c.meshName, "mesh-name", deploy.DefaultMeshName, "name of the mesh")
}

func (c *certFlags) targets() []*kubeFlags {
	var out []*kubeFlags
	for _, ctx := range c.contexts {
		out = append(out, &kubeFlags{kubeconfig: c.kf.kubeconfig, context: ctx})
	}
	for _, p := range c.kubeconfigs {
		out = append(out, &kubeFlags{kubeconfig: p})
	}
	if len(out) == 0 {
		out = append(out, c.kf)
	}
	return out
}

// openCAClusters opens the CA of every cluster cf names.
func openCAClusters(ctx context.Context, cf *certFlags) ([]*rotation.Cluster, error) {
	var out []*rotation.Cluster
	var errs []error
	for _, kf := range cf.targets() {
		mc, err := openMeshCluster(ctx, kf, cf.meshName)
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster %s: %w", describeTarget(kf), err))
			continue
		}
		c, err := openCACluster(ctx, mc, describeTarget(kf))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}

func describeTarget(kf *kubeFlags) string {
	switch {
	case kf.context != "":
		return "context " + kf.context
	case kf.kubeconfig != "":
		return kf.kubeconfig
	}
	return "current context"
}

// openCACluster opens a cluster's CA where its MeshConfig says it is.
func openCACluster(ctx context.Context, mc *member.Member, fallback string) (*rotation.Cluster, error) {
	spec := mc.Spec
	name := spec.ClusterName
	if name == "" {
		name = fallback
	}
	td, err := spiffeid.TrustDomainFromString(spec.TrustDomainOr(""))
	if err != nil {
		return nil, fmt.Errorf("cluster %s: trust domain %q: %w", name, spec.TrustDomainOr(""), err)
	}
	return rotation.Open(ctx, rotation.ClusterConfig{Name: name, Client: mc.Client.Kube(), Namespace: mc.Mesh.Namespace,
		RootSecret: spec.Certificate.RootSecretName, IntermediateSecret: spec.Certificate.IntermediateSecretName,
		BundleConfigMap: deploy.BundleConfigMapName, TrustDomain: td, SVIDTTL: spec.Certificate.ServiceCertValidityDuration})
}

func newCertificateCommand(kf *kubeFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certificate",
		Short: "Inspect and rotate the federation's root certificate",
	}
	cmd.AddCommand(newCertificateRotateCommand(kf), newCertificateStatusCommand(kf))
	return cmd
}

func newCertificateStatusCommand(kf *kubeFlags) *cobra.Command {
	cf := &certFlags{kf: kf}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each cluster's roots, trust bundles and intermediate issuer",
		RunE: func(cmd *cobra.Command, _ []string) error {
			clusters, err := openCAClusters(cmd.Context(), cf)
			rotation.PrintStatus(cmd.Context(), cmd.OutOrStdout(), clusters)
			return err
		},
	}
	cf.register(cmd)
	return cmd
}

func newCertificateRotateCommand(kf *kubeFlags) *cobra.Command {
	cf := &certFlags{kf: kf}
	var phase string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rotate --phase=add|reissue|finish",
		Short: "Rotate the federation's root by bundle union, one phase at a time, in every cluster",
		Long: `Rotate the federation's root CA across every cluster without a failed handshake:

  --phase=add      generate a new root (once for the federation); every cluster
                   trusts old and new roots. Workloads receive the union with
                   their next SVID.
  --phase=reissue  every cluster's intermediate is reissued under the new root;
                   workloads receive SVIDs under it at their next renewal.
  --phase=finish   the old root is removed from every bundle.

Each phase waits until every controller has applied it. The next phase
refuses to start until every workload is sure to have renewed (the longest
SVID lifetime of the clusters plus one minute for grpc-go's file watcher);
--wait waits for that instead. Every phase may be re-run.

Name every cluster of the federation with --contexts or --kubeconfigs.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, out := cmd.Context(), cmd.OutOrStdout()
			clusters, err := openCAClusters(ctx, cf)
			if err != nil {
				return err
			}
			r, err := rotation.New(clusters, rotation.Options{Wait: wait, Timeout: timeout, Out: out})
			if err != nil {
				return err
			}
			if err := r.Run(ctx, phase); err != nil {
				return err
			}
			rotation.PrintStatus(ctx, out, clusters)
			return nil
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&phase, "phase", "", "rotation phase to run: add, reissue or finish")
	f.BoolVar(&wait, "wait", false, "wait until the previous phase has settled in every workload instead of refusing")
	f.DurationVar(&timeout, "timeout", rotation.DefaultTimeout, "how long to wait for each controller to apply the phase")
	return cmd
}
