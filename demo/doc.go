// Package demo runs `meshfed demo`: two local clusters (east and west) of
// real parts, a real meshfed-controller process for each, federated over
// gossip, the bookstore from docs/example/manifests running as real
// processes with mTLS, and a live table of who reaches which backend in
// which cluster. With Check it runs the same scenario unattended and
// reports every expectation it misses.
//
// It owns the orchestration only: clusters come from sandbox,
// workload processes from localmesh/workloads, everything else from the
// meshfed and meshfed-controller binaries a user would run.
package demo
