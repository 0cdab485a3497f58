package helm_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	helmcommon "helm.sh/helm/v4/pkg/chart/common"
	helmutil "helm.sh/helm/v4/pkg/chart/common/util"
	helmchart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/helm"
)

// The templates on disk are what the generator makes from deploy today.
func TestTemplatesAreGenerated(t *testing.T) {
	want, err := helm.Templates()
	if err != nil {
		t.Fatal(err)
	}
	got, err := helm.ReadGenerated(helm.ChartDir)
	if err != nil {
		t.Fatal(err)
	}
	if !helm.Equal(got, want) {
		t.Fatalf("deploy/helm/meshfed/templates differ from what meshfed install applies: run `go generate ./deploy/helm`\non disk: %v\nwant:    %v", helm.Files(got), helm.Files(want))
	}
}

// Chart.yaml's appVersion is the version install applies; a release that
// sets deploy.Version sets it too.
func TestChartVersionIsInstallsVersion(t *testing.T) {
	ch := loadChart(t)
	if ch.Metadata.AppVersion != deploy.Version {
		t.Fatalf("Chart.yaml appVersion %q, meshfed install applies %q", ch.Metadata.AppVersion, deploy.Version)
	}
}

// install is one option set as a user gives it to both: the flags of
// `meshfed install` and the chart's values.
type install struct {
	name     string
	opts     deploy.Options
	caBundle string // the injector's caBundle install read from the cluster
	values   map[string]any
}

func installs() []install {
	defaults := deploy.DefaultOptions()
	defaults.ClusterName, defaults.Injector = "east", true // install's --sidecar-injector default

	custom := deploy.Options{
		MeshName: "blue", Namespace: "blue-system", ClusterName: "west-2", TrustDomain: "example.org",
		Injector: true, Permissive: true, Image: "registry.example/meshfed-controller:custom", Replicas: 3,
		Network: "net-a", GatewayAddresses: []string{"192.0.2.10:15443", "[2001:db8::7]:443"},
		GatewayServiceType: corev1.ServiceTypeNodePort,
	}
	const bundle = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

	noInjector := deploy.DefaultOptions()
	noInjector.ClusterName, noInjector.Network, noInjector.GatewayServiceType = "c3", "lan", corev1.ServiceTypeClusterIP
	noInjector.Namespace = "mesh"

	numeric := deploy.DefaultOptions()
	numeric.ClusterName, numeric.MeshName, numeric.Network, numeric.Injector = "123", "007", "42", true

	return []install{
		{name: "defaults", opts: defaults, values: map[string]any{"clusterName": "east"}},
		{name: "every option", opts: custom, caBundle: bundle, values: map[string]any{
			"clusterName": "west-2", "meshName": "blue", "trustDomain": "example.org", "permissive": true,
			"controller":      map[string]any{"image": "registry.example/meshfed-controller:custom", "replicas": 3},
			"sidecarInjector": map[string]any{"caBundle": bundle},
			"network":         "net-a",
			"gateway":         map[string]any{"serviceType": "NodePort", "addresses": []any{"192.0.2.10:15443", "[2001:db8::7]:443"}},
			"createNamespace": true,
		}},
		{name: "network without addresses, no injector", opts: noInjector, values: map[string]any{
			"clusterName": "c3", "network": "lan", "gateway": map[string]any{"serviceType": "ClusterIP"},
			"sidecarInjector": map[string]any{"enabled": false},
		}},
		{name: "names YAML would read as numbers", opts: numeric, values: map[string]any{
			"clusterName": "123", "meshName": "007", "network": "42",
		}},
	}
}

// The chart, rendered by Helm's engine as `helm install` renders it,
// holds exactly the objects `meshfed install` applies with the same
// options: CRDs, control plane, gateway, injector webhook.
func TestChartRendersWhatInstallApplies(t *testing.T) {
	ch := loadChart(t)
	for _, in := range installs() {
		t.Run(in.name, func(t *testing.T) {
			createNS := in.values["createNamespace"] == true
			want := installObjects(t, in, createNS)
			got, err := render(ch, in.opts.Namespace, in.values)
			if err != nil {
				t.Fatalf("helm render: %v", err)
			}
			got = append(got, chartCRDs(t, ch)...)
			compare(t, got, want)
		})
	}
}

// What install refuses, the chart refuses, with the value's name.
func TestChartRefusesWhatInstallRefuses(t *testing.T) {
	ch := loadChart(t)
	valid := func() (deploy.Options, map[string]any) {
		o := deploy.DefaultOptions()
		o.ClusterName = "east"
		return o, map[string]any{"clusterName": "east"}
	}
	for _, c := range []struct {
		name  string
		edit  func(o *deploy.Options, v map[string]any)
		field string // what the chart's error names
	}{
		{"no cluster name", func(o *deploy.Options, v map[string]any) { o.ClusterName = ""; delete(v, "clusterName") }, "clusterName"},
		{"cluster name not a DNS label", func(o *deploy.Options, v map[string]any) { o.ClusterName = "East_1"; v["clusterName"] = "East_1" }, "clusterName"},
		{"mesh name not a DNS label", func(o *deploy.Options, v map[string]any) { o.MeshName = "a.b"; v["meshName"] = "a.b" }, "meshName"},
		{"trust domain with a slash", func(o *deploy.Options, v map[string]any) { o.TrustDomain = "a/b"; v["trustDomain"] = "a/b" }, "trustDomain"},
		{"no replicas", func(o *deploy.Options, v map[string]any) {
			o.Replicas = 0
			v["controller"] = map[string]any{"replicas": 0}
		}, "replicas"},
		{"network not a label value", func(o *deploy.Options, v map[string]any) { o.Network = "a b"; v["network"] = "a b" }, "network"},
		{"gateway address without a network", func(o *deploy.Options, v map[string]any) {
			o.GatewayAddresses = []string{"192.0.2.1:15443"}
			v["gateway"] = map[string]any{"addresses": []any{"192.0.2.1:15443"}}
		}, "gateway.addresses needs network"},
		{"gateway address without a port", func(o *deploy.Options, v map[string]any) {
			o.Network, o.GatewayAddresses = "n", []string{"192.0.2.1"}
			v["network"], v["gateway"] = "n", map[string]any{"addresses": []any{"192.0.2.1"}}
		}, "addresses"},
		{"unknown service type", func(o *deploy.Options, v map[string]any) {
			o.Network, o.GatewayServiceType = "n", "External"
			v["network"], v["gateway"] = "n", map[string]any{"serviceType": "External"}
		}, "serviceType"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, v := valid()
			c.edit(&o, v)
			if err := o.Validate(); err == nil {
				t.Fatalf("install accepts %+v; the case is wrong", o)
			}
			_, err := render(ch, o.Namespace, v)
			if err == nil {
				t.Fatalf("the chart rendered values install refuses: %v", v)
			}
			if !strings.Contains(err.Error(), c.field) {
				t.Fatalf("the chart's error does not name %s: %v", c.field, err)
			}
		})
	}
}

func loadChart(t *testing.T) *helmchart.Chart {
	t.Helper()
	ch, err := loader.Load(helm.ChartDir)
	if err != nil {
		t.Fatalf("load the chart: %v", err)
	}
	return ch
}

// render renders the chart's templates for an install into namespace.
func render(ch *helmchart.Chart, namespace string, values map[string]any) ([]*unstructured.Unstructured, error) {
	vals, err := helmutil.ToRenderValues(ch, values, helmcommon.ReleaseOptions{Name: "meshfed", Namespace: namespace, IsInstall: true}, nil)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*unstructured.Unstructured
	for _, n := range names {
		if strings.HasSuffix(n, ".tpl") {
			continue
		}
		objs, err := deploy.Decode([]byte(files[n]))
		if err != nil {
			return nil, fmt.Errorf("%s: %w\n%s", n, err, files[n])
		}
		out = append(out, objs...)
	}
	return out, nil
}

func chartCRDs(t *testing.T, ch *helmchart.Chart) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, c := range ch.CRDObjects() {
		objs, err := deploy.Decode(c.File.Data)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		out = append(out, objs...)
	}
	if len(out) == 0 {
		t.Fatal("the chart has no CRDs")
	}
	return out
}

// installObjects is what `meshfed install` applies for in: the CRDs, the
// manifests and, with the injector, its webhook (caBundle as install read
// it). The namespace is left out unless the chart makes it too.
func installObjects(t *testing.T, in install, withNamespace bool) []*unstructured.Unstructured {
	t.Helper()
	crds, err := deploy.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := deploy.Manifests(in.opts)
	if err != nil {
		t.Fatal(err)
	}
	out := crds
	for _, o := range objs {
		if o.GetKind() == "Namespace" && !withNamespace {
			continue
		}
		out = append(out, o)
	}
	if in.opts.Injector {
		var bundle []byte
		if in.caBundle != "" {
			bundle = []byte(in.caBundle)
		}
		wh, err := deploy.InjectorWebhookObject(in.opts, bundle)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, wh)
	}
	return out
}

// compare holds got and want equal object by object, as JSON.
func compare(t *testing.T, got, want []*unstructured.Unstructured) {
	t.Helper()
	g, w := byKey(t, got), byKey(t, want)
	for k, wo := range w {
		gobj, ok := g[k]
		if !ok {
			t.Errorf("the chart does not render %s", k)
			continue
		}
		if !reflect.DeepEqual(gobj, wo) {
			gy, _ := yaml.Marshal(gobj)
			wy, _ := yaml.Marshal(wo)
			t.Errorf("%s differs:\nchart:\n%s\ninstall:\n%s", k, gy, wy)
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("the chart renders %s, which install does not apply", k)
		}
	}
}

// byKey indexes objects by kind, namespace and name, each normalised
// through JSON (so 3 and 3.0 are one number).
func byKey(t *testing.T, objs []*unstructured.Unstructured) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, o := range objs {
		k := o.GetKind() + " " + filepath.Join(o.GetNamespace(), o.GetName())
		if _, dup := out[k]; dup {
			t.Fatalf("%s twice", k)
		}
		b, err := json.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	return out
}

func TestMain(m *testing.M) {
	// The chart is read relative to this package's directory.
	if _, err := os.Stat(filepath.Join(helm.ChartDir, "Chart.yaml")); err != nil {
		fmt.Fprintln(os.Stderr, "run the tests from deploy/helm:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// Helm's own linter finds nothing to warn about.
func TestChartLints(t *testing.T) {
	l := lint.RunAll(helm.ChartDir, map[string]any{"clusterName": "east", "network": "n1"}, deploy.DefaultNamespace)
	for _, m := range l.Messages {
		if m.Severity >= support.WarningSev {
			t.Errorf("helm lint: %s", m)
		}
	}
}
