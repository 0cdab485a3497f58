package example_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"sort"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/deploy"
	example "github.com/meshfed/meshfed/docs/example"
)

// The version rule (docs/injection.md, "Images and real clusters"): every
// meshfed/* image that the demo's manifests or the objects `meshfed install`
// writes name carries the tag `meshfed version` prints, deploy.Version; the
// images are built and tagged with it (deploy/image/Dockerfile), so what a
// cluster pulls is what the CLI installed.
func TestDemoManifestsNameMeshfedImagesAtTheVersion(t *testing.T) {
	var files []string
	err := fs.WalkDir(example.Manifests, "manifests", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".yaml") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no manifests embedded")
	}
	seen := 0
	for _, file := range files {
		data, err := fs.ReadFile(example.Manifests, file)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := decodeAll(data)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, doc := range docs {
			for _, image := range meshfedImages(doc) {
				seen++
				if tag := tagOf(image); tag != deploy.Version {
					t.Errorf("%s: image %s: tag %q, want %q (deploy.Version)", file, image, tag, deploy.Version)
				}
			}
		}
	}
	if seen == 0 {
		t.Error("the demo's manifests name no meshfed/* image: the check saw nothing")
	}
}

func TestInstalledObjectsNameMeshfedImagesAtTheVersion(t *testing.T) {
	o := deploy.DefaultOptions()
	// With a network, install adds the east-west gateway and its agent.
	o.ClusterName, o.Network, o.Injector = "east", "net-east", true
	objs, err := deploy.Manifests(o)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{deploy.DefaultImageRepo + ":" + deploy.Version: false, deploy.AgentImage(): false}
	for _, obj := range objs {
		for _, image := range meshfedImages(obj.Object) {
			if tag := tagOf(image); tag != deploy.Version {
				t.Errorf("%s %s: image %s: tag %q, want %q (deploy.Version)", obj.GetKind(), obj.GetName(), image, tag, deploy.Version)
			}
			if _, ok := want[image]; ok {
				want[image] = true
			}
		}
	}
	for image, found := range want {
		if !found {
			t.Errorf("no installed object names %s", image)
		}
	}
	// The injector names deploy.AgentImage() in every Pod it injects
	// (controller/daemon); it must carry the version too.
	if tag := tagOf(deploy.AgentImage()); tag != deploy.Version {
		t.Errorf("injected agent image %s: tag %q, want %q", deploy.AgentImage(), tag, deploy.Version)
	}
}

// decodeAll splits a multi-document YAML file into its objects.
func decodeAll(data []byte) ([]any, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []any
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		var v any
		if err := yaml.Unmarshal(doc, &v); err != nil {
			return nil, err
		}
		if v != nil {
			out = append(out, v)
		}
	}
}

// meshfedImages returns every value of an "image" field under v (containers,
// init containers, at any depth) that names a meshfed/* image, sorted.
func meshfedImages(v any) []string {
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "image" && strings.HasPrefix(s, "meshfed/") {
					out = append(out, s)
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	sort.Strings(out)
	return out
}

// tagOf is an image reference's tag ("" without one; a digest is not a tag).
func tagOf(image string) string {
	image, _, _ = strings.Cut(image, "@")
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return ""
	}
	return image[i+1:]
}
