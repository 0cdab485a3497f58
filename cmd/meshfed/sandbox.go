package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/sandbox"
)

func newSandboxCommand() *cobra.Command {
	var dir string
	sb := &cobra.Command{
		Use:   "sandbox",
		Short: "Run local Kubernetes clusters (real etcd, kube-apiserver, kube-controller-manager) for trying meshfed",
	}
	sb.PersistentFlags().StringVar(&dir, "dir", "", "where the sandbox keeps its state (default: $MESHFED_SANDBOX_DIR or ~/.cache/meshfed/sandbox)")
	resolve := func() (string, error) {
		if dir != "" {
			return dir, nil
		}
		return sandbox.DefaultDir()
	}

	var clusters string
	up := &cobra.Command{
		Use:   "up",
		Short: "Start local clusters in the background and print their kubeconfigs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := resolve()
			if err != nil {
				return err
			}
			names := splitList(clusters)
			if err := (sandbox.Config{Clusters: names}).Validate(); err != nil {
				return err
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Starting clusters %s (state in %s)...\n", strings.Join(names, ", "), d)
			st, err := sandbox.Up(cmd.Context(), d, []string{exe, "sandbox", "serve", "--dir", d, "--clusters", strings.Join(names, ",")}, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, c := range st.Clusters {
				fmt.Fprintf(out, "cluster %s: kubeconfig %s\n", c.Name, c.Kubeconfig)
			}
			if len(st.Clusters) > 0 {
				fmt.Fprintf(out, "kubectl: %s\n\nTry: %s --kubeconfig %s get namespaces\nStop with: meshfed sandbox down\n",
					filepath.Join(st.BinDir, sandbox.BinKubectl), filepath.Join(st.BinDir, sandbox.BinKubectl), st.Clusters[0].Kubeconfig)
			}
			return nil
		},
	}
	up.Flags().StringVar(&clusters, "clusters", "east,west", "comma-separated cluster names")

	serve := &cobra.Command{
		Use:    "serve",
		Short:  "Run the sandbox in the foreground until interrupted (what `up` starts in the background)",
		Args:   cobra.NoArgs,
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := resolve()
			if err != nil {
				return err
			}
			return sandbox.Serve(cmd.Context(), sandbox.Config{Clusters: splitList(clusters), Dir: d, Log: cmd.ErrOrStderr()})
		},
	}
	serve.Flags().StringVar(&clusters, "clusters", "east,west", "comma-separated cluster names")

	down := &cobra.Command{
		Use:   "down",
		Short: "Stop the local clusters and every process they started",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := resolve()
			if err != nil {
				return err
			}
			if err := sandbox.Down(d); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "sandbox stopped")
			return nil
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the local clusters and whether they answer",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := resolve()
			if err != nil {
				return err
			}
			st, health, running, err := sandbox.ReadStatus(cmd.Context(), d)
			if errors.Is(err, os.ErrNotExist) {
				fmt.Fprintln(cmd.OutOrStdout(), "No sandbox running (start one with `meshfed sandbox up`).")
				return nil
			}
			if err != nil {
				return err
			}
			state := "running"
			if !running {
				state = "not running (stale state; run `meshfed sandbox down`)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sandbox %s, pid %d, up %s\n", state, st.PID, time.Since(st.Started).Round(time.Second))
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "CLUSTER\tREADY\tNODES\tPODS\tZONE\tPOD CIDR\tKUBECONFIG")
			for _, h := range health {
				ready := "yes"
				if !h.Ready {
					ready = "no"
				}
				if h.Err != nil {
					ready += " (" + h.Err.Error() + ")"
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", h.Name, ready, h.Nodes, h.Pods, h.Zone, h.PodCIDR, h.Kubeconfig)
			}
			return w.Flush()
		},
	}
	build := &cobra.Command{
		Use:   "build",
		Short: "Build the sandbox's Kubernetes and etcd binaries now (done once; up and demo do it when needed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bin, err := sandbox.EnsureBinaries(sandbox.AssetsOptions{Progress: cmd.ErrOrStderr()})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "binaries in %s\n", bin)
			return nil
		},
	}
	sb.AddCommand(up, serve, down, status, build)
	return sb
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
