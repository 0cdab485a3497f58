package mesh

import (
	"reflect"
	"testing"
)

func TestResolveSplitBackendsPointsRemoteOnlyBackendsAtTheirExporters(t *testing.T) {
	svc := func(ns, name, cluster string) Service { return Service{Namespace: ns, Name: name, Cluster: cluster} }
	s := State{
		Services: []Service{svc("bookstore", "bookstore", ""), svc("bookstore", "bookstore-v1", "")},
		Remote: map[string]ClusterCatalog{
			"west":  {Cluster: "west", Services: []Service{svc("bookstore", "bookstore-v2", "west"), svc("bookstore", "bookstore-v1", "west")}},
			"north": {Cluster: "north", Services: []Service{svc("bookstore", "bookstore-v2", "north")}},
		},
		TrafficSplits: []TrafficSplit{{Namespace: "bookstore", Name: "split", Service: "bookstore", Backends: []SplitBackend{
			{Service: "bookstore-v1", Weight: 50},
			{Service: "bookstore-v2", Weight: 51},
			{Service: "bookstore-v3", Weight: 7},
		}}},
	}
	got := ResolveSplitBackends(s).TrafficSplits[0].Backends
	want := []SplitBackend{
		{Service: "bookstore-v1", Weight: 50},                   // local service: stays local
		{Service: "bookstore-v2", Cluster: "north", Weight: 26}, // remote only: shared by its exporters
		{Service: "bookstore-v2", Cluster: "west", Weight: 25},
		{Service: "bookstore-v3", Weight: 7}, // nowhere: left for validation to report
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("backends = %+v\nwant %+v", got, want)
	}
	if s.TrafficSplits[0].Backends[1].Cluster != "" {
		t.Error("ResolveSplitBackends changed its input")
	}
}
