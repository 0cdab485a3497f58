// Package federated is the federation end-to-end suite: three local
// clusters of real parts started by localmesh, each with a real
// meshfed-controller process, federated over gossip, the bookstore placed
// across them; the tests lose and restore members, controllers and
// workloads, rotate the root, and check what clients see.
package federated
