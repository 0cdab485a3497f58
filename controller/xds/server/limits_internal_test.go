package server

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// smallLimits make the fuzzer reach every limit with small inputs.
var smallLimits = RequestLimits{
	MaxMessageBytes: 1 << 20, MaxNodeBytes: 64, MaxNodeIDBytes: 16, MaxResourceNames: 4, MaxNameBytes: 8,
	MaxSubscribedBytes: 20, MaxVersionBytes: 8, MaxErrorDetailBytes: 32,
}

// FuzzCheckRequest decodes arbitrary bytes as a DiscoveryRequest (what a
// proxy sends) and checks it: checkRequest never panics, and a request it
// accepts is within every limit and names a served type.
func FuzzCheckRequest(f *testing.F) {
	for _, req := range []*discoveryv3.DiscoveryRequest{
		{TypeUrl: resourcev3.ListenerType},
		{Node: &corev3.Node{Id: "x", UserAgentName: "envoy"}, TypeUrl: resourcev3.SecretType, ResourceNames: []string{"a", "b"}},
		{TypeUrl: resourcev3.ClusterType, VersionInfo: "1", ResponseNonce: "2", ErrorDetail: status.New(codes.Internal, "nack").Proto()},
		{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"1", "2", "3", "4", "5"}},
		{TypeUrl: resourcev3.RouteType, ResourceLocators: []*discoveryv3.ResourceLocator{{Name: "r"}}},
		{TypeUrl: resourcev3.RuntimeType},
		{Node: &corev3.Node{Id: strings.Repeat("n", 17)}, TypeUrl: resourcev3.ListenerType},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		req := &discoveryv3.DiscoveryRequest{}
		if proto.Unmarshal(b, req) != nil {
			return // gRPC refuses what does not decode
		}
		for _, l := range []RequestLimits{smallLimits, DefaultRequestLimits()} {
			r := checkRequest(req, l)
			if r != nil {
				if r.reason == "" || r.code == codes.OK || r.msg == "" {
					t.Fatalf("refusal %+v lacks a reason, code or message", r)
				}
				continue
			}
			if err := withinLimits(req, l); err != "" {
				t.Fatalf("accepted a request with %s", err)
			}
		}
	})
}

// withinLimits restates the limits independently of checkRequest; it
// returns what is over, or "".
func withinLimits(req *discoveryv3.DiscoveryRequest, l RequestLimits) string {
	switch {
	case responseType(req.GetTypeUrl()) == types.UnknownType:
		return "an unserved type"
	case len(req.GetNode().GetId()) > l.MaxNodeIDBytes:
		return "a long node ID"
	case req.GetNode() != nil && proto.Size(req.GetNode()) > l.MaxNodeBytes:
		return "a large node"
	case len(req.GetResourceNames()) > l.MaxResourceNames:
		return "too many names"
	case len(req.GetResourceLocators()) > 0:
		return "resource locators"
	case len(req.GetVersionInfo()) > l.MaxVersionBytes || len(req.GetResponseNonce()) > l.MaxVersionBytes:
		return "a long version or nonce"
	case req.GetErrorDetail() != nil && proto.Size(req.GetErrorDetail()) > l.MaxErrorDetailBytes:
		return "a large error detail"
	}
	for _, n := range req.GetResourceNames() {
		if len(n) > l.MaxNameBytes {
			return "a long name"
		}
	}
	return ""
}

func TestDefaultRequestLimitsAreValid(t *testing.T) {
	if err := DefaultRequestLimits().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (RequestLimits{}).Validate(); err == nil || strings.Count(err.Error(), "must be positive") != 8 {
		t.Fatalf("zero limits: %v, want every one of the 8 reported", err)
	}
}

func TestSubscriptionsOfAKeyStayWithinLimits(t *testing.T) {
	set := func(names ...string) map[string]struct{} {
		m := map[string]struct{}{}
		for _, n := range names {
			m[n] = struct{}{}
		}
		return m
	}
	ks := &keyState{}
	ks.subscribe(types.Endpoint, set("a", "b", "c"), false)
	for _, c := range []struct {
		name  string
		names map[string]struct{}
		ok    bool
	}{
		{"names already held", set("a", "b", "c"), true},
		{"up to the name limit", set("a", "d"), true},
		{"one name over the limit", set("d", "e"), false},
		{"within the count, over the bytes", set(strings.Repeat("x", 18)), false},
	} {
		if r := ks.admits(types.Endpoint, c.names, smallLimits); (r == nil) != c.ok {
			t.Errorf("%s: refusal %v, want admitted %v", c.name, r, c.ok)
		}
	}
	if r := ks.admits(types.Cluster, set("d", "e", "f", "g"), smallLimits); r != nil {
		t.Errorf("another type has its own budget: %v", r)
	}
}
