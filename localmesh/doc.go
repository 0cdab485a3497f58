// Package localmesh runs federations of local clusters of real parts for
// `meshfed demo` and the federation end-to-end suite: sandbox clusters
// (etcd, kube-apiserver, kube-controller-manager each) named by the caller,
// meshfed installed in each (the first cluster's root shared by all),
// federated with `meshfed cluster join`, a real meshfed-controller process
// per cluster gossiping on 127.0.0.1 and serving the sidecar injector, the
// bookstore from docs/example/manifests (plain: the injector adds the
// agent) placed in the clusters the caller says, and every demo Pod run
// from its injected spec as real processes — meshfed agent and a grpc-go
// app with mTLS — in a rootless network namespace
// (localmesh/workloads.UserNetwork). Clients' results are collected
// into Stats.
//
// A Harness lets a test lose parts of a cluster and bring them back: its
// controller (StopController, StartController), its workloads
// (StopWorkloads, RestartWorkloads). It owns the orchestration only:
// clusters come from sandbox, workload processes from
// localmesh/workloads, everything else from the meshfed and meshfed-controller
// binaries a user would run. It runs from a meshfed checkout: it builds
// those binaries and reads the manifests there.
package localmesh
