package server_test

import (
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/meshfed/meshfed/controller/xds/server"
)

// A proxy's status shows what it was sent, what it accepted, and the
// message of a response it rejected, until it accepts a later one. The
// node ID it gives itself is shown as given; its identity is the
// certificate's, whatever the node claims.
func TestProxyStatusShowsSentAckedAndTheProxysNACK(t *testing.T) {
	m := startSDSMesh(t)
	a := dialADS(t, m, bookbuyerID, "envoy")
	a.node = &corev3.Node{Id: "bookbuyer/bookbuyer-1 (claims " + string(bookstoreID) + ")", UserAgentName: "envoy"}
	a.request(resourcev3.ClusterType, nil, nil)
	first := a.recv()
	a.request(resourcev3.ClusterType, nil, first) // ACK

	status := waitForStatus(t, m.srv, func(p server.ProxyStatus, c server.TypeStatus) bool {
		return c.Acked == first.GetVersionInfo()
	})
	if status.Identity != string(bookbuyerID) || status.Kind != server.KindSidecar || !strings.HasPrefix(status.Key, string(bookbuyerID)+"|") {
		t.Errorf("the stream is served as %s (%s, %s); want bookbuyer's sidecar", status.Key, status.Identity, status.Kind)
	}
	if status.NodeID != a.node.GetId() {
		t.Errorf("node ID %q, want the one the proxy sent", status.NodeID)
	}

	// The proxy rejects the version it holds, as a client does whose
	// validation fails: the NACK carries its message and the version.
	const why = "cluster bookstore: provoked on purpose: unsupported lb_policy"
	req := a.nackOf(first, why)
	if err := a.stream.Send(req); err != nil {
		t.Fatal(err)
	}
	got := waitForStatus(t, m.srv, func(p server.ProxyStatus, c server.TypeStatus) bool { return c.NACK != nil })
	c := cdsOf(got)
	if c.NACK.Message != why || c.NACK.Version != first.GetVersionInfo() || c.Acked != first.GetVersionInfo() {
		t.Errorf("cds after the NACK: %+v (NACK %+v)", c, c.NACK)
	}
	if list, err := m.srv.Resources(got.Key); err != nil || len(list[resourcev3.ClusterType]) == 0 {
		t.Errorf("resources served to %s: %d clusters, %v", got.Key, len(list[resourcev3.ClusterType]), err)
	}
	if _, err := m.srv.Resources("not a key"); err == nil {
		t.Error("Resources of a malformed key: want an error")
	}
}

// nackOf is a request rejecting resp with message, keeping the version
// before it (none here).
func (a *adsStream) nackOf(resp interface{ GetNonce() string }, message string) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{Node: a.node, TypeUrl: resourcev3.ClusterType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: 3, Message: message}}
}

func cdsOf(p server.ProxyStatus) server.TypeStatus {
	for _, c := range p.Types {
		if c.Type == "cds" {
			return c
		}
	}
	return server.TypeStatus{}
}

// waitForStatus returns the one proxy's status once its cds exchange
// satisfies ok.
func waitForStatus(t *testing.T, srv *server.Server, ok func(server.ProxyStatus, server.TypeStatus) bool) server.ProxyStatus {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for {
		ps := srv.Proxies()
		if len(ps) == 1 && ok(ps[0], cdsOf(ps[0])) {
			return ps[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy status never got there: %+v", ps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
