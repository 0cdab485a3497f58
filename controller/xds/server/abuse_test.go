package server_test

import (
	"fmt"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshfed/meshfed/controller/xds/server"
)

// manyNames returns n distinct resource names "<prefix>-<i>".
func manyNames(prefix string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%x", prefix, i)
	}
	return names
}

// TestHostileXDSRequestFieldsAreRefused sends, as an authenticated
// proxy, one request per abuse of a request field, each on its own SotW
// ADS stream. Each ends its stream with the refusal's code before
// go-control-plane or the snapshots see it, and is counted by reason. The
// 1e6-name request is refused by gRPC unread (over MaxMessageBytes);
// every other is at most 4 MiB, decoded once and dropped. Afterwards the
// same identity is still served.
func TestHostileXDSRequestFieldsAreRefused(t *testing.T) {
	limits := server.DefaultRequestLimits()
	bigMetadata, err := structpb.NewStruct(map[string]any{"padding": strings.Repeat("m", 512<<10)})
	if err != nil {
		t.Fatal(err)
	}
	node := func() *corev3.Node { return &corev3.Node{Id: "bookbuyer", UserAgentName: "grpc-go"} }
	for _, c := range []struct {
		name   string
		req    *discoveryv3.DiscoveryRequest
		code   codes.Code
		reason string
	}{
		{
			name: "a 1 MiB node ID",
			req:  &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: strings.Repeat("n", 1<<20)}, TypeUrl: resourcev3.ListenerType},
			code: codes.InvalidArgument, reason: "node_id",
		},
		{
			name: "a node with 512 KiB of metadata",
			req:  &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "bookbuyer", Metadata: bigMetadata}, TypeUrl: resourcev3.ListenerType},
			code: codes.InvalidArgument, reason: "node",
		},
		{
			name: "subscribing to 1e6 resource names",
			req:  &discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: resourcev3.EndpointType, ResourceNames: manyNames("eds", 1_000_000)},
			code: codes.ResourceExhausted, reason: "message_size",
		},
		{
			name: "one more resource name than the limit in one request",
			req:  &discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: resourcev3.EndpointType, ResourceNames: manyNames("e", limits.MaxResourceNames+1)},
			code: codes.ResourceExhausted, reason: "resource_names",
		},
		{
			name: "a 2 KiB resource name",
			req:  &discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: resourcev3.ListenerType, ResourceNames: []string{strings.Repeat("l", 2<<10)}},
			code: codes.InvalidArgument, reason: "name_length",
		},
		{
			name: "a type meshfed does not serve",
			req:  &discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: resourcev3.RuntimeType},
			code: codes.InvalidArgument, reason: "type_url",
		},
		{
			name: "a made-up type URL",
			req:  &discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: "type.googleapis.com/evil\nType"},
			code: codes.InvalidArgument, reason: "type_url",
		},
		{
			name: "no type URL",
			req:  &discoveryv3.DiscoveryRequest{Node: node()},
			code: codes.InvalidArgument, reason: "type_url",
		},
		{
			name: "resource locators with dynamic parameters",
			req: &discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: resourcev3.ListenerType,
				ResourceLocators: []*discoveryv3.ResourceLocator{{Name: "l"}}},
			code: codes.InvalidArgument, reason: "resource_locators",
		},
		{
			name: "a 1 KiB version",
			req:  &discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: resourcev3.ListenerType, VersionInfo: strings.Repeat("v", 1<<10)},
			code: codes.InvalidArgument, reason: "version",
		},
		{
			name: "a 1 KiB nonce",
			req:  &discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: resourcev3.ListenerType, ResponseNonce: strings.Repeat("n", 1<<10)},
			code: codes.InvalidArgument, reason: "version",
		},
		{
			name: "a NACK with 1 MiB of error detail",
			req: &discoveryv3.DiscoveryRequest{Node: node(), TypeUrl: resourcev3.ListenerType, ResponseNonce: "1",
				ErrorDetail: status.New(codes.InvalidArgument, strings.Repeat("e", 1<<20)).Proto()},
			code: codes.InvalidArgument, reason: "error_detail",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := startSDSMesh(t)
			a := dialADS(t, m, bookbuyerID, "grpc-go")
			if err := a.stream.Send(c.req); err != nil {
				t.Fatal(err)
			}
			resp, err := a.stream.Recv()
			if status.Code(err) != c.code {
				t.Fatalf("got %v (response %v), want %v", err, resp, c.code)
			}
			if n := metricValue(t, m.reg, "meshfed_xds_refused_requests_total", "reason", c.reason); n != 1 {
				t.Errorf("refusals for %s = %v, want 1", c.reason, n)
			}
			wantServed(t, m)
		})
	}
}

// wantServed checks that a proxyless bookbuyer still gets its listeners.
func wantServed(t *testing.T, m *sdsMesh) {
	t.Helper()
	b := dialADS(t, m, bookbuyerID, "grpc-go")
	b.request(resourcev3.ClusterType, nil, nil)
	if resp := b.recv(); resp.GetTypeUrl() != resourcev3.ClusterType || len(resp.GetResources()) == 0 {
		t.Fatalf("after the refusal bookbuyer got %v", resp)
	}
}

// TestOneIdentityCannotGrowItsSubscriptionsWithoutBound subscribes two
// streams of one identity to distinct endpoint names: each request is
// within the per-request limit, but together they would make the
// identity's snapshot remember more names than MaxResourceNames. The
// second is refused; the first stream is still served.
func TestOneIdentityCannotGrowItsSubscriptionsWithoutBound(t *testing.T) {
	m := startSDSMesh(t)
	limit := server.DefaultRequestLimits().MaxResourceNames
	first := dialADS(t, m, bookbuyerID, "grpc-go")
	first.request(resourcev3.EndpointType, manyNames("first", limit/2+1), nil)
	resp := first.recv()
	second := dialADS(t, m, bookbuyerID, "grpc-go")
	second.request(resourcev3.EndpointType, manyNames("second", limit/2+1), nil)
	if _, err := second.stream.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second stream got %v, want ResourceExhausted", err)
	}
	if n := metricValue(t, m.reg, "meshfed_xds_refused_requests_total", "reason", "subscriptions"); n != 1 {
		t.Errorf("refused subscriptions = %v, want 1", n)
	}
	first.request(resourcev3.EndpointType, manyNames("first", limit/2+1), resp) // ACK
	first.request(resourcev3.ClusterType, nil, nil)
	if resp := first.recv(); resp.GetTypeUrl() != resourcev3.ClusterType {
		t.Fatalf("first stream got %v, want clusters", resp)
	}
}
