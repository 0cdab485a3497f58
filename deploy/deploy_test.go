package deploy_test

import (
	"bytes"
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
