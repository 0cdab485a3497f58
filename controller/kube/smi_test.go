package kube

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/mesh"
)

// routeGroup returns an HTTPRouteGroup with one match "m" whose headers
// field is headers.
func routeGroup(headers any) *unstructured.Unstructured {
	m := map[string]any{"name": "m", "pathRegex": "/books-bought", "methods": []any{"GET"}}
	if headers != nil {
		m["headers"] = headers
	}
	return obj("HTTPRouteGroup", "bookstore", "routes", map[string]any{"matches": []any{m}})
}

func TestHTTPRouteGroupHeaderMapAndOSMListAreTheSameMatch(t *testing.T) {
	want := map[string]string{"user-agent": ".*-http-client/*.*", "client-app": "bookbuyer"}
	forms := map[string]any{
		"map (SMI Go types)":                map[string]any{"user-agent": ".*-http-client/*.*", "client-app": "bookbuyer"},
		"list of single-entry maps (OSM)":   []any{map[string]any{"user-agent": ".*-http-client/*.*"}, map[string]any{"client-app": "bookbuyer"}},
		"list of one map with two entries":  []any{map[string]any{"user-agent": ".*-http-client/*.*", "client-app": "bookbuyer"}},
		"names in another case (HTTP says)": map[string]any{"User-Agent": ".*-http-client/*.*", "Client-App": "bookbuyer"},
	}
	for name, headers := range forms {
		g, err := HTTPRouteGroupFrom(routeGroup(headers))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := g.Matches[0].Headers; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: headers %v, want %v", name, got, want)
		}
	}
	g, err := HTTPRouteGroupFrom(routeGroup([]any{}))
	if err != nil || g.Matches[0].Headers != nil {
		t.Errorf("empty list: headers %v, err %v; want none", g.Matches[0].Headers, err)
	}
}

func TestHTTPRouteGroupRefusesOtherHeaderShapesSayingWhatToWrite(t *testing.T) {
	for name, headers := range map[string]any{
		"a string":                  "user-agent: curl",
		"a list of strings":         []any{"user-agent"},
		"a value that is a number":  map[string]any{"x-version": int64(2)},
		"a value that is a list":    []any{map[string]any{"user-agent": []any{"a", "b"}}},
		"a name given twice":        []any{map[string]any{"user-agent": "a"}, map[string]any{"User-Agent": "b"}},
		"a pseudo-header":           map[string]any{":method": "GET"},
		"a name with a space":       map[string]any{"user agent": "x"},
		"a list holding a null map": []any{nil},
		"the host (OSM v1alpha2)":   []any{map[string]any{"host": "bookstore.bookstore"}},
	} {
		_, err := HTTPRouteGroupFrom(routeGroup(headers))
		if !errors.Is(err, ErrConversion) {
			t.Errorf("%s: err = %v, want ErrConversion", name, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, `match "m"`) || !strings.Contains(msg, "write") && !strings.Contains(msg, "match the method") && !strings.Contains(msg, "remove it") {
			t.Errorf("%s: message %q does not name the match and say what to write", name, msg)
		}
	}
}

func TestHTTPRouteGroupMethodsStarAndUnknownMethod(t *testing.T) {
	u := obj("HTTPRouteGroup", "bookstore", "routes", map[string]any{"matches": []any{
		map[string]any{"name": "any", "methods": []any{"*"}},
	}})
	g, err := HTTPRouteGroupFrom(u)
	if err != nil || !reflect.DeepEqual(g.Matches[0].Methods, []string{"*"}) {
		t.Fatalf("methods [*]: %+v, %v", g, err)
	}
	u = obj("HTTPRouteGroup", "bookstore", "routes", map[string]any{"matches": []any{
		map[string]any{"name": "lower", "methods": []any{"get"}},
	}})
	if _, err := HTTPRouteGroupFrom(u); !errors.Is(err, ErrConversion) || !strings.Contains(err.Error(), "in capitals") {
		t.Fatalf("method get: err = %v, want a refusal saying to write capitals", err)
	}
}

func TestTrafficSplitServiceForms(t *testing.T) {
	for _, ref := range []string{"bookstore", "bookstore.bookstore", "bookstore.bookstore.svc", "bookstore.bookstore.svc.cluster", "bookstore.bookstore.svc.cluster.local"} {
		ts, err := TrafficSplitFrom(obj("TrafficSplit", "bookstore", "split", map[string]any{
			"service":  ref,
			"backends": []any{map[string]any{"service": ref, "weight": int64(1)}},
		}))
		if err != nil {
			t.Errorf("%s: %v", ref, err)
			continue
		}
		if ts.Service != "bookstore" || ts.Backends[0].Service != "bookstore" {
			t.Errorf("%s: read as %+v", ref, ts)
		}
	}
	for ref, hint := range map[string]string{
		"bookstore.other":                          `write "bookstore" in a TrafficSplit in namespace other`,
		"bookstore.bookstore.svc.example":          `write "bookstore" or "bookstore.bookstore.svc.cluster.local"`,
		"bookstore.bookstore.svc.clusterset.local": "found by name",
		"Bookstore": "write the name of a Service",
		"":          "write the name of a Service",
	} {
		_, err := TrafficSplitFrom(obj("TrafficSplit", "bookstore", "split", map[string]any{
			"service": ref, "backends": []any{map[string]any{"service": "bookstore-v1", "weight": int64(1)}},
		}))
		if !errors.Is(err, ErrConversion) || !strings.Contains(err.Error(), hint) {
			t.Errorf("%q: err = %v, want a refusal containing %q", ref, err, hint)
		}
	}
}

func TestNotEnforcedFieldsAreRefusedNotDropped(t *testing.T) {
	_, err := TrafficTargetFrom("meshfed.local", obj("TrafficTarget", "bookstore", "t", map[string]any{
		"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "port": int64(14001)},
		"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"}},
		"rules":       []any{map[string]any{"kind": "TCPRoute", "name": "tcp"}},
	}))
	if !errors.Is(err, ErrConversion) || !strings.Contains(err.Error(), "TCPRoute rule") {
		t.Errorf("destination.port: err = %v, want a refusal pointing to a TCPRoute rule", err)
	}
	_, err = TrafficTargetFrom("meshfed.local", obj("TrafficTarget", "bookstore", "t", map[string]any{
		"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore"},
		"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"}},
		"rules":       []any{map[string]any{"kind": "TCPRoute", "name": "tcp", "matches": []any{"x"}}},
	}))
	if !errors.Is(err, ErrConversion) || !strings.Contains(err.Error(), "remove them") {
		t.Errorf("TCPRoute rule matches: err = %v, want a refusal", err)
	}
	_, err = TrafficSplitFrom(obj("TrafficSplit", "bookstore", "split", map[string]any{
		"service":  "bookstore",
		"backends": []any{map[string]any{"service": "bookstore-v1", "weight": int64(1)}},
		"matches":  []any{map[string]any{"kind": "HTTPRouteGroup", "name": "routes"}},
	}))
	if !errors.Is(err, ErrConversion) || !strings.Contains(err.Error(), "remove spec.matches") {
		t.Errorf("split matches: err = %v, want a refusal", err)
	}
}

func TestTCPRoutePortMatches(t *testing.T) {
	r, err := TCPRouteFrom(obj("TCPRoute", "bookstore", "tcp", map[string]any{"matches": map[string]any{"ports": []any{int64(3306), int64(9000)}}}))
	if err != nil || !reflect.DeepEqual(r.Ports, []uint32{3306, 9000}) {
		t.Fatalf("got %+v, %v", r, err)
	}
	r, err = TCPRouteFrom(obj("TCPRoute", "bookstore", "tcp", map[string]any{}))
	if err != nil || len(r.Ports) != 0 {
		t.Fatalf("no matches (every port): got %+v, %v", r, err)
	}
}

// osmObjects reads every object of the OSM manifests in testdata/osm.
func osmObjects(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob("testdata/osm/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no OSM manifests in testdata/osm: %v", err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		if strings.HasSuffix(p, ".golden.yaml") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			out[filepath.Base(p)+"#"+string(rune('0'+i))] = doc
		}
	}
	return out
}

// convertAny reads an SMI object of any kind meshfed knows and adds it to
// st; it reports whether the kind is known.
func convertAny(st *mesh.State, u *unstructured.Unstructured) (bool, error) {
	var err error
	switch u.GetKind() {
	case "TrafficTarget":
		var tt mesh.TrafficTarget
		if tt, err = TrafficTargetFrom("meshfed.local", u); err == nil {
			st.TrafficTargets = append(st.TrafficTargets, tt)
		}
	case "HTTPRouteGroup":
		var g mesh.HTTPRouteGroup
		if g, err = HTTPRouteGroupFrom(u); err == nil {
			st.HTTPRouteGroups = append(st.HTTPRouteGroups, g)
		}
	case "TCPRoute":
		var r mesh.TCPRoute
		if r, err = TCPRouteFrom(u); err == nil {
			st.TCPRoutes = append(st.TCPRoutes, r)
		}
	case "TrafficSplit":
		var ts mesh.TrafficSplit
		if ts, err = TrafficSplitFrom(u); err == nil {
			st.TrafficSplits = append(st.TrafficSplits, ts)
		}
	default:
		return false, nil
	}
	return true, err
}

func TestOSMManifestsConvert(t *testing.T) {
	for name, doc := range osmObjects(t) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var st mesh.State
		if known, err := convertAny(&st, u); !known || err != nil {
			t.Errorf("%s (%s): known %v, err %v", name, u.GetKind(), known, err)
		}
	}
}

// FuzzSMIConversion feeds SMI objects (YAML or JSON) to meshfed's
// conversion and validation: whatever an author writes, meshfed returns an
// error naming the problem or a valid object, and never panics. Seeds are
// OSM's published bookstore manifests.
func FuzzSMIConversion(f *testing.F) {
	for _, doc := range osmObjects(f) {
		f.Add(doc)
	}
	f.Add([]byte(`{"kind":"HTTPRouteGroup","metadata":{"namespace":"a","name":"b"},"spec":{"matches":[{"name":"m","headers":{"x":"["}}]}}`))
	f.Add([]byte(`{"kind":"TrafficSplit","metadata":{"namespace":"a","name":"b"},"spec":{"service":"a.a.svc","backends":[{"service":"a","weight":-1}],"matches":[]}}`))
	f.Add([]byte(`{"kind":"TCPRoute","metadata":{"namespace":"a","name":"b"},"spec":{"matches":{"ports":[0,65536]}}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil || u.Object == nil {
			return
		}
		st := mesh.State{Settings: mesh.Settings{TrustDomain: "meshfed.local", ClusterName: "east"}}
		known, err := convertAny(&st, u)
		if !known {
			return
		}
		if err != nil {
			if !errors.Is(err, ErrConversion) {
				t.Fatalf("error %v does not wrap ErrConversion", err)
			}
			return
		}
		for _, g := range st.HTTPRouteGroups {
			for _, m := range g.Matches {
				for h := range m.Headers {
					if !headerName.MatchString(h) {
						t.Fatalf("header name %q passed conversion", h)
					}
				}
			}
		}
		for _, ts := range st.TrafficSplits {
			if strings.Contains(ts.Service, ".") {
				t.Fatalf("split root %q kept its domain", ts.Service)
			}
		}
		// Validation reports, never panics.
		_ = mesh.Validate(&st)
	})
}
