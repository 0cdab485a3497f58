package kube

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/meshfed/meshfed/deploy"
)

// Informers is the one set of informers a controller runs: the Kubernetes
// watcher and the federation bridge (controller/federate) read the same
// caches, so every Service, EndpointSlice and Pod is held once. Every
// informer either needs is registered by NewInformers, with the transforms
// that keep the caches small (Pods reduced to what meshfed reads, managed
// fields dropped), so that Start starts them all and a part started later
// (a restarted bridge) only adds its handlers.
type Informers struct {
	factory    informers.SharedInformerFactory
	dynFactory dynamicinformer.DynamicSharedInformerFactory
	// mcFactory watches the control plane's namespace only (MeshConfig).
	mcFactory dynamicinformer.DynamicSharedInformerFactory
	dyn       map[schema.GroupVersionResource]informers.GenericInformer
}

// NewInformers registers every informer the watcher and the bridge read,
// resynced every resync; namespace is the control plane's (its MeshConfig).
func NewInformers(client kubernetes.Interface, dyn dynamic.Interface, namespace string, resync time.Duration) (*Informers, error) {
	in := &Informers{
		factory:    informers.NewSharedInformerFactory(client, resync),
		dynFactory: dynamicinformer.NewDynamicSharedInformerFactory(dyn, resync),
		mcFactory:  dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, resync, namespace, nil),
		dyn:        map[schema.GroupVersionResource]informers.GenericInformer{},
	}
	core := in.factory.Core().V1()
	if err := core.Pods().Informer().SetTransform(slimPod); err != nil {
		return nil, err
	}
	slices := in.factory.Discovery().V1().EndpointSlices().Informer()
	if err := slices.AddIndexers(cache.Indexers{indexByService: sliceServiceKey}); err != nil {
		return nil, err
	}
	for _, inf := range []cache.SharedIndexInformer{core.Services().Informer(), slices, core.Namespaces().Informer(), core.ServiceAccounts().Informer()} {
		if err := inf.SetTransform(dropManagedFields); err != nil {
			return nil, err
		}
	}
	for _, gvr := range []schema.GroupVersionResource{TrafficTargetGVR, HTTPRouteGroupGVR, TCPRouteGVR, TrafficSplitGVR, ServiceExportGVR, ServiceImportGVR} {
		in.dyn[gvr] = in.dynFactory.ForResource(gvr)
	}
	in.dyn[deploy.MeshConfigGVR] = in.mcFactory.ForResource(deploy.MeshConfigGVR)
	for _, gi := range in.dyn {
		if err := gi.Informer().SetTransform(dropManagedFields); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// Core is the typed informers (Services, EndpointSlices, Pods, Namespaces,
// ServiceAccounts).
func (in *Informers) Core() informers.SharedInformerFactory { return in.factory }

// Resource returns the informer of one of the custom resources
// NewInformers registered (SMI, ServiceExport, ServiceImport, MeshConfig);
// nil for any other.
func (in *Informers) Resource(gvr schema.GroupVersionResource) informers.GenericInformer {
	return in.dyn[gvr]
}

// Start starts every informer; they run until ctx ends. It does not wait
// for their caches (each reader waits for its handlers' HasSynced).
func (in *Informers) Start(ctx context.Context) {
	in.factory.Start(ctx.Done())
	in.dynFactory.Start(ctx.Done())
	in.mcFactory.Start(ctx.Done())
}

// Shutdown waits for the informers to stop; call it after ctx ended.
func (in *Informers) Shutdown() {
	in.factory.Shutdown()
	in.dynFactory.Shutdown()
	in.mcFactory.Shutdown()
}
