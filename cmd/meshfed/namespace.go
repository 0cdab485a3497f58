package main

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
)

func newNamespaceCommand(kf *kubeFlags) *cobra.Command {
	ns := &cobra.Command{Use: "namespace", Aliases: []string{"ns"}, Short: "Add namespaces to a mesh, remove them, list them"}
	var meshName string
	ns.PersistentFlags().StringVar(&meshName, "mesh-name", deploy.DefaultMeshName, "name of the mesh")

	var enable, disable bool
	add := &cobra.Command{
		Use:   "add NAMESPACE...",
		Short: "Make namespaces part of the mesh",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if enable && disable {
				return errors.New("--enable-sidecar-injection and --disable-sidecar-injection contradict each other")
			}
			inj := installer.InjectionUnchanged
			if enable {
				inj = installer.InjectionEnabled
			}
			if disable {
				inj = installer.InjectionDisabled
			}
			c, err := kf.installer()
			if err != nil {
				return err
			}
			if err := c.AddNamespaces(cmd.Context(), meshName, args, inj); err != nil {
				return err
			}
			for _, n := range args {
				fmt.Fprintf(cmd.OutOrStdout(), "namespace %s added to mesh %s\n", n, meshName)
			}
			return nil
		},
	}
	add.Flags().BoolVar(&enable, "enable-sidecar-injection", false, "inject sidecars into new Pods of the namespace")
	add.Flags().BoolVar(&disable, "disable-sidecar-injection", false, "do not inject sidecars into new Pods of the namespace")

	remove := &cobra.Command{
		Use:   "remove NAMESPACE...",
		Short: "Take namespaces out of the mesh",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := kf.installer()
			if err != nil {
				return err
			}
			done, err := c.RemoveNamespaces(cmd.Context(), meshName, args)
			if err != nil {
				return err
			}
			for _, n := range done {
				fmt.Fprintf(cmd.OutOrStdout(), "namespace %s removed from mesh %s\n", n, meshName)
			}
			return nil
		},
	}
	var all bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the namespaces of the mesh",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := kf.installer()
			if err != nil {
				return err
			}
			name := meshName
			if all {
				name = ""
			}
			list, err := c.ListNamespaces(cmd.Context(), name)
			if err != nil {
				return err
			}
			if len(list) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "No namespaces in the mesh.")
				return nil
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAMESPACE\tMESH\tSIDECAR-INJECTION")
			for _, n := range list {
				inj := n.Injection
				if inj == "" {
					inj = "-"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\n", n.Name, n.Mesh, inj)
			}
			return w.Flush()
		},
	}
	list.Flags().BoolVar(&all, "all-meshes", false, "list the namespaces of every mesh")
	ns.AddCommand(add, remove, list)
	return ns
}
