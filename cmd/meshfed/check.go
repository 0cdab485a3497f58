package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/check"
)

// errCheckFailed makes the command exit non-zero once its results are
// printed.
var errCheckFailed = errors.New("some checks failed")

func newCheckCommand(kf *kubeFlags) *cobra.Command {
	var contexts []string
	var meshName, output string
	cmd := &cobra.Command{
		Use:   "check [--contexts a,b,c]",
		Short: "Check each cluster's meshfed installation and that the clusters agree (trust, membership, catalogs, clocks)",
		Long: `check prints one line per check: ✔ passed, ‼ warning, ✘ failed, and under a
warning or failure the command that fixes it. It exits non-zero when any
check failed. See docs/operability.md for what each check does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			targets := []*kubeFlags{kf}
			if len(contexts) > 0 {
				targets = nil
				for _, c := range contexts {
					targets = append(targets, &kubeFlags{kubeconfig: kf.kubeconfig, context: c})
				}
			}
			var results []check.Result
			var facts []check.Facts
			for _, t := range targets {
				if t.context == "" {
					// Named, in results and fix commands, by the context it is.
					t = &kubeFlags{kubeconfig: t.kubeconfig, context: t.currentContext()}
				}
				name := t.context
				if name == "" {
					name = "current-context"
				}
				cfg, err := t.restConfig()
				if err != nil {
					results = append(results, check.Result{Cluster: name, Check: "kubernetes-api", Severity: check.SeverityError, Message: err.Error(), Fix: "check the kubeconfig: `kubectl config get-contexts`"})
					continue
				}
				f, rs := check.Inspect(cmd.Context(), check.Target{Name: name, Context: t.context, Config: cfg, MeshName: meshName})
				results = append(results, rs...)
				facts = append(facts, f)
			}
			results = append(results, check.Across(facts, check.MaxClockSkew)...)
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(results); err != nil {
					return err
				}
			case "", "text":
				if err := check.Write(cmd.OutOrStdout(), results); err != nil {
					return err
				}
			default:
				return fmt.Errorf("-o %q: want text or json", output)
			}
			if check.Failed(results) {
				return errCheckFailed
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&contexts, "contexts", nil, "kubeconfig contexts of the clusters to check (comma-separated or repeated; default: the current context)")
	cmd.Flags().StringVar(&meshName, "mesh-name", deploy.DefaultMeshName, "name of the mesh")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}
