package main

import (
	"fmt"
	corev1 "k8s.io/api/core/v1"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
)

func newInstallCommand(kf *kubeFlags) *cobra.Command {
	o := deploy.DefaultOptions()
	var dryRun bool
	var rootFrom kubeFlags
	var rootFromNS string
	var inter intermediateFlags
	cmd := &cobra.Command{
		Use:   "install --cluster-name NAME",
		Short: "Install the meshfed control plane into the current cluster",
		Long: `Install applies meshfed's CRDs (SMI, MCS, MeshConfig), the control plane's
namespace, RBAC, ServiceAccount, controller Deployment and Service, and its
MeshConfig. It uses server-side apply: running it again changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dryRun {
				crds, err := deploy.CRDs()
				if err != nil {
					return err
				}
				objs, err := deploy.Manifests(o)
				if err != nil {
					return err
				}
				if o.Injector {
					// Without its caBundle, which install reads from the
					// cluster; the controller writes it at start.
					wh, err := deploy.InjectorWebhookObject(o, nil)
					if err != nil {
						return err
					}
					objs = append(objs, wh)
				}
				return deploy.Encode(cmd.OutOrStdout(), append(crds, objs...))
			}
			if err := o.Validate(); err != nil {
				return err
			}
			c, err := kf.installer()
			if err != nil {
				return err
			}
			src := installer.CASource{RootFromNamespace: rootFromNS}
			if rootFrom.kubeconfig != "" || rootFrom.context != "" {
				other, err := rootFrom.installer()
				if err != nil {
					return fmt.Errorf("--root-from-kubeconfig: %w", err)
				}
				src.RootFrom = other.Kube()
			}
			if err := inter.read(&src); err != nil {
				return err
			}
			res, err := c.InstallWithCA(cmd.Context(), o, src)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "meshfed %s: mesh %q installed in namespace %q for cluster %q (%d objects applied; %s)\n",
				deploy.Version, o.MeshName, o.Namespace, o.ClusterName, len(res.Applied), res.CA)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ClusterName, "cluster-name", "", "this cluster's name in the federation (required, unique among clusters)")
	f.StringVar(&o.MeshName, "mesh-name", o.MeshName, "name of the mesh")
	f.StringVar(&o.Namespace, "namespace", o.Namespace, "namespace for the control plane")
	f.StringVar(&o.TrustDomain, "trust-domain", o.TrustDomain, "SPIFFE trust domain, shared by every cluster of a federation")
	f.BoolVar(&o.Permissive, "enable-permissive-traffic-policy", false, "allow all traffic between meshed workloads (still mTLS) instead of only what TrafficTargets allow")
	f.StringVar(&o.Image, "controller-image", o.Image, "container image of meshfed-controller")
	f.StringVar(&o.Network, "network", "", "name of the network this cluster's pod addresses are on; clusters on other networks reach it through its east-west gateway")
	f.Var(newServiceTypeValue(&o.GatewayServiceType), "gateway-service-type", "how the east-west gateway's Service is exposed (with --network): LoadBalancer, NodePort or ClusterIP")
	f.StringSliceVar(&o.GatewayAddresses, "gateway-address", nil, "IP:port at which clusters on other networks reach this cluster's east-west gateway (repeatable; needs --network)")
	f.BoolVar(&o.Injector, "sidecar-injector", true, "register meshfed-controller's sidecar injector (a MutatingWebhookConfiguration for Pod creation in the mesh's namespaces; see docs/injection.md)")
	f.BoolVar(&dryRun, "dry-run", false, "print the manifests instead of applying them")
	f.StringVar(&rootFrom.kubeconfig, "root-from-kubeconfig", "", "join the federation root of the cluster this kubeconfig points at (its root signs this cluster's intermediate; the root key is not copied)")
	f.StringVar(&rootFrom.context, "root-from-context", "", "kubeconfig context of the cluster to share the root with")
	f.StringVar(&rootFromNS, "root-from-namespace", deploy.DefaultNamespace, "control plane namespace in the cluster the root is shared from")
	inter.register(f)
	return cmd
}

func newUninstallCommand(kf *kubeFlags) *cobra.Command {
	o := installer.UninstallOptions{MeshName: deploy.DefaultMeshName}
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove a mesh's control plane from the current cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := kf.installer()
			if err != nil {
				return err
			}
			if err := c.Uninstall(cmd.Context(), o); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "mesh %q uninstalled\n", o.MeshName)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.MeshName, "mesh-name", o.MeshName, "name of the mesh to remove")
	f.StringVar(&o.Namespace, "namespace", "", "the mesh's control plane namespace (checked if given)")
	f.BoolVar(&o.DeleteNamespace, "delete-namespace", false, "delete the control plane namespace too")
	f.BoolVar(&o.DeleteCRDs, "delete-cluster-wide-resources", false, "delete meshfed's CRDs and with them every SMI, MCS and MeshConfig object (only if no other mesh remains)")
	return cmd
}

func newMeshCommand(kf *kubeFlags) *cobra.Command {
	mesh := &cobra.Command{Use: "mesh", Short: "Inspect installed meshes"}
	mesh.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the meshes installed in the current cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := kf.installer()
			if err != nil {
				return err
			}
			meshes, err := c.ListMeshes(cmd.Context())
			if err != nil {
				return err
			}
			if len(meshes) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "No meshes installed (run `meshfed install --cluster-name NAME`).")
				return nil
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "MESH\tNAMESPACE\tCLUSTER\tTRUST DOMAIN\tPERMISSIVE\tVERSION")
			for _, m := range meshes {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\t%s\n", m.Name, m.Namespace, m.ClusterName, m.TrustDomain, m.Permissive, m.Version)
			}
			return w.Flush()
		},
	})
	return mesh
}

// intermediateFlags name the files of a signed intermediate CA: one made
// by the federation root offline, so the root key never enters a cluster.
type intermediateFlags struct{ cert, key, bundle string }

func (i *intermediateFlags) register(f *pflag.FlagSet) {
	f.StringVar(&i.cert, "intermediate-cert", "", "PEM chain of this cluster's intermediate CA, signed offline by the federation root (the root key then never enters a cluster)")
	f.StringVar(&i.key, "intermediate-key", "", "PEM key of that intermediate")
	f.StringVar(&i.bundle, "trust-bundle", "", "PEM trust bundle (the federation root or roots) for that intermediate")
}

// read loads the files that were named into src.
func (i *intermediateFlags) read(src *installer.CASource) error {
	for _, f := range []struct {
		path string
		dst  *[]byte
	}{{i.cert, &src.IntermediateChain}, {i.key, &src.IntermediateKey}, {i.bundle, &src.TrustBundle}} {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return err
		}
		*f.dst = b
	}
	return nil
}

// serviceTypeValue is a flag holding a Service type.
type serviceTypeValue struct{ p *corev1.ServiceType }

func newServiceTypeValue(p *corev1.ServiceType) *serviceTypeValue { return &serviceTypeValue{p} }
func (v *serviceTypeValue) String() string                        { return string(*v.p) }
func (v *serviceTypeValue) Set(s string) error                    { *v.p = corev1.ServiceType(s); return nil }
func (v *serviceTypeValue) Type() string                          { return "type" }
