package scale

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
)

// adsClient subscribes over one ADS stream the way grpc-go's xDS client
// does for a channel to each of its targets: LDS for the client listeners,
// then the RDS, CDS and EDS names the answers lead to, ACKing every
// response with its version and nonce (state-of-the-world). It dials
// nothing but the xDS server: the endpoints it learns are only data (the API
// server refuses loopback endpoint addresses, and nothing else may be
// dialled), which is why this harness does not use a grpc-go channel, whose
// balancer would connect to them.
type adsClient struct {
	name      string
	listeners []string
	marker    string // address prefix whose endpoints are reported
	emit      func(event)

	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	types  map[string]*typeState
	lds    map[string]*listenerv3.Listener
	rds    map[string]*routev3.RouteConfiguration
	cds    map[string]*clusterv3.Cluster
	eds    map[string]*endpointv3.ClusterLoadAssignment
	done   map[string]bool // listeners whose full chain has been reported
}

// typeState is one resource type's subscription.
type typeState struct {
	version, nonce string
	names          []string
	subscribed     bool
}

// event is one line the client process prints (prefixed "EVENT ").
type event struct {
	Client string `json:"c"`
	// Kind is "complete" (Listener's LDS, RDS, CDS and EDS with ≥ 1
	// endpoint are all held for the first time), "eds" (an EDS response
	// holding Markers), "error" (the stream failed: Err).
	Kind     string   `json:"ev"`
	Listener string   `json:"l,omitempty"`
	Markers  []string `json:"m,omitempty"`
	Err      string   `json:"err,omitempty"`
	// At is when the response was received, Unix nanoseconds.
	At int64 `json:"at"`
}

var typeOrder = []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType}

// run opens the stream and follows it until ctx ends or the stream fails.
func (c *adsClient) run(ctx context.Context, cc *grpc.ClientConn) error {
	c.types = map[string]*typeState{}
	for _, t := range typeOrder {
		c.types[t] = &typeState{}
	}
	c.lds, c.rds = map[string]*listenerv3.Listener{}, map[string]*routev3.RouteConfiguration{}
	c.cds, c.eds = map[string]*clusterv3.Cluster{}, map[string]*endpointv3.ClusterLoadAssignment{}
	c.done = map[string]bool{}
	var err error
	c.stream, err = discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return fmt.Errorf("client %s: open ADS stream: %w", c.name, err)
	}
	if err := c.subscribe(resourcev3.ListenerType, c.listeners); err != nil {
		return err
	}
	for {
		resp, err := c.stream.Recv()
		if err != nil {
			return fmt.Errorf("client %s: ADS stream: %w", c.name, err)
		}
		at := time.Now().UnixNano()
		if err := c.handle(resp, at); err != nil {
			return fmt.Errorf("client %s: %s response %s: %w", c.name, resp.GetTypeUrl(), resp.GetVersionInfo(), err)
		}
	}
}

// subscribe sends a request for names of typ (unchanged names send nothing).
func (c *adsClient) subscribe(typ string, names []string) error {
	slices.Sort(names)
	names = slices.Compact(names)
	ts := c.types[typ]
	if !ts.subscribed && len(names) == 0 {
		// An empty first request is a wildcard subscription (every
		// resource of the type); grpc-go never sends one.
		return nil
	}
	if ts.subscribed && slices.Equal(ts.names, names) {
		return nil
	}
	ts.names, ts.subscribed = names, true
	return c.send(typ)
}

func (c *adsClient) send(typ string) error {
	ts := c.types[typ]
	return c.stream.Send(&discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: c.name, UserAgentName: "grpc-go", ClientFeatures: []string{"envoy.lb.does_not_support_overprovisioning", "xds.config.resource-in-sotw"},
			UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: grpc.Version}},
		TypeUrl: typ, VersionInfo: ts.version, ResponseNonce: ts.nonce, ResourceNames: ts.names,
	})
}

// handle decodes a response, ACKs it, follows the names it leads to and
// reports what became complete.
func (c *adsClient) handle(resp *discoveryv3.DiscoveryResponse, at int64) error {
	typ := resp.GetTypeUrl()
	ts := c.types[typ]
	if ts == nil {
		return nil
	}
	// Listeners and clusters are sent whole (state of the world); routes
	// and endpoints may come a subset at a time.
	switch typ {
	case resourcev3.ListenerType:
		c.lds = map[string]*listenerv3.Listener{}
	case resourcev3.ClusterType:
		c.cds = map[string]*clusterv3.Cluster{}
	}
	var markers []string
	for _, a := range resp.GetResources() {
		switch typ {
		case resourcev3.ListenerType:
			var l listenerv3.Listener
			if err := a.UnmarshalTo(&l); err != nil {
				return err
			}
			c.lds[l.GetName()] = &l
		case resourcev3.RouteType:
			var r routev3.RouteConfiguration
			if err := a.UnmarshalTo(&r); err != nil {
				return err
			}
			c.rds[r.GetName()] = &r
		case resourcev3.ClusterType:
			var cl clusterv3.Cluster
			if err := a.UnmarshalTo(&cl); err != nil {
				return err
			}
			c.cds[cl.GetName()] = &cl
		case resourcev3.EndpointType:
			var cla endpointv3.ClusterLoadAssignment
			if err := a.UnmarshalTo(&cla); err != nil {
				return err
			}
			c.eds[cla.GetClusterName()] = &cla
			markers = append(markers, addressesWithPrefix(&cla, c.marker)...)
		}
	}
	ts.version, ts.nonce = resp.GetVersionInfo(), resp.GetNonce()
	if err := c.send(typ); err != nil { // ACK
		return err
	}
	if len(markers) > 0 {
		c.emit(event{Client: c.name, Kind: "eds", Markers: markers, At: at})
	}
	// Follow the chain: listeners name routes, routes name clusters,
	// clusters name load assignments.
	var routes, clusters, assignments []string
	for _, l := range c.lds {
		if name := routeName(l); name != "" {
			routes = append(routes, name)
		}
	}
	for _, name := range routes {
		clusters = append(clusters, routeClusters(c.rds[name])...)
	}
	for _, name := range clusters {
		if cl := c.cds[name]; cl != nil {
			assignments = append(assignments, edsName(cl))
		}
	}
	for i, names := range [][]string{routes, clusters, assignments} {
		if err := c.subscribe(typeOrder[i+1], names); err != nil {
			return err
		}
	}
	for _, l := range c.listeners {
		if !c.done[l] && c.complete(l) {
			c.done[l] = true
			c.emit(event{Client: c.name, Kind: "complete", Listener: l, At: at})
		}
	}
	return nil
}

// complete says whether the client holds listener l's whole chain, with at
// least one endpoint in every load assignment.
func (c *adsClient) complete(l string) bool {
	lis := c.lds[l]
	if lis == nil {
		return false
	}
	rc := c.rds[routeName(lis)]
	if rc == nil {
		return false
	}
	clusters := routeClusters(rc)
	if len(clusters) == 0 {
		return false
	}
	for _, name := range clusters {
		cl := c.cds[name]
		if cl == nil {
			return false
		}
		cla := c.eds[edsName(cl)]
		if cla == nil || countEndpoints(cla) == 0 {
			return false
		}
	}
	return true
}

func routeName(l *listenerv3.Listener) string {
	var hcm hcmv3.HttpConnectionManager
	if l.GetApiListener().GetApiListener().UnmarshalTo(&hcm) != nil {
		return ""
	}
	return hcm.GetRds().GetRouteConfigName()
}

func routeClusters(rc *routev3.RouteConfiguration) []string {
	var out []string
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if name := r.GetRoute().GetCluster(); name != "" {
				out = append(out, name)
			}
			for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
				out = append(out, wc.GetName())
			}
		}
	}
	return out
}

func edsName(cl *clusterv3.Cluster) string {
	if n := cl.GetEdsClusterConfig().GetServiceName(); n != "" {
		return n
	}
	return cl.GetName()
}

func countEndpoints(cla *endpointv3.ClusterLoadAssignment) int {
	n := 0
	for _, l := range cla.GetEndpoints() {
		n += len(l.GetLbEndpoints())
	}
	return n
}

func addressesWithPrefix(cla *endpointv3.ClusterLoadAssignment, prefix string) []string {
	if prefix == "" {
		return nil
	}
	var out []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			if a := e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress(); strings.HasPrefix(a, prefix) {
				out = append(out, a)
			}
		}
	}
	return out
}
