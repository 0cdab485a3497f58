package generate

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/mesh"
)

var update = flag.Bool("update", false, "rewrite the *.golden.yaml files")

type goldenInput struct {
	Proxies []struct {
		Identity mesh.Identity `json:"identity"`
	} `json:"proxies"`
	State mesh.State `json:"state"`
}

func loadInput(t *testing.T, path string) goldenInput {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var in goldenInput
	if err := yaml.UnmarshalStrict(data, &in); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return in
}

// toYAMLValue turns resources into plain values for YAML output.
func toYAMLValue(t *testing.T, rs []types.Resource) []any {
	t.Helper()
	out := make([]any, 0, len(rs))
	for _, r := range rs {
		b, err := protojson.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func compareGolden(t *testing.T, path string, doc any) {
	t.Helper()
	got, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if string(want) != string(got) {
		t.Errorf("%s differs from the generated output (run go test -update and review the diff):\n%s", path, firstDiff(string(want), string(got)))
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return "line " + itoa(i+1) + ":\n- " + al[i] + "\n+ " + bl[i]
		}
	}
	return "lengths differ"
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func problemsOf(ix *Index) []string {
	var out []string
	for _, p := range ix.Problems {
		out = append(out, p.Error())
	}
	return out
}

// TestGolden generates both data planes' configuration for every input under
// testdata/ and compares it with the golden files; every resource must pass
// ValidateAll and every proxy's set must be complete.
func TestGolden(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.yaml")
	for _, path := range inputs {
		if strings.HasSuffix(path, ".golden.yaml") {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) {
			in := loadInput(t, path)
			ix := NewIndex(in.State)

			listeners := ProxylessClientListeners(ix)
			routes := ProxylessRoutes(ix)
			clusters := ProxylessClusters(ix)
			endpoints := Endpoints(ix)
			servers := map[string]any{}
			for _, p := range in.Proxies {
				sl := ProxylessServerListeners(ix, p.Identity)
				if err := Validate(sl); err != nil {
					t.Errorf("server listeners of %s: %v", p.Identity, err)
				}
				if err := CheckReferences(append(append([]types.Resource{}, listeners...), sl...), routes, clusters, endpoints); err != nil {
					t.Errorf("proxyless %s: %v", p.Identity, err)
				}
				servers[string(p.Identity)] = toYAMLValue(t, sl)
			}
			if err := Validate(listeners, routes, clusters, endpoints); err != nil {
				t.Error(err)
			}
			compareGolden(t, filepath.Join("testdata", name+".proxyless.golden.yaml"), map[string]any{
				"problems":        problemsOf(ix),
				"clientListeners": toYAMLValue(t, listeners),
				"routes":          toYAMLValue(t, routes),
				"clusters":        toYAMLValue(t, clusters),
				"endpoints":       toYAMLValue(t, endpoints),
				"serverListeners": servers,
			})

			sl, sr, sc := SidecarOutboundListeners(ix), SidecarOutboundRoutes(ix), SidecarClusters(ix)
			if err := Validate(sl, sr, sc); err != nil {
				t.Error(err)
			}
			inbound := map[string]any{}
			for _, p := range in.Proxies {
				in := SidecarInbound(ix, p.Identity)
				if err := Validate(in.Listeners, in.Routes, in.Clusters); err != nil {
					t.Errorf("sidecar inbound of %s: %v", p.Identity, err)
				}
				cat := func(a, b []types.Resource) []types.Resource { return append(append([]types.Resource{}, a...), b...) }
				if err := CheckReferences(cat(sl, in.Listeners), cat(sr, in.Routes), cat(sc, in.Clusters), endpoints); err != nil {
					t.Errorf("sidecar %s: %v", p.Identity, err)
				}
				inbound[string(p.Identity)] = map[string]any{
					"listeners": toYAMLValue(t, in.Listeners), "routes": toYAMLValue(t, in.Routes), "clusters": toYAMLValue(t, in.Clusters),
				}
			}
			gw := GatewayConfig(ix)
			if err := Validate(gw.Listeners, gw.Clusters, gw.Endpoints); err != nil {
				t.Errorf("gateway: %v", err)
			}
			if err := CheckGateway(gw); err != nil {
				t.Errorf("gateway: %v", err)
			}
			if len(gw.Listeners) > 0 {
				compareGolden(t, filepath.Join("testdata", name+".gateway.golden.yaml"), map[string]any{
					"listeners": toYAMLValue(t, gw.Listeners),
					"clusters":  toYAMLValue(t, gw.Clusters),
					"endpoints": toYAMLValue(t, gw.Endpoints),
				})
			}

			compareGolden(t, filepath.Join("testdata", name+".sidecar.golden.yaml"), map[string]any{
				"outboundListeners": toYAMLValue(t, sl),
				"outboundRoutes":    toYAMLValue(t, sr),
				"clusters":          toYAMLValue(t, sc),
				"inbound":           inbound,
			})
		})
	}
}
