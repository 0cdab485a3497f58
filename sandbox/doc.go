// Package sandbox runs local Kubernetes clusters made of real parts: for each
// named cluster an etcd, a kube-apiserver and a kube-controller-manager built
// from their pinned Go modules (tools/kube, tools/etcd), each cluster with its
// own admin kubeconfig.
//
// No scheduler or kubelet runs. The sandbox plays only their bookkeeping part
// (see DESIGN.md, "Local clusters"): it registers one Node per cluster with a
// zone, keeps it Ready, binds Pods to it, marks them Running and Ready with a
// pod address from the cluster's pod CIDR, and finishes the deletion of Pods
// that are terminating. Everything else — ReplicaSets, EndpointSlices,
// namespace deletion, ServiceAccounts — is done by the real controllers.
//
// Tests start clusters in-process with Start (or sandboxtest.Start); the meshfed CLI
// keeps them running in the background with Up, Down and ReadStatus.
//
// The package does not start meshfed itself and does not run workloads; a
// caller that wants a process per Pod sets Config.Hooks.
package sandbox
