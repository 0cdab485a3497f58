// Package mesh is the vocabulary every other meshfed package speaks: services,
// their ports and endpoints, workload identities (SPIFFE IDs), SMI access and
// split policy, MCS exports and imports, and the mesh-wide settings, all held
// in one immutable State value.
//
// It owns plain values and their validation only. It has no Kubernetes
// client, does no I/O, logs nothing and imports nothing else from meshfed.
// Producers (controller/kube, federation) build a new State for every change
// and never modify one they have handed out; consumers (the xDS generators,
// the gateway) may share a State between goroutines without locking.
package mesh
