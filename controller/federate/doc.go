// Package federate is the bridge between one cluster's Kubernetes API and
// the federation (package federation) for meshfed-controller.
//
// It owns:
//   - reading MCS ServiceExports with their Services, EndpointSlices and
//     Pods, and publishing them as this cluster's catalog (debounced, only
//     when it changed);
//   - the ServiceExport conditions MCS defines: Valid=False/NoService for an
//     export without a Service, Conflict=True/PortConflict when another
//     cluster exports the same name with other ports, each with an Event;
//     a bad export is skipped, the rest published;
//   - MCS conflict resolution (conflict.go): the local export always wins
//     here, remote exports count from when this cluster first saw them
//     (never from an earlier time they claim), ties go to the smaller
//     cluster name; a losing remote export is left out and logged;
//   - MCS ServiceImports: one per exported name across the federation, in
//     that namespace, listing the exporting clusters and the ports, ClusterSetIP
//     or Headless, removed when the last exporter goes;
//   - the remote view in the mesh vocabulary (mesh.ClusterCatalog per remote
//     cluster, and mesh.Import per name) for the controller's mesh.State,
//     with what the failure policy withdrew left out;
//   - the federation's members in the MeshConfig's status.federation, which
//     `meshfed cluster list` reads;
//   - the gossip keyring Secret's format (gossipkey.go).
//
// It does not own gossip, signatures or the failure policy (federation), nor
// xDS (controller/xds): the controller merges Remote() into its mesh.State.
//
// One goroutine (Run's) owns all mutable state. Informer handlers and the
// federation's Subscribe signal only; the worker re-reads listers and the
// federation's Snapshot, so a burst costs one reconcile. A resync repairs
// whatever a failed write left behind.
package federate
