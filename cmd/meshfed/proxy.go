package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshfed/meshfed/controller/debug"
	"github.com/meshfed/meshfed/deploy"
)

func newProxyCommand(kf *kubeFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "proxy", Short: "See what meshfed-controller sent each proxy and whether it accepted it"}
	var meshNS string
	cmd.PersistentFlags().StringVar(&meshNS, "mesh-namespace", deploy.DefaultNamespace, "the control plane's namespace")
	cmd.AddCommand(newProxyStatusCommand(kf, &meshNS), newProxyGetCommand(kf, &meshNS))
	return cmd
}

func newProxyStatusCommand(kf *kubeFlags, meshNS *string) *cobra.Command {
	var all bool
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Every connected proxy: its Pod, identity, kind and, per resource type, whether it accepted what it was sent (with any rejection's message)",
		Long: `proxy status reads meshfed-controller's debug API through the API server
(port forwarding to the controller's Pod, which your kubeconfig must be
allowed: create pods/portforward in the control plane's namespace).
SYNCED: the proxy accepted the last version sent; PENDING: a newer version
is on its way; NACK: the proxy rejected it and keeps its last good
configuration (its message is listed under the table).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			contexts := []string{kf.context}
			if all {
				var err error
				if contexts, err = kf.contexts(); err != nil {
					return err
				}
			}
			var got []debug.Proxies
			var errs []error
			for _, name := range contexts {
				p, err := readProxies(cmd.Context(), &kubeFlags{kubeconfig: kf.kubeconfig, context: name}, *meshNS)
				if err != nil {
					errs = append(errs, fmt.Errorf("context %q: %w", name, err))
					continue
				}
				got = append(got, p)
			}
			if len(got) == 0 {
				return errors.Join(errs...)
			}
			for _, err := range errs {
				fmt.Fprintln(cmd.ErrOrStderr(), "meshfed:", err)
			}
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(got)
			case "", "table":
				return debug.WriteStatus(cmd.OutOrStdout(), got)
			}
			return fmt.Errorf("-o %q: want table or json", output)
		},
	}
	cmd.Flags().BoolVar(&all, "all-clusters", false, "every context of the kubeconfig (each cluster's controller knows its own proxies)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func readProxies(ctx context.Context, kf *kubeFlags, meshNS string) (debug.Proxies, error) {
	cfg, err := kf.restConfig()
	if err != nil {
		return debug.Proxies{}, err
	}
	c, err := debug.Dial(ctx, cfg, meshNS)
	if err != nil {
		return debug.Proxies{}, err
	}
	defer c.Close()
	return c.Proxies(ctx)
}

func newProxyGetCommand(kf *kubeFlags, meshNS *string) *cobra.Command {
	var namespace, output string
	kinds := slices.Sorted(maps.Keys(debug.Kinds))
	cmd := &cobra.Command{
		Use:   "get POD [" + strings.Join(kinds, "|") + "|all]",
		Short: "The configuration meshfed-controller serves to a Pod's proxy (secrets as names, SPIFFE IDs and expiry only)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var types []string
			if len(args) == 2 && args[1] != "all" {
				t, ok := debug.Kinds[args[1]]
				if !ok {
					return fmt.Errorf("%q: want one of %s or all", args[1], strings.Join(kinds, ", "))
				}
				types = []string{t}
			}
			cfg, err := kf.restConfig()
			if err != nil {
				return err
			}
			kube, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return err
			}
			pod, err := kube.CoreV1().Pods(namespace).Get(cmd.Context(), args[0], metav1.GetOptions{})
			if err != nil {
				return err
			}
			sa := pod.Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			c, err := debug.Dial(cmd.Context(), cfg, *meshNS)
			if err != nil {
				return err
			}
			defer c.Close()
			ps, err := c.Proxies(cmd.Context())
			if err != nil {
				return err
			}
			p, err := debug.FindProxy(ps.Proxies, namespace, pod.Name, sa)
			if err != nil {
				return fmt.Errorf("%w in cluster %s", err, ps.Cluster)
			}
			conf, err := c.Config(cmd.Context(), p.Key)
			if err != nil {
				return err
			}
			return debug.WriteConfig(cmd.OutOrStdout(), conf, types, output)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "the Pod's namespace")
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "yaml or json")
	return cmd
}

// contexts are the kubeconfig's context names, sorted.
func (k *kubeFlags) contexts() ([]string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	}
	raw, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).RawConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	var names []string
	for n := range raw.Contexts {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) == 0 {
		return nil, errors.New("kubeconfig: no contexts")
	}
	return names, nil
}

// currentContext is the kubeconfig's current context ("" when it has none
// or cannot be read).
func (k *kubeFlags) currentContext() string {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	}
	raw, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).RawConfig()
	if err != nil {
		return ""
	}
	return raw.CurrentContext
}
