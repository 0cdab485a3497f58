// Package gateway holds the east-west gateway's end-to-end test: two
// clusters on different networks, each with a real meshfed xDS server, a
// real grpc-go client with SNI on in one and a real grpc-go xDS server in
// the other, and the local clusters' stand-in gateway (localmesh/gateway)
// between them.
package gateway
