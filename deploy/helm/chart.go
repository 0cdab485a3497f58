// Package helm makes meshfed's Helm chart (deploy/helm/meshfed) from the
// objects `meshfed install` applies, so that the two cannot drift apart.
//
// The chart's templates are deploy.Manifests and deploy.InjectorWebhook
// rendered with marker values, each marker then replaced by the template
// expression of the chart value it stands for; the few parts that are
// present only for some values (the gateway, the injector, the namespace,
// the MeshConfig's federation block) are wrapped in conditions here.
// Chart.yaml, values.yaml, values.schema.json and the CRDs are files of
// their own. `go generate ./deploy/helm` rewrites the templates; the tests
// check that the files on disk are what Templates returns and render the
// chart with Helm's engine to compare it with install, object by object.
package helm

//go:generate go run ./internal/gen

import (
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/deploy"
)

// ChartDir is the chart's directory, relative to this package.
const ChartDir = "meshfed"

// A marker stands for one chart value while the manifests are rendered.
type marker struct {
	text string
	// expr is the template expression in its place. Where the marker is a
	// whole YAML scalar it is quoted (a mesh named "123" stays a string)
	// unless raw (numbers and booleans).
	expr string
	raw  bool
	// line, if set, replaces the whole line the marker is on, indented
	// as it was.
	line func(indent string) string
}

const (
	mMesh      = "zzmeshnamezz"
	mNamespace = "zznamespacezz"
	mCluster   = "zzclusternamezz"
	mTrust     = "zztrustdomainzz"
	mImage     = "zzcontrollerimagezz"
	mVersion   = "zzversionzz"
	mReplicas  = "zzreplicaszz"
	mPermit    = "zzpermissivezz"
	mSvcType   = "zzservicetypezz"
	mCABundle  = "zzcabundlezz"
)

var markers = []marker{
	{text: mMesh, expr: ".Values.meshName"},
	{text: mNamespace, expr: ".Release.Namespace"},
	{text: mCluster, expr: ".Values.clusterName"},
	{text: mTrust, expr: ".Values.trustDomain"},
	{text: mImage, expr: `include "meshfed.controllerImage" .`},
	{text: mVersion, expr: ".Chart.AppVersion"},
	{text: mReplicas, expr: ".Values.controller.replicas", raw: true},
	{text: mPermit, expr: ".Values.permissive", raw: true},
	{text: mSvcType, expr: ".Values.gateway.serviceType"},
	{text: mCABundle, line: func(indent string) string {
		// Empty: meshfed-controller fills it at start and keeps it
		// current through root rotations.
		return indent + "{{- with .Values.sidecarInjector.caBundle }}\n" +
			indent + "caBundle: {{ . | b64enc }}\n" +
			indent + "{{- end }}"
	}},
}

// markerOptions are the install options the templates are made from.
func markerOptions() deploy.Options {
	return deploy.Options{
		MeshName: mMesh, Namespace: mNamespace, ClusterName: mCluster, TrustDomain: mTrust,
		Image: mImage, Replicas: 1, Injector: true,
		// Present so that the gateway's objects are rendered; the
		// MeshConfig's federation block is written by hand (federation).
		Network: "zznetworkzz", GatewayServiceType: deploy.DefaultGatewayServiceType,
	}
}

// federation is the MeshConfig's spec.federation, present with a network.
const federation = `{{- with .Values.network }}
  federation:
    network: {{ . | quote }}
    {{- with $.Values.gateway.addresses }}
    gatewayAddresses:
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
`

const header = "# Made by `go generate ./deploy/helm` from what `meshfed install` applies.\n# Edit deploy/ (or deploy/helm/chart.go), not this file.\n"

// Templates returns the chart's templates, by file name under templates/.
func Templates() (map[string][]byte, error) {
	saved := deploy.Version
	deploy.Version = mVersion
	defer func() { deploy.Version = saved }()

	o := markerOptions()
	objs, err := deploy.Manifests(o)
	if err != nil {
		return nil, err
	}
	wh, err := deploy.InjectorWebhookObject(o, nil)
	if err != nil {
		return nil, err
	}
	objs = append(objs, wh)

	out := map[string][]byte{}
	for _, u := range objs {
		name, cond, tail, err := placeholders(u)
		if err != nil {
			return nil, err
		}
		body, err := yaml.Marshal(u.Object)
		if err != nil {
			return nil, err
		}
		text, err := substitute(string(body))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		text += tail
		if cond != "" {
			text = "{{- if " + cond + " }}\n" + text + "{{- end }}\n"
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("two objects would be written to templates/%s", name)
		}
		out[name] = []byte(header + text)
	}
	return out, nil
}

// placeholders puts into u the markers for values the options cannot
// carry (Validate refuses them) and says where u goes: its file name, the
// condition it is rendered under, and text to append.
func placeholders(u *unstructured.Unstructured) (file, cond, tail string, err error) {
	kind := strings.ToLower(u.GetKind())
	set := func(v any, path ...string) {
		if err == nil {
			err = unstructured.SetNestedField(u.Object, v, path...)
		}
	}
	switch {
	case u.GetKind() == "Namespace":
		return "namespace.yaml", ".Values.createNamespace", "", nil
	case u.GetKind() == "MeshConfig":
		unstructured.RemoveNestedField(u.Object, "spec", "federation")
		set(mPermit, "spec", "traffic", "enablePermissiveTrafficPolicyMode")
		return "meshconfig.yaml", "", federation, err
	case u.GetKind() == "MutatingWebhookConfiguration":
		hooks, _, _ := unstructured.NestedSlice(u.Object, "webhooks")
		for _, h := range hooks {
			if err == nil {
				err = unstructured.SetNestedField(h.(map[string]any), mCABundle, "clientConfig", "caBundle")
			}
		}
		set(hooks, "webhooks")
		return "injector-webhook.yaml", ".Values.sidecarInjector.enabled", "", err
	case u.GetName() == deploy.GatewayName:
		if u.GetKind() == "Service" {
			set(mSvcType, "spec", "type")
		}
		return "gateway-" + kind + ".yaml", ".Values.network", "", err
	default:
		if u.GetKind() == "Deployment" {
			set(mReplicas, "spec", "replicas")
		}
		return "controller-" + kind + ".yaml", "", "", err
	}
}

// scalarRE matches a line whose value is one whole scalar: "key: v" or
// "- v".
var scalarRE = regexp.MustCompile(`^(\s*)((?:- )?(?:[^\s:][^:]*: )?)(\S+)$`)

// substitute replaces every marker in body by its template expression.
func substitute(body string) (string, error) {
	lines := strings.Split(body, "\n")
	for i, l := range lines {
		if m := scalarRE.FindStringSubmatch(l); m != nil {
			if mk, ok := whole(m[3]); ok {
				switch {
				case mk.line != nil:
					lines[i] = mk.line(m[1] + strings.Repeat(" ", len(m[2])-len(strings.TrimPrefix(m[2], "- "))))
				case mk.raw:
					lines[i] = m[1] + m[2] + "{{ " + mk.expr + " }}"
				default:
					lines[i] = m[1] + m[2] + "{{ " + mk.expr + " | quote }}"
				}
				continue
			}
		}
		for _, mk := range markers {
			if !strings.Contains(l, mk.text) {
				continue
			}
			if mk.raw || mk.line != nil {
				return "", fmt.Errorf("marker %s inside a longer value: %q", mk.text, l)
			}
			l = strings.ReplaceAll(l, mk.text, "{{ "+mk.expr+" }}")
		}
		lines[i] = l
	}
	out := strings.Join(lines, "\n")
	if strings.Contains(out, "zz") && regexp.MustCompile(`zz[a-z]+zz`).MatchString(out) {
		return "", fmt.Errorf("a marker is left: %s", regexp.MustCompile(`zz[a-z]+zz`).FindString(out))
	}
	return out, nil
}

// whole returns the marker s is, if it is one.
func whole(s string) (marker, bool) {
	for _, mk := range markers {
		if s == mk.text {
			return mk, true
		}
	}
	return marker{}, false
}

// Files returns the templates' file names in order.
func Files(t map[string][]byte) []string {
	names := make([]string, 0, len(t))
	for n := range t {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Equal reports whether two template sets hold the same files.
func Equal(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for n, x := range a {
		if !bytes.Equal(x, b[n]) {
			return false
		}
	}
	return true
}
