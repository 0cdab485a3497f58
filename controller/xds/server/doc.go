// Package server serves the configuration that controller/xds/generate
// produces to proxies over ADS (go-control-plane v0.14, state of the world).
//
// It owns: turning a mesh.State into one complete, checked snapshot per
// connected proxy identity and data-plane kind; versions per resource type
// (an endpoint-only change resends only EDS); who a proxy is (the SPIFFE ID
// of its authenticated client certificate, never what its node claims); and
// the xDS metrics; and SDS for Envoy sidecars: each sidecar's snapshot holds
// its own identity's certificate and the trust bundle, from a SecretSource
// (secrets.go; AuthoritySecrets issues them with trust/ca). It does not own
// the CA (trust/) or reading Kubernetes (controller/kube).
//
// Snapshots live in go-control-plane's snapshot cache in non-ADS mode,
// which answers the named subsets grpc-go asks for (DESIGN.md, Known traps:
// the ADS mode waits for every named resource and never answers grpc-go).
// Responses are still sent over the one ADS stream.
//
// Only state-of-the-world ADS is served (server.go): delta ADS, the
// per-type services and unary fetches answer Unimplemented before reading
// a request, because go-control-plane keys them by the node the request
// claims. Every request is checked against RequestLimits (limits.go)
// before anything reads it.
package server
