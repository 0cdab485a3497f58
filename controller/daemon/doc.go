// Package daemon runs meshfed-controller, the control plane of one cluster:
// it reads the MeshConfig, loads the cluster's CA (trust/ca), and starts the
// Kubernetes watcher (controller/kube), the junction with the federation's
// remote view (controller/federate), the xDS server (controller/xds/server),
// the certificate issuer (trust/issuer), the trust-bundle publisher
// (controller/bundle) and the metrics endpoint, and stops them all when its
// context ends.
//
// Config holds everything the command-line flags say; Run is the process's
// one lifecycle. Both cmd/meshfed-controller and the meshfed CLI (which runs
// the controller of `meshfed demo` from its own binary) call it.
package daemon
