package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
)

// PodHooks let a caller run something for each Pod the sandbox's kubelet
// stand-in starts or stops. Both are called from the stand-in's single
// worker goroutine, one Pod at a time, and may block briefly; they must not
// call back into the sandbox.
type PodHooks struct {
	// Start is called before a Pod is marked Running, with the Pod's
	// status.podIP already chosen. An error leaves the Pod Pending and the
	// start is retried with backoff.
	Start func(ctx context.Context, cluster string, pod *corev1.Pod) error
	// Stop is called when a Pod that Start succeeded for is deleted.
	Stop func(cluster string, pod *corev1.Pod)
	// PortForward, if set, connects to a port of a Pod for the API
	// server's port forwarding (kubectl port-forward). It is called from
	// the kubelet API's goroutines, one call per forwarded connection.
	PortForward func(cluster string, pod *corev1.Pod, port int32) (net.Conn, error)
}

// kubelet plays the scheduler's and kubelet's bookkeeping for one cluster's
// single Node. One worker goroutine owns its state.
type kubelet struct {
	cluster *Cluster
	client  kubernetes.Interface
	hooks   PodHooks
	log     io.Writer

	factory informers.SharedInformerFactory
	pods    corelisters.PodLister
	queue   workqueue.TypedRateLimitingInterface[string]

	// apiPort is where the kubelet API listens on 127.0.0.1 (set before
	// the Node is registered, then read only).
	apiPort int

	// Owned by the worker goroutine.
	ips     map[string]string // pod IP → namespace/name
	started map[string]*corev1.Pod
	base    net.IP
}

func newKubelet(c *Cluster, hooks PodHooks, log io.Writer) (*kubelet, error) {
	ip, ipn, err := net.ParseCIDR(c.PodCIDR)
	if err != nil {
		return nil, fmt.Errorf("pod CIDR %q: %w", c.PodCIDR, err)
	}
	if ones, _ := ipn.Mask.Size(); ones != 24 || ip.To4() == nil {
		return nil, fmt.Errorf("pod CIDR %q: want an IPv4 /24", c.PodCIDR)
	}
	k := &kubelet{
		cluster: c,
		client:  c.client,
		hooks:   hooks,
		log:     log,
		factory: informers.NewSharedInformerFactory(c.client, 10*time.Minute),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "sandbox-kubelet-" + c.Name}),
		ips:     map[string]string{},
		started: map[string]*corev1.Pod{},
		base:    ipn.IP.To4(),
	}
	inf := k.factory.Core().V1().Pods()
	k.pods = inf.Lister()
	_, err = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    k.enqueue,
		UpdateFunc: func(_, obj any) { k.enqueue(obj) },
		DeleteFunc: k.enqueue,
	})
	return k, err
}

func (k *kubelet) enqueue(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		k.queue.Add(key)
	}
}

// nodeIP is the Node's address: the first address of the pod CIDR.
func (k *kubelet) nodeIP() string { return k.addr(1) }

func (k *kubelet) addr(host int) string {
	return net.IPv4(k.base[0], k.base[1], k.base[2], byte(host)).String()
}

// registerNode creates the cluster's Node, Ready and labelled with its zone.
func (k *kubelet) registerNode(ctx context.Context) error {
	c := k.cluster
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: c.NodeName,
			Labels: map[string]string{
				corev1.LabelHostname:         c.NodeName,
				corev1.LabelTopologyZone:     c.Zone,
				corev1.LabelTopologyRegion:   c.Name,
				corev1.LabelOSStable:         "linux",
				"meshfed.io/sandbox-cluster": c.Name,
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: c.PodCIDR, PodCIDRs: []string{c.PodCIDR}},
	}
	if _, err := k.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return k.heartbeat(ctx)
}

// heartbeat marks the Node Ready, as a kubelet's status updates do.
func (k *kubelet) heartbeat(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error { return k.updateNodeStatus(ctx) })
}

func (k *kubelet) updateNodeStatus(ctx context.Context) error {
	node, err := k.client.CoreV1().Nodes().Get(ctx, k.cluster.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	node.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "SandboxKubeletReady",
		Message: "meshfed sandbox stands in for the kubelet", LastHeartbeatTime: now, LastTransitionTime: now,
	}}
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: k.nodeIP()},
		{Type: corev1.NodeHostName, Address: k.cluster.NodeName},
		// Where the API server reaches the kubelet stand-in's API
		// (kubeletserver.go): it is told to prefer this address type.
		{Type: corev1.NodeInternalDNS, Address: "localhost"},
	}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(k.apiPort)
	node.Status.Capacity = corev1.ResourceList{"pods": resource.MustParse("250"), "cpu": resource.MustParse("64"), "memory": resource.MustParse("256Gi")}
	node.Status.Allocatable = node.Status.Capacity
	_, err = k.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

func (k *kubelet) run(ctx context.Context) {
	defer k.queue.ShutDown()
	k.factory.Start(ctx.Done())
	k.factory.WaitForCacheSync(ctx.Done())
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := k.heartbeat(ctx); err != nil && ctx.Err() == nil {
			fmt.Fprintf(k.log, "%s: sandbox kubelet: node heartbeat: %v\n", k.cluster.Name, err)
		}
	}, 30*time.Second)
	go func() {
		<-ctx.Done()
		k.queue.ShutDown()
	}()
	for k.processNext(ctx) {
	}
	k.stopAll()
	k.factory.Shutdown()
}

func (k *kubelet) processNext(ctx context.Context) bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	if err := k.sync(ctx, key); err != nil {
		if ctx.Err() == nil {
			fmt.Fprintf(k.log, "%s: sandbox kubelet: pod %s: %v\n", k.cluster.Name, key, err)
		}
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	return true
}

// sync brings one Pod one step closer to what a scheduler and kubelet would
// make of it: bound, then Running and Ready, and, once deleted, gone.
func (k *kubelet) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := k.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		k.stopPod(key)
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case pod.DeletionTimestamp != nil:
		if pod.Spec.NodeName != "" && pod.Spec.NodeName != k.cluster.NodeName {
			return nil
		}
		k.stopPod(key)
		grace := int64(0)
		err := k.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: &grace,
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	case pod.Spec.NodeName == "":
		return k.bind(ctx, pod)
	case pod.Spec.NodeName != k.cluster.NodeName:
		return nil
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return nil
	case pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != "" && k.started[key] != nil:
		return nil
	}
	return k.startPod(ctx, key, pod)
}

func (k *kubelet) bind(ctx context.Context, pod *corev1.Pod) error {
	b := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: k.cluster.NodeName},
	}
	err := k.client.CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (k *kubelet) startPod(ctx context.Context, key string, pod *corev1.Pod) error {
	pod = pod.DeepCopy()
	ip := pod.Status.PodIP
	if ip == "" || k.ips[ip] != key && k.ips[ip] != "" {
		var err error
		if ip, err = k.allocate(key); err != nil {
			return err
		}
	}
	k.ips[ip] = key
	pod.Status.PodIP = ip
	pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	pod.Status.HostIP = k.nodeIP()
	pod.Status.HostIPs = []corev1.HostIP{{IP: k.nodeIP()}}
	if k.started[key] == nil && k.hooks.Start != nil {
		if err := k.hooks.Start(ctx, k.cluster.Name, pod); err != nil {
			return fmt.Errorf("start hook: %w", err)
		}
	}
	k.started[key] = pod
	now := metav1.Now()
	if pod.Status.StartTime == nil {
		pod.Status.StartTime = &now
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.Conditions = nil
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	pod.Status.ContainerStatuses = nil
	for _, ctr := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: ctr.Name, Image: ctr.Image, ImageID: ctr.Image, Ready: true, Started: ptrTo(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	_, err := k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		k.stopPod(key)
		return nil
	}
	return err
}

// allocate picks a free pod address, .10 to .254 of the pod CIDR, skipping
// any address a Pod already holds in the API server.
func (k *kubelet) allocate(key string) (string, error) {
	inUse := map[string]bool{}
	if pods, err := k.pods.List(labels.Everything()); err == nil {
		for _, p := range pods {
			if p.Spec.NodeName == k.cluster.NodeName && p.Status.PodIP != "" {
				inUse[p.Status.PodIP] = true
			}
		}
	}
	for host := 10; host < 255; host++ {
		ip := k.addr(host)
		if k.ips[ip] == "" && !inUse[ip] {
			return ip, nil
		}
	}
	return "", fmt.Errorf("pod CIDR %s exhausted", k.cluster.PodCIDR)
}

func (k *kubelet) stopPod(key string) {
	pod := k.started[key]
	for ip, owner := range k.ips {
		if owner == key {
			delete(k.ips, ip)
		}
	}
	if pod == nil {
		return
	}
	delete(k.started, key)
	if k.hooks.Stop != nil {
		k.hooks.Stop(k.cluster.Name, pod)
	}
}

func (k *kubelet) stopAll() {
	for key := range k.started {
		k.stopPod(key)
	}
}

func ptrTo[T any](v T) *T { return &v }
