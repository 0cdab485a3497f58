package federate_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
)

var update = flag.Bool("update", false, "rewrite testdata/merge/*.golden.yaml")

// mergeInput is one case under testdata/merge: the cluster's own State and
// the federation's remote view (absent: federation off).
type mergeInput struct {
	Local  mesh.State `json:"local"`
	Remote *struct {
		Version  uint64                         `json:"version"`
		Clusters map[string]mesh.ClusterCatalog `json:"clusters"`
		Imports  []mesh.Import                  `json:"imports"`
	} `json:"remote"`
}

// mergeOutput is what the golden files hold: the merged State's splits,
// remote services and imports, and the problems validation finds in it,
// one line each.
type mergeOutput struct {
	Splits   []string `json:"splits"`
	Remote   []string `json:"remote"`
	Imports  []string `json:"imports"`
	Problems []string `json:"problems"`
}

func describeMerged(s mesh.State) mergeOutput {
	out := mergeOutput{Splits: []string{}, Remote: []string{}, Imports: []string{}, Problems: []string{}}
	for _, ts := range s.TrafficSplits {
		var bs []string
		for _, b := range ts.Backends {
			where := "local"
			if b.Cluster != "" {
				where = b.Cluster
			}
			bs = append(bs, fmt.Sprintf("%s@%s=%d", b.Service, where, b.Weight))
		}
		out.Splits = append(out.Splits, fmt.Sprintf("%s/%s (%s): %s", ts.Namespace, ts.Name, ts.Service, strings.Join(bs, ", ")))
	}
	for c, cat := range s.Remote {
		for _, svc := range cat.Services {
			out.Remote = append(out.Remote, fmt.Sprintf("%s: %s/%s, %d endpoints", c, svc.Namespace, svc.Name, len(svc.Endpoints)))
		}
	}
	sort.Strings(out.Remote)
	for _, imp := range s.Imports {
		out.Imports = append(out.Imports, fmt.Sprintf("%s/%s from %s", imp.Namespace, imp.Name, strings.Join(imp.Clusters, ",")))
	}
	for _, p := range generate.NewIndex(s).Problems {
		out.Problems = append(out.Problems, p.Error())
	}
	return out
}

// TestMergeGolden merges every case under testdata/merge and compares the
// result with its golden file (go test -update rewrites them; review the
// diff). The cases cover split resolution: a backend only other clusters
// export, one exported by several, one both local and remote, one that
// exists nowhere, one already pinned to a cluster, and federation off.
func TestMergeGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "merge", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, path := range inputs {
		if strings.HasSuffix(path, ".golden.yaml") {
			continue
		}
		n++
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var in mergeInput
			if err := yaml.UnmarshalStrict(data, &in); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			var rs *federate.RemoteState
			if in.Remote != nil {
				rs = &federate.RemoteState{Version: in.Remote.Version, Remote: in.Remote.Clusters, Imports: in.Remote.Imports}
			}
			splitsBefore := fmt.Sprint(in.Local.TrafficSplits)
			got, err := yaml.Marshal(describeMerged(federate.Merge(in.Local, rs)))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(in.Local.TrafficSplits) != splitsBefore {
				t.Errorf("Merge changed the local State's splits")
			}
			golden := strings.TrimSuffix(path, ".yaml") + ".golden.yaml"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestMergeGolden -update)", err)
			}
			if string(want) != string(got) {
				t.Errorf("%s differs from the merge (run go test -run TestMergeGolden -update and review the diff):\n--- want\n%s\n--- got\n%s", golden, want, got)
			}
		})
	}
	if n == 0 {
		t.Fatal("no cases under testdata/merge")
	}
}
