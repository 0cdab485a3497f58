// Package deploy holds what `meshfed install` puts into a cluster: the CRDs
// (SMI, MCS and meshfed's MeshConfig) and the control plane's manifests,
// rendered from Options. It renders objects only; applying them is the
// installer's job.
package deploy

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"sort"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// The CRDs live in the Helm chart (deploy/helm/meshfed/crds), which Helm
// installs before the chart's templates; `meshfed install` applies the same
// files.
//
//go:embed helm/meshfed/crds/*.yaml
var crdFiles embed.FS

const crdDir = "helm/meshfed/crds/"

// Labels and annotations meshfed puts on what it installs and on the
// namespaces it manages (the same semantics as Open Service Mesh's
// openservicemesh.io/monitored-by and sidecar-injection).
const (
	LabelManagedBy      = "app.kubernetes.io/managed-by"
	ManagedByMeshfed    = "meshfed"
	LabelPartOf         = "app.kubernetes.io/part-of"
	LabelName           = "app.kubernetes.io/name"
	LabelMeshName       = "meshfed.io/mesh-name"
	LabelVersion        = "app.kubernetes.io/version"
	LabelMonitoredBy    = "meshfed.io/monitored-by"
	AnnotationInjection = "meshfed.io/sidecar-injection"
	ControllerName      = "meshfed-controller"
	// GatewayName is the ServiceAccount (and Deployment) of the cluster's
	// east-west gateway in the control plane's namespace: the controller
	// serves the gateway's configuration to this identity only.
	GatewayName    = "meshfed-gateway"
	MeshConfigName = "meshfed-mesh-config"
	// BundleConfigMapName is the trust bundle ConfigMap in every meshed
	// namespace (key ca.crt). `meshfed namespace add` creates it; the
	// controller may only update it (its RBAC names it).
	BundleConfigMapName  = "meshfed-ca-bundle"
	DefaultMeshName      = "meshfed"
	DefaultNamespace     = "meshfed-system"
	DefaultTrustDomain   = "meshfed.local"
	DefaultImageRepo     = "meshfed/meshfed-controller"
	MeshConfigAPIVersion = "config.meshfed.io/v1alpha1"

	// RootSecretName and IntermediateSecretName are the Secrets, in the
	// control plane's namespace, that the controller reads its CA from
	// (MeshConfig spec.certificate defaults).
	RootSecretName         = "meshfed-root-ca"
	IntermediateSecretName = "meshfed-intermediate-ca"
)

// MeshConfigGVR is the MeshConfig custom resource.
var MeshConfigGVR = schema.GroupVersionResource{Group: "config.meshfed.io", Version: "v1alpha1", Resource: "meshconfigs"}

// Ports the controller serves on.
const (
	PortXDS     = 15128 // xDS and SDS for proxies (mTLS)
	PortIssuer  = 15129 // workload certificate issuing (TLS, token-authenticated)
	PortWebhook = 15130 // the sidecar injector (TLS, called by the API server)
	PortMetrics = 9091  // Prometheus metrics
	// PortDebug is the debug API (controller/debug), on the Pod's loopback
	// only: reached by port forwarding through the API server.
	PortDebug  = 15132
	PortGossip = 7946 // federation gossip, TCP and UDP
)

// Version is the version of meshfed these manifests install.
var Version = "v0.1.0-dev"

// CRDs returns the CustomResourceDefinitions meshfed needs, sorted by name.
func CRDs() ([]*unstructured.Unstructured, error) {
	names, err := fs.Glob(crdFiles, crdDir+"*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []*unstructured.Unstructured
	for _, n := range names {
		b, err := crdFiles.ReadFile(n)
		if err != nil {
			return nil, err
		}
		objs, err := Decode(b)
		if err != nil {
			return nil, fmt.Errorf("deploy: %s: %w", path.Base(n), err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// CRDFile returns the raw bytes of one embedded CRD file, by base name.
func CRDFile(name string) ([]byte, error) { return crdFiles.ReadFile(crdDir + name) }

// Decode splits a multi-document YAML or JSON stream into objects, skipping
// empty documents.
func Decode(b []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	r := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var m map[string]any
		if err := r.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// Encode writes objects as one YAML stream.
func Encode(w io.Writer, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		b, err := yaml.Marshal(o.Object)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "---\n%s", b); err != nil {
			return err
		}
	}
	return nil
}

var trustDomainRE = regexp.MustCompile(`^[a-z0-9._-]+$`)
