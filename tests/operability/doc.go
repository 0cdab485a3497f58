// Package operability is the end-to-end suite of meshfed's operability
// commands across clusters: two local clusters of real parts started by
// localmesh (east and west, federated), on which `meshfed check` runs as a
// user runs it, with one kubeconfig naming both clusters as contexts.
package operability
