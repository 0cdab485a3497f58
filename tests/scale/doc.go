// Package scale is the scale harness from the API server to the clients:
// a sandbox kube-apiserver (sandbox) holding 1,000 or 10,000 meshed
// Services with EndpointSlices written by the harness, the real
// meshfed-controller binary watching it, and 100 xDS clients in a child
// process, each with its own mTLS client certificate from the cluster's
// intermediate CA, subscribing over ADS the way grpc-go's xDS client does
// (LDS for the service targets, then RDS, CDS and EDS as the answers name
// them). It measures an EndpointSlice change reaching every client, a new
// Service reaching a new client, 100 clients connecting at once, the
// controller's resident memory and the bytes it pushes.
//
// It owns no production code; everything is in the test files, and the test
// is skipped unless MESHFED_SCALE=1 (see scale_test.go for the command).
// The results are recorded in docs/benchmarks.md.
package scale
