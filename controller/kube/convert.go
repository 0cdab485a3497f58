package kube

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshfed/meshfed/mesh"
)

// The API versions meshfed reads (DESIGN.md: SMI as OSM served it).
var (
	TrafficTargetGVR  = schema.GroupVersionResource{Group: "access.smi-spec.io", Version: "v1alpha3", Resource: "traffictargets"}
	HTTPRouteGroupGVR = schema.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "httproutegroups"}
	TCPRouteGVR       = schema.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "tcproutes"}
	TrafficSplitGVR   = schema.GroupVersionResource{Group: "split.smi-spec.io", Version: "v1alpha2", Resource: "trafficsplits"}
	ServiceExportGVR  = schema.GroupVersionResource{Group: "multicluster.x-k8s.io", Version: "v1beta1", Resource: "serviceexports"}
	MeshConfigGVR     = schema.GroupVersionResource{Group: "config.meshfed.io", Version: "v1alpha1", Resource: "meshconfigs"}
)

// ErrConversion is wrapped by every error about an object that cannot be
// read into the mesh model.
var ErrConversion = errors.New("cannot read object")

// Small typed mirrors of the SMI and MeshConfig specs: only the fields
// meshfed reads. smi-sdk-go's types would do, but its clientsets do not fit
// client-go v0.37 (DESIGN.md), and these few structs are all we need.

type smiIdentity struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

type trafficTargetSpec struct {
	Destination smiIdentity   `json:"destination"`
	Sources     []smiIdentity `json:"sources"`
	Rules       []struct {
		Kind    string   `json:"kind"`
		Name    string   `json:"name"`
		Matches []string `json:"matches"`
	} `json:"rules"`
}

type httpRouteGroupSpec struct {
	Matches []struct {
		Name      string            `json:"name"`
		PathRegex string            `json:"pathRegex"`
		Methods   []string          `json:"methods"`
		Headers   map[string]string `json:"headers"`
	} `json:"matches"`
}

type tcpRouteSpec struct {
	Matches struct {
		Name  string  `json:"name"`
		Ports []int64 `json:"ports"`
	} `json:"matches"`
}

type trafficSplitSpec struct {
	Service  string `json:"service"`
	Backends []struct {
		Service string `json:"service"`
		Weight  int64  `json:"weight"`
	} `json:"backends"`
}

type meshConfigSpec struct {
	ClusterName string `json:"clusterName"`
	MeshName    string `json:"meshName"`
	TrustDomain string `json:"trustDomain"`
	Traffic     struct {
		EnablePermissiveTrafficPolicyMode bool `json:"enablePermissiveTrafficPolicyMode"`
	} `json:"traffic"`
	Federation struct {
		Network              string `json:"network"`
		ClusterSetLocalFirst bool   `json:"clusterSetLocalFirst"`
	} `json:"federation"`
}

func specOf(u *unstructured.Unstructured, into any) error {
	spec, ok := u.Object["spec"].(map[string]any)
	if !ok {
		return fmt.Errorf("%w: no spec", ErrConversion)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(spec, into); err != nil {
		return fmt.Errorf("%w: spec: %w", ErrConversion, err)
	}
	return nil
}

// identityOf turns an SMI ServiceAccount reference into an identity; an
// empty namespace means defaultNS (the TrafficTarget's own).
func identityOf(td string, ref smiIdentity, defaultNS string) (mesh.Identity, error) {
	if ref.Kind != "" && ref.Kind != "ServiceAccount" {
		return "", fmt.Errorf("%w: kind %q: only ServiceAccount is supported", ErrConversion, ref.Kind)
	}
	ns := ref.Namespace
	if ns == "" {
		ns = defaultNS
	}
	if ref.Name == "" {
		return "", fmt.Errorf("%w: ServiceAccount name is empty", ErrConversion)
	}
	return mesh.NewIdentity(td, ns, ref.Name), nil
}

// TrafficTargetFrom reads an access.smi-spec.io/v1alpha3 TrafficTarget.
func TrafficTargetFrom(td string, u *unstructured.Unstructured) (mesh.TrafficTarget, error) {
	var spec trafficTargetSpec
	if err := specOf(u, &spec); err != nil {
		return mesh.TrafficTarget{}, err
	}
	tt := mesh.TrafficTarget{Namespace: u.GetNamespace(), Name: u.GetName()}
	dst, err := identityOf(td, spec.Destination, u.GetNamespace())
	if err != nil {
		return tt, fmt.Errorf("destination: %w", err)
	}
	tt.Destination = dst
	for _, s := range spec.Sources {
		id, err := identityOf(td, s, u.GetNamespace())
		if err != nil {
			return tt, fmt.Errorf("source: %w", err)
		}
		tt.Sources = append(tt.Sources, id)
	}
	for _, r := range spec.Rules {
		tt.Rules = append(tt.Rules, mesh.TrafficTargetRule{Kind: mesh.RouteKind(r.Kind), Name: r.Name, Matches: r.Matches})
	}
	return tt, nil
}

// HTTPRouteGroupFrom reads a specs.smi-spec.io/v1alpha4 HTTPRouteGroup.
func HTTPRouteGroupFrom(u *unstructured.Unstructured) (mesh.HTTPRouteGroup, error) {
	var spec httpRouteGroupSpec
	if err := specOf(u, &spec); err != nil {
		return mesh.HTTPRouteGroup{}, err
	}
	g := mesh.HTTPRouteGroup{Namespace: u.GetNamespace(), Name: u.GetName()}
	for _, m := range spec.Matches {
		g.Matches = append(g.Matches, mesh.HTTPMatch{Name: m.Name, PathRegex: m.PathRegex, Methods: m.Methods, Headers: m.Headers})
	}
	return g, nil
}

// TCPRouteFrom reads a specs.smi-spec.io/v1alpha4 TCPRoute.
func TCPRouteFrom(u *unstructured.Unstructured) (mesh.TCPRoute, error) {
	var spec tcpRouteSpec
	if err := specOf(u, &spec); err != nil {
		return mesh.TCPRoute{}, err
	}
	r := mesh.TCPRoute{Namespace: u.GetNamespace(), Name: u.GetName()}
	for _, p := range spec.Matches.Ports {
		if p < 1 || p > 65535 {
			return r, fmt.Errorf("%w: port %d out of range", ErrConversion, p)
		}
		r.Ports = append(r.Ports, uint32(p))
	}
	return r, nil
}

// TrafficSplitFrom reads a split.smi-spec.io/v1alpha2 TrafficSplit. The
// root service may be given as a name or as "<name>.<namespace>..." (OSM
// accepted both); only the name is kept.
func TrafficSplitFrom(u *unstructured.Unstructured) (mesh.TrafficSplit, error) {
	var spec trafficSplitSpec
	if err := specOf(u, &spec); err != nil {
		return mesh.TrafficSplit{}, err
	}
	ts := mesh.TrafficSplit{Namespace: u.GetNamespace(), Name: u.GetName(), Service: shortName(spec.Service)}
	for _, b := range spec.Backends {
		ts.Backends = append(ts.Backends, mesh.SplitBackend{Service: shortName(b.Service), Weight: b.Weight})
	}
	return ts, nil
}

func shortName(s string) string {
	name, _, _ := strings.Cut(s, ".")
	return name
}

// settingsFrom reads a MeshConfig over the defaults in base.
func settingsFrom(base mesh.Settings, u *unstructured.Unstructured) (mesh.Settings, error) {
	var spec meshConfigSpec
	if err := specOf(u, &spec); err != nil {
		return base, err
	}
	s := base
	if spec.ClusterName != "" {
		s.ClusterName = spec.ClusterName
	}
	if spec.TrustDomain != "" {
		s.TrustDomain = spec.TrustDomain
	}
	if spec.Federation.Network != "" {
		s.Network = spec.Federation.Network
	}
	s.PermissiveTrafficPolicy = spec.Traffic.EnablePermissiveTrafficPolicyMode
	s.ClusterSetLocalFirst = spec.Federation.ClusterSetLocalFirst
	return s, nil
}

// protocolOf reads a service port's application protocol as OSM did: the
// appProtocol field, else the port name's prefix ("grpc-web" → grpc);
// unknown means HTTP.
func protocolOf(p corev1.ServicePort) mesh.Protocol {
	name := p.Name
	if p.AppProtocol != nil {
		name = *p.AppProtocol
	}
	switch name {
	case "kubernetes.io/h2c":
		return mesh.ProtocolHTTP2
	case "kubernetes.io/ws", "kubernetes.io/wss":
		return mesh.ProtocolHTTP
	}
	prefix, _, _ := strings.Cut(strings.ToLower(name), "-")
	switch mesh.Protocol(prefix) {
	case mesh.ProtocolGRPC, mesh.ProtocolHTTP, mesh.ProtocolHTTP2, mesh.ProtocolTCP:
		return mesh.Protocol(prefix)
	}
	if p.Protocol == corev1.ProtocolUDP || p.Protocol == corev1.ProtocolSCTP {
		return mesh.ProtocolTCP // not served; the generator skips non-HTTP policy details
	}
	return mesh.ProtocolHTTP
}

// PodInfo is what a Service's endpoints need from their Pods.
type PodInfo struct {
	ServiceAccount string
}

// ServiceFrom builds a mesh.Service from a Service and its EndpointSlices.
// pods finds the Pod an endpoint's targetRef names (namespace, name).
func ServiceFrom(settings mesh.Settings, svc *corev1.Service, slices []*discoveryv1.EndpointSlice, pods func(ns, name string) (PodInfo, bool)) (mesh.Service, error) {
	out := mesh.Service{Namespace: svc.Namespace, Name: svc.Name, Cluster: settings.ClusterName}
	for _, p := range svc.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		mp := mesh.Port{Name: p.Name, Port: uint32(p.Port), Protocol: protocolOf(p)}
		if p.TargetPort.IntValue() > 0 {
			mp.TargetPort = uint32(p.TargetPort.IntValue())
		}
		out.Ports = append(out.Ports, mp)
	}
	if len(out.Ports) == 0 {
		return out, fmt.Errorf("%w: no TCP ports", ErrConversion)
	}
	byAddr := map[string]mesh.Endpoint{}
	for _, sl := range slices {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		ports := map[string]uint32{}
		for _, p := range sl.Ports {
			if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
				continue
			}
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			ports[name] = uint32(*p.Port)
		}
		for _, ep := range sl.Endpoints {
			e := mesh.Endpoint{
				Cluster:     settings.ClusterName,
				Network:     settings.Network,
				Ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
				Terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
				TargetPorts: ports,
			}
			if ep.Zone != nil {
				e.Locality.Zone = *ep.Zone
			}
			if ref := ep.TargetRef; ref != nil && ref.Kind == "Pod" {
				ns := ref.Namespace
				if ns == "" {
					ns = sl.Namespace
				}
				e.Pod = ns + "/" + ref.Name
				if pi, ok := pods(ns, ref.Name); ok && pi.ServiceAccount != "" {
					e.Identity = mesh.NewIdentity(settings.TrustDomain, ns, pi.ServiceAccount)
				}
			}
			for _, a := range ep.Addresses {
				e.Address = a
				if old, dup := byAddr[a]; dup && old.Ready && !e.Ready {
					continue
				}
				byAddr[a] = e
			}
		}
	}
	for _, e := range byAddr {
		out.Endpoints = append(out.Endpoints, e)
	}
	sort.Slice(out.Endpoints, func(i, j int) bool { return out.Endpoints[i].Address < out.Endpoints[j].Address })
	return out, nil
}
