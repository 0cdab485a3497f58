package member

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshfed/meshfed/controller/meshconfig"
	"github.com/meshfed/meshfed/deploy/installer"
)

func member(cluster, td string, f meshconfig.Federation, status map[string]any) *Member {
	obj := map[string]any{}
	if status != nil {
		obj["status"] = map[string]any{"federation": status}
	}
	return &Member{Mesh: &installer.Mesh{Name: "meshfed", Namespace: "meshfed-system", ClusterName: cluster, TrustDomain: td},
		MeshConfig: &unstructured.Unstructured{Object: obj}, Spec: meshconfig.Spec{Federation: f}}
}

// The gossip address other clusters dial: advertised, else bound (unless
// it binds every address), else what the controller reported.
func TestGossipAddress(t *testing.T) {
	reported := map[string]any{"members": []any{
		map[string]any{"name": "west", "address": "10.0.0.9:7946"},
		map[string]any{"name": "east", "local": true, "address": "10.0.0.1:7946"},
	}}
	for _, tc := range []struct {
		name   string
		f      meshconfig.Federation
		status map[string]any
		want   string
	}{
		{"advertised address and port", meshconfig.Federation{AdvertiseAddress: "203.0.113.7", AdvertisePort: 30946, BindPort: 7946}, reported, "203.0.113.7:30946"},
		{"bind address, bind port", meshconfig.Federation{BindAddress: "10.1.2.3", BindPort: 7946}, nil, "10.1.2.3:7946"},
		{"IPv6 advertised", meshconfig.Federation{AdvertiseAddress: "2001:db8::1", BindPort: 7946}, nil, "[2001:db8::1]:7946"},
		{"binds every address: the reported one", meshconfig.Federation{BindAddress: "0.0.0.0", BindPort: 7946}, reported, "10.0.0.1:7946"},
		{"nothing to go by", meshconfig.Federation{BindAddress: "0.0.0.0", BindPort: 7946}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := member("east", "meshfed.local", tc.f, tc.status).GossipAddress()
			if tc.want == "" {
				if err == nil || !strings.Contains(err.Error(), "advertiseAddress") {
					t.Fatalf("got %q, %v; want an error saying to set advertiseAddress", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// Join refuses, before it changes anything in either cluster, a wrong
// cluster name, two members of one name, differing trust domains and a
// malformed peer address, and says each.
func TestJoinRefusesMismatchedClusters(t *testing.T) {
	f := meshconfig.Federation{BindAddress: "0.0.0.0", BindPort: 7946}
	for _, tc := range []struct {
		name        string
		local, peer *Member
		o           JoinOptions
		want        []string
	}{
		{"wrong name", member("east", "td", f, nil), member("west", "td", f, nil), JoinOptions{Name: "north", PeerAddress: "10.0.0.2:7946"}, []string{`names it "east", not "north"`}},
		{"same names, other trust domains", member("east", "a.local", f, nil), member("east", "b.local", f, nil), JoinOptions{PeerAddress: "10.0.0.2:7946"},
			[]string{`both clusters are named "east"`, `trust domains differ`}},
		{"malformed peer address", member("east", "td", f, nil), member("west", "td", f, nil), JoinOptions{PeerAddress: "10.0.0.2"}, []string{`peer address "10.0.0.2"`}},
		{"peer without a gossip address", member("east", "td", f, nil), member("west", "td", f, nil), JoinOptions{}, []string{"no gossip address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The Members have no clients: Join must fail before it uses one.
			err := Join(context.Background(), tc.local, tc.peer, tc.o)
			if err == nil {
				t.Fatal("Join succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
