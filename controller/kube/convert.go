package kube

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshfed/meshfed/controller/meshconfig"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/mesh"
)

// The API versions meshfed reads (DESIGN.md: SMI as OSM served it).
var (
	TrafficTargetGVR  = schema.GroupVersionResource{Group: "access.smi-spec.io", Version: "v1alpha3", Resource: "traffictargets"}
	HTTPRouteGroupGVR = schema.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "httproutegroups"}
	TCPRouteGVR       = schema.GroupVersionResource{Group: "specs.smi-spec.io", Version: "v1alpha4", Resource: "tcproutes"}
	TrafficSplitGVR   = schema.GroupVersionResource{Group: "split.smi-spec.io", Version: "v1alpha2", Resource: "trafficsplits"}
	ServiceExportGVR  = schema.GroupVersionResource{Group: "multicluster.x-k8s.io", Version: "v1beta1", Resource: "serviceexports"}
	ServiceImportGVR  = schema.GroupVersionResource{Group: "multicluster.x-k8s.io", Version: "v1beta1", Resource: "serviceimports"}
	MeshConfigGVR     = deploy.MeshConfigGVR
)

// ErrConversion is wrapped by every error about an object that cannot be
// read into the mesh model.
var ErrConversion = errors.New("cannot read object")

// Small typed mirrors of the SMI specs: only the fields
// meshfed reads. smi-sdk-go's types would do, but its clientsets do not fit
// client-go v0.37 (DESIGN.md), and these few structs are all we need.

type smiIdentity struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Port is read only to refuse it: meshfed does not enforce it.
	Port *int64 `json:"port"`
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
		Name      string   `json:"name"`
		PathRegex string   `json:"pathRegex"`
		Methods   []string `json:"methods"`
		// Headers is a map or a list of maps (headersOf); the CRD keeps it
		// as written.
		Headers any `json:"headers"`
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
	// Matches is read only to refuse it: meshfed splits all traffic.
	Matches []any `json:"matches"`
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
	if p := spec.Destination.Port; p != nil {
		return tt, fmt.Errorf("%w: destination.port %d: meshfed does not enforce a port on the destination; "+
			"remove destination.port and allow ports with a TCPRoute rule (spec.matches.ports) instead", ErrConversion, *p)
	}
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
		if mesh.RouteKind(r.Kind) == mesh.KindTCPRoute && len(r.Matches) > 0 {
			return tt, fmt.Errorf("%w: rule TCPRoute %s: matches select matches of an HTTPRouteGroup; remove them (a TCPRoute allows its ports)", ErrConversion, r.Name)
		}
		tt.Rules = append(tt.Rules, mesh.TrafficTargetRule{Kind: mesh.RouteKind(r.Kind), Name: r.Name, Matches: r.Matches})
	}
	return tt, nil
}

// HTTPRouteGroupFrom reads a specs.smi-spec.io/v1alpha4 HTTPRouteGroup.
// Headers may be a map or, as OSM wrote them, a list of single-entry maps;
// both become the same match.
func HTTPRouteGroupFrom(u *unstructured.Unstructured) (mesh.HTTPRouteGroup, error) {
	var spec httpRouteGroupSpec
	if err := specOf(u, &spec); err != nil {
		return mesh.HTTPRouteGroup{}, err
	}
	g := mesh.HTTPRouteGroup{Namespace: u.GetNamespace(), Name: u.GetName()}
	for _, m := range spec.Matches {
		headers, err := headersOf(m.Headers)
		if err != nil {
			return g, fmt.Errorf("match %q: %w", m.Name, err)
		}
		for _, method := range m.Methods {
			if !httpMethods[method] {
				return g, fmt.Errorf("%w: match %q: method %q: write an HTTP method in capitals (GET, POST, ...) or \"*\" for any", ErrConversion, m.Name, method)
			}
		}
		g.Matches = append(g.Matches, mesh.HTTPMatch{Name: m.Name, PathRegex: m.PathRegex, Methods: m.Methods, Headers: headers})
	}
	return g, nil
}

// httpMethods are the methods an HTTPRouteGroup match may name; "*" is any.
var httpMethods = map[string]bool{
	"*": true, "GET": true, "HEAD": true, "PUT": true, "POST": true, "DELETE": true,
	"CONNECT": true, "OPTIONS": true, "TRACE": true, "PATCH": true,
}

// headerName is an HTTP header name (RFC 9110 token) in lower case.
var headerName = regexp.MustCompile("^[a-z0-9!#$%&'*+.^_`|~-]+$")

const headersHelp = `write a map of header name to regular expression ({"user-agent": ".*-http-client/.*"}) or a list of such maps ([{"user-agent": ".*-http-client/.*"}, {"client-app": "bookbuyer"}])`

// headersOf reads the headers of an HTTPRouteGroup match: a map of header
// name to value regex (SMI's Go types), or a list of maps (OSM's CRD and
// documentation: one entry each). Names are case-insensitive and kept in
// lower case; a name given twice is refused.
func headersOf(v any) (map[string]string, error) {
	var entries []map[string]any
	switch h := v.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		entries = []map[string]any{h}
	case []any:
		for i, item := range h {
			m, ok := item.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%w: headers[%d] is a %s: %s", ErrConversion, i, jsonKind(item), headersHelp)
			}
			entries = append(entries, m)
		}
	default:
		return nil, fmt.Errorf("%w: headers is a %s: %s", ErrConversion, jsonKind(v), headersHelp)
	}
	out := map[string]string{}
	for _, m := range entries {
		names := make([]string, 0, len(m))
		for name := range m {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			value, ok := m[name].(string)
			if !ok {
				return nil, fmt.Errorf("%w: header %q: value is a %s, not a string: %s", ErrConversion, name, jsonKind(m[name]), headersHelp)
			}
			key := strings.ToLower(name)
			if !headerName.MatchString(key) {
				return nil, fmt.Errorf("%w: header %q: not an HTTP header name (match the method with methods and the path with pathRegex)", ErrConversion, name)
			}
			if key == "host" {
				return nil, fmt.Errorf("%w: header %q: meshfed does not match the host (proxies see it as :authority); "+
					"remove it: the TrafficTarget's destination already selects the service", ErrConversion, name)
			}
			if _, dup := out[key]; dup {
				return nil, fmt.Errorf("%w: header %q is given twice: write one regular expression that matches every value you allow", ErrConversion, key)
			}
			out[key] = value
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// jsonKind names the JSON type of an unstructured value, for messages.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case int64, float64, int, int32:
		return "number"
	case []any:
		return "list"
	case map[string]any:
		return "map"
	}
	return fmt.Sprintf("%T", v)
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
// root service and the backends may be given as a name, as
// "<name>.<namespace>" or as the FQDN "<name>.<namespace>.svc.cluster.local"
// (OSM accepted all of them); the namespace must be the split's own. A
// backend may name the root service itself (its own endpoints). spec.matches
// is refused: meshfed splits all of the root service's traffic.
func TrafficSplitFrom(u *unstructured.Unstructured) (mesh.TrafficSplit, error) {
	var spec trafficSplitSpec
	if err := specOf(u, &spec); err != nil {
		return mesh.TrafficSplit{}, err
	}
	ns := u.GetNamespace()
	ts := mesh.TrafficSplit{Namespace: ns, Name: u.GetName()}
	if len(spec.Matches) > 0 {
		return ts, fmt.Errorf("%w: spec.matches: meshfed splits all traffic to the root service and does not split by route; "+
			"remove spec.matches (and keep route-specific policy in TrafficTargets)", ErrConversion)
	}
	var err error
	if ts.Service, err = serviceName(spec.Service, ns); err != nil {
		return ts, fmt.Errorf("service: %w", err)
	}
	for _, b := range spec.Backends {
		name, err := serviceName(b.Service, ns)
		if err != nil {
			return ts, fmt.Errorf("backend: %w", err)
		}
		ts.Backends = append(ts.Backends, mesh.SplitBackend{Service: name, Weight: b.Weight})
	}
	return ts, nil
}

// serviceName reads a service reference of a TrafficSplit in namespace ns:
// "name", "name.ns", "name.ns.svc", "name.ns.svc.cluster" or
// "name.ns.svc.cluster.local". It returns the name.
func serviceName(ref, ns string) (string, error) {
	name, rest, _ := strings.Cut(ref, ".")
	if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
		return "", fmt.Errorf("%w: %q: %s: write the name of a Service in namespace %s", ErrConversion, ref, strings.Join(errs, "; "), ns)
	}
	if rest == "" {
		return name, nil
	}
	refNS, suffix, _ := strings.Cut(rest, ".")
	if refNS != ns {
		return "", fmt.Errorf("%w: %q names a service in namespace %q: a TrafficSplit splits services of its own namespace %s; "+
			"write %q in a TrafficSplit in namespace %s", ErrConversion, ref, refNS, ns, name, refNS)
	}
	switch suffix {
	case "", "svc", "svc.cluster", "svc.cluster.local":
		return name, nil
	}
	return "", fmt.Errorf("%w: %q: write %q or %q (services of other clusters are found by name: MCS namespace sameness)",
		ErrConversion, ref, name, name+"."+ns+".svc.cluster.local")
}

// settingsFrom reads a MeshConfig (meshconfig.Parse) over base: the
// cluster name, trust domain and network it names win over base's. A
// field that is wrong is reported in the error; the settings read from the
// rest are returned with it (a bad withdrawAfter does not turn permissive
// mode off).
func settingsFrom(base mesh.Settings, u *unstructured.Unstructured) (mesh.Settings, error) {
	spec, err := meshconfig.Parse(u)
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrConversion, err)
	}
	s := base
	if spec.ClusterName != "" {
		s.ClusterName = spec.ClusterName
	}
	if spec.TrustDomain != "" {
		s.TrustDomain = spec.TrustDomain
	}
	s.Network = spec.Federation.Network
	s.PermissiveTrafficPolicy = spec.Traffic.EnablePermissiveTrafficPolicyMode
	s.ClusterSetLocalFirst = spec.Federation.ClusterSetLocalFirst
	return s, err
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
