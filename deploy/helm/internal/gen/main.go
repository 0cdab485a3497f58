// Command gen writes the chart's templates (deploy/helm/meshfed/templates)
// from what `meshfed install` applies; `go generate ./deploy/helm` runs it
// in deploy/helm.
package main

import (
	"fmt"
	"os"

	"github.com/meshfed/meshfed/deploy/helm"
)

func main() {
	if err := helm.WriteTemplates(helm.ChartDir); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
