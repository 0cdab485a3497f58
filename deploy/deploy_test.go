package deploy_test

import (
	"bytes"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"strings"
	"testing"

	mcscrd "sigs.k8s.io/mcs-api/config/crd"

	"github.com/meshfed/meshfed/controller/meshconfig"
	"github.com/meshfed/meshfed/deploy"
)

// The MCS CRDs are the upstream ones, byte for byte, so that meshfed's
// ServiceExports and ServiceImports are those of every MCS implementation.
func TestMCSCRDsAreUpstream(t *testing.T) {
	for name, want := range map[string][]byte{
		"multicluster.x-k8s.io_serviceexports.yaml": mcscrd.ServiceExportCRD,
		"multicluster.x-k8s.io_serviceimports.yaml": mcscrd.ServiceImportCRD,
	} {
		got, err := deploy.CRDFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from sigs.k8s.io/mcs-api's copy", name)
		}
	}
}

func TestCRDsCoverSMIMCSAndMeshConfig(t *testing.T) {
	crds, err := deploy.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range crds {
		if c.GetKind() != "CustomResourceDefinition" {
			t.Errorf("%s in crds/ is a %s", c.GetName(), c.GetKind())
		}
		got[c.GetName()] = true
	}
	for _, want := range []string{
		"traffictargets.access.smi-spec.io", "httproutegroups.specs.smi-spec.io", "tcproutes.specs.smi-spec.io",
		"trafficsplits.split.smi-spec.io", "serviceexports.multicluster.x-k8s.io", "serviceimports.multicluster.x-k8s.io",
		"meshconfigs.config.meshfed.io",
	} {
		if !got[want] {
			t.Errorf("CRD %s missing", want)
		}
	}
}

func TestOptionsValidateReportsEveryProblem(t *testing.T) {
	o := deploy.DefaultOptions()
	o.MeshName, o.Namespace, o.TrustDomain, o.Replicas = "Bad_Mesh", "", "spiffe://x", 0
	o.GatewayAddresses = []string{"gateway.example:15443"}
	err := o.Validate()
	if err == nil {
		t.Fatal("invalid options accepted")
	}
	for _, want := range []string{"--cluster-name is required", `mesh name "Bad_Mesh"`, `namespace ""`, `trust domain "spiffe://x"`, "replicas 0",
		"--gateway-address needs --network", `gateway address "gateway.example:15443"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestManifestsRoundTripThroughYAML(t *testing.T) {
	o := deploy.DefaultOptions()
	o.ClusterName = "east"
	objs, err := deploy.Manifests(o)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := deploy.Encode(&buf, objs); err != nil {
		t.Fatal(err)
	}
	back, err := deploy.Decode(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(objs) {
		t.Fatalf("%d objects encoded, %d decoded", len(objs), len(back))
	}
	for i := range objs {
		if back[i].GetKind() != objs[i].GetKind() || back[i].GetName() != objs[i].GetName() {
			t.Errorf("object %d: %s/%s came back as %s/%s", i, objs[i].GetKind(), objs[i].GetName(), back[i].GetKind(), back[i].GetName())
		}
		if back[i].GetLabels()[deploy.LabelMeshName] != "meshfed" {
			t.Errorf("%s/%s lacks the mesh-name label", objs[i].GetKind(), objs[i].GetName())
		}
	}
}

// --network and --gateway-address land in the MeshConfig, which the
// controller reads them from.
func TestNetworkAndGatewayAddressesReachTheMeshConfig(t *testing.T) {
	o := deploy.DefaultOptions()
	o.ClusterName, o.Network, o.GatewayAddresses = "east", "net-east", []string{"192.0.2.10:15443", "192.0.2.11:15443"}
	objs, err := deploy.Manifests(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range objs {
		if u.GetKind() != "MeshConfig" {
			continue
		}
		spec, err := meshconfig.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		if spec.Federation.Network != "net-east" || strings.Join(spec.Federation.GatewayAddresses, ",") != "192.0.2.10:15443,192.0.2.11:15443" {
			t.Errorf("MeshConfig federation %+v", spec.Federation)
		}
		return
	}
	t.Fatal("no MeshConfig")
}

// With a network, install adds the east-west gateway: its ServiceAccount,
// an Envoy Deployment of two replicas with meshfed agent beside it, a
// PodDisruptionBudget, the Service on 15443, and a ConfigMap whose
// bootstrap is valid Envoy configuration. The agent sees the root's
// certificate, never its key. Without a network there is no gateway.
func TestNetworkAddsTheGateway(t *testing.T) {
	o := deploy.DefaultOptions()
	o.ClusterName = "east"
	objs, err := deploy.Manifests(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range objs {
		if u.GetName() == deploy.GatewayName {
			t.Fatalf("no network, yet %s %s", u.GetKind(), u.GetName())
		}
	}

	o.Network, o.GatewayServiceType = "net-east", corev1.ServiceTypeNodePort
	if objs, err = deploy.Manifests(o); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]*unstructured.Unstructured{}
	for _, u := range objs {
		if u.GetName() == deploy.GatewayName {
			kinds[u.GetKind()] = u
		}
	}
	for _, k := range []string{"ServiceAccount", "ConfigMap", "Deployment", "PodDisruptionBudget", "Service"} {
		if kinds[k] == nil {
			t.Fatalf("no gateway %s among %v", k, kinds)
		}
	}
	var dep appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(kinds["Deployment"].Object, &dep); err != nil {
		t.Fatal(err)
	}
	spec := dep.Spec.Template.Spec
	if *dep.Spec.Replicas != 2 || spec.ServiceAccountName != deploy.GatewayName || len(spec.InitContainers) != 1 ||
		spec.InitContainers[0].RestartPolicy == nil || *spec.InitContainers[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("gateway Deployment: replicas %d, service account %q, init containers %+v", *dep.Spec.Replicas, spec.ServiceAccountName, spec.InitContainers)
	}
	for _, v := range spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.Secret != nil && (len(src.Secret.Items) != 1 || src.Secret.Items[0].Key != "ca.crt") {
				t.Errorf("volume %s projects %v of Secret %s; want ca.crt only", v.Name, src.Secret.Items, src.Secret.Name)
			}
		}
	}
	var svc corev1.Service
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(kinds["Service"].Object, &svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Type != corev1.ServiceTypeNodePort || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 15443 {
		t.Errorf("gateway Service %+v", svc.Spec)
	}
	data, _, _ := unstructured.NestedStringMap(kinds["ConfigMap"].Object, "data")
	var boot bootstrapv3.Bootstrap
	if err := protojson.Unmarshal([]byte(data["envoy.json"]), &boot); err != nil {
		t.Fatalf("envoy.json: %v", err)
	}
	if err := boot.ValidateAll(); err != nil {
		t.Fatalf("envoy.json: %v", err)
	}
	for _, f := range []string{"svid.json", "trust-bundle.json"} {
		var dr discoveryv3.DiscoveryResponse
		if err := protojson.Unmarshal([]byte(data[f]), &dr); err != nil || len(dr.Resources) != 1 {
			t.Fatalf("%s: %v (%d resources)", f, err, len(dr.Resources))
		}
		var s tlsv3.Secret
		if err := dr.Resources[0].UnmarshalTo(&s); err != nil || s.ValidateAll() != nil {
			t.Errorf("%s: %v %v", f, err, s.ValidateAll())
		}
	}
}
