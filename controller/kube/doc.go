// Package kube reads a cluster's Kubernetes API into one immutable
// mesh.State, the input of meshfed's xDS generators.
//
// It owns: the informers (typed ones for Namespaces, Services,
// EndpointSlices, Pods and ServiceAccounts; dynamic ones for SMI
// TrafficTarget, HTTPRouteGroup, TCPRoute and TrafficSplit, MCS
// ServiceExport and meshfed's MeshConfig), mesh membership (a namespace
// belongs to mesh M when it carries meshfed.io/monitored-by=M), converting
// objects to the mesh vocabulary, debouncing bursts of changes, reporting
// bad objects (a Kubernetes Event on the object and a log line) and the
// controller-side metrics (rejected objects, generation time, time from a
// Kubernetes change to the proxies' ACKs).
//
// It does not own xDS: it hands each State to a Sink (in meshfed-controller,
// the federation junction in front of the xDS server) and reports the
// problems the Sink returns, and those a ProblemNotifier Sink finds later
// (a reference missing everywhere after MissingReferenceGrace; a Normal
// Event when a reported object is in force again). It never writes to the
// API server except Events.
//
// One goroutine (Run's) owns the state it builds: informer handlers only
// signal that something changed, and the worker re-reads the listers, so a
// burst of changes costs one rebuild.
package kube
