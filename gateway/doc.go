// Package gateway will generate the xDS configuration of meshfed's Envoy
// east-west gateways: SNI passthrough, so that mTLS runs end to end from a
// client's proxy to the server's proxy in another cluster and SPIFFE
// identities survive the hop (DESIGN.md, "Packages").
//
// Until it lands, federated clusters must share one flat network in which
// pod addresses are reachable from every cluster.
package gateway
