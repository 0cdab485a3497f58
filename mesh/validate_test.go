package mesh

import (
	"errors"
	"testing"
)

func bookstoreState() State {
	td := "cluster.local"
	return State{
		Settings: Settings{TrustDomain: td, ClusterName: "east"},
		Services: []Service{
			{Namespace: "bookstore", Name: "bookstore", Ports: []Port{{Port: 14001}}},
			{Namespace: "bookstore", Name: "bookstore-v1", Ports: []Port{{Port: 14001}}},
		},
		HTTPRouteGroups: []HTTPRouteGroup{
			{Namespace: "bookstore", Name: "routes", Matches: []HTTPMatch{{Name: "buy", PathRegex: "/books"}}},
			{Namespace: "bookstore", Name: "broken", Matches: []HTTPMatch{{Name: "x", PathRegex: "(["}}},
		},
		TrafficTargets: []TrafficTarget{
			{Namespace: "bookstore", Name: "ok", Destination: NewIdentity(td, "bookstore", "bookstore"),
				Sources: []Identity{NewIdentity(td, "bookbuyer", "bookbuyer")},
				Rules:   []TrafficTargetRule{{Kind: KindHTTPRouteGroup, Name: "routes", Matches: []string{"buy"}}}},
			{Namespace: "bookstore", Name: "missing-group", Destination: NewIdentity(td, "bookstore", "bookstore"),
				Sources: []Identity{NewIdentity(td, "bookbuyer", "bookbuyer")},
				Rules:   []TrafficTargetRule{{Kind: KindHTTPRouteGroup, Name: "nope"}}},
			{Namespace: "bookstore", Name: "uses-broken", Destination: NewIdentity(td, "bookstore", "bookstore"),
				Sources: []Identity{NewIdentity(td, "bookbuyer", "bookbuyer")},
				Rules:   []TrafficTargetRule{{Kind: KindHTTPRouteGroup, Name: "broken"}}},
			{Namespace: "default", Name: "wrong-namespace", Destination: NewIdentity(td, "bookstore", "bookstore"),
				Sources: []Identity{NewIdentity(td, "bookbuyer", "bookbuyer")},
				Rules:   []TrafficTargetRule{{Kind: KindHTTPRouteGroup, Name: "routes"}}},
		},
		TrafficSplits: []TrafficSplit{
			{Namespace: "bookstore", Name: "good", Service: "bookstore", Backends: []SplitBackend{{Service: "bookstore-v1", Weight: 1}}},
			{Namespace: "bookstore", Name: "zero", Service: "bookstore", Backends: []SplitBackend{{Service: "bookstore-v1"}}},
			{Namespace: "bookstore", Name: "negative", Service: "bookstore", Backends: []SplitBackend{{Service: "bookstore-v1", Weight: -1}, {Service: "bookstore", Weight: 2}}},
			{Namespace: "bookstore", Name: "missing", Service: "bookstore", Backends: []SplitBackend{{Service: "bookstore-v3", Weight: 1}}},
		},
	}
}

func TestSanitizeSkipsEachBadObjectAndKeepsTheRest(t *testing.T) {
	in := bookstoreState()
	out, problems := Sanitize(in)
	want := map[string]error{
		"httproutegroup bookstore/broken":       ErrInvalidRegex,
		"traffictarget bookstore/missing-group": ErrNoSuchRoute,
		"traffictarget bookstore/uses-broken":   ErrNoSuchRoute,
		"traffictarget default/wrong-namespace": ErrNamespace,
		"trafficsplit bookstore/zero":           ErrInvalidWeights,
		"trafficsplit bookstore/negative":       ErrInvalidWeights,
		"trafficsplit bookstore/missing":        ErrNoSuchService,
	}
	got := map[string]bool{}
	for _, p := range problems {
		key := string(p.Kind) + " " + p.Namespace + "/" + p.Name
		got[key] = true
		if w, ok := want[key]; !ok || !errors.Is(p, w) {
			t.Errorf("unexpected problem %v (want %v)", p, w)
		}
	}
	for k := range want {
		if !got[k] {
			t.Errorf("missing problem for %s", k)
		}
	}
	if len(out.TrafficTargets) != 1 || out.TrafficTargets[0].Name != "ok" {
		t.Errorf("targets kept: %+v", out.TrafficTargets)
	}
	if len(out.TrafficSplits) != 1 || out.TrafficSplits[0].Name != "good" {
		t.Errorf("splits kept: %+v", out.TrafficSplits)
	}
	if len(in.TrafficTargets) != 4 {
		t.Errorf("input changed")
	}
}

func TestIdentityParts(t *testing.T) {
	id := NewIdentity("td", "ns", "sa")
	if id.TrustDomain() != "td" || id.Namespace() != "ns" || id.ServiceAccount() != "sa" || id.Validate() != nil {
		t.Fatalf("parts of %s", id)
	}
	if _, err := ParseIdentity("spiffe://td/ns/x"); !errors.Is(err, ErrInvalidIdentity) {
		t.Fatalf("want invalid, got %v", err)
	}
}

func TestIsMissingReferenceOnlyWhenEveryErrorIsOne(t *testing.T) {
	s := State{
		Settings: Settings{TrustDomain: "meshfed.local", ClusterName: "east"},
		Services: []Service{{Namespace: "bookstore", Name: "bookstore", Ports: []Port{{Port: 14001}}}},
		TrafficSplits: []TrafficSplit{
			{Namespace: "bookstore", Name: "missing", Service: "bookstore", Backends: []SplitBackend{{Service: "bookstore-v2", Weight: 1}, {Service: "bookstore-v3", Weight: 1}}},
			{Namespace: "bookstore", Name: "missing-and-bad", Service: "bookstore", Backends: []SplitBackend{{Service: "bookstore-v2", Weight: -1}}},
		},
	}
	want := map[string]bool{"missing": true, "missing-and-bad": false}
	problems := Validate(&s)
	if len(problems) != 2 {
		t.Fatalf("problems %v", problems)
	}
	for _, p := range problems {
		if got := IsMissingReference(p.Err); got != want[p.Name] {
			t.Errorf("%v: IsMissingReference = %v, want %v", p, got, want[p.Name])
		}
	}
	if IsMissingReference(nil) || IsMissingReference(ErrInvalidObject) {
		t.Error("nil or another error counted as a missing reference")
	}
}
