// Package generate turns a mesh.State into xDS resources, as pure functions:
// no I/O, no logging, no globals. It owns the shape of the configuration for
// proxyless gRPC workloads (grpc-go's xDS client and server) and for Envoy
// sidecars; it does not own snapshots, versions or serving them (see
// controller/xds/server).
//
// Names shared by both data planes:
//
//   - cluster (CDS) and cluster load assignment (EDS):
//     "<namespace>/<service>:<port>" for a local service and
//     "<namespace>/<service>:<port>@<cluster>" for another cluster's export;
//   - proxyless client listener and its route configuration:
//     "<service>.<namespace>.svc.cluster.local:<port>";
//   - proxyless server listener:
//     "grpc/server?xds.resource.listening_address=<ip>:<port>".
//
// Every resource returned passes ValidateAll(). Inputs are expected to be
// sanitized (mesh.Sanitize); NewIndex does that.
package generate
