package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
)

// kubeFlags are the usual kubeconfig rules: --kubeconfig, --context, then
// KUBECONFIG and ~/.kube/config.
type kubeFlags struct {
	kubeconfig string
	context    string
}

func (k *kubeFlags) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&k.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	cmd.PersistentFlags().StringVar(&k.context, "context", "", "kubeconfig context to use")
}

func (k *kubeFlags) restConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: k.context}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cfg, nil
}

func (k *kubeFlags) installer() (*installer.Client, error) {
	cfg, err := k.restConfig()
	if err != nil {
		return nil, err
	}
	return installer.New(cfg)
}

func newRootCommand() *cobra.Command {
	kf := &kubeFlags{}
	root := &cobra.Command{
		Use:           "meshfed",
		Short:         "meshfed: a multi-cluster service mesh (SMI policy, mTLS, federation without a central control plane)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	kf.register(root)
	root.AddCommand(
		newInstallCommand(kf),
		newUninstallCommand(kf),
		newMeshCommand(kf),
		newNamespaceCommand(kf),
		newSandboxCommand(),
		newVersionCommand(),
		newAgentCommand(),
		newCaptureCommand(),
		newDemoCommand(),
		newClusterCommand(kf),
		newProxyCommand(kf),
		newDashboardCommand(kf),
		newCheckCommand(kf),
		newCertificateCommand(kf),
		newControllerCommand(),
		newBookappCommand(),
		newGatewayStandInCommand(),
		newGatewayLinkCommand(),
	)
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print meshfed's version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), deploy.Version)
			return nil
		},
	}
}
