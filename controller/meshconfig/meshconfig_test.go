package meshconfig

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/trust"
)

func object(spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": deploy.MeshConfigAPIVersion, "kind": "MeshConfig"}}
	if spec != nil {
		u.Object["spec"] = spec
	}
	return u
}

func TestEmptySpecGetsEveryDefault(t *testing.T) {
	got, err := Parse(object(map[string]any{}))
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{
		MeshName: deploy.DefaultMeshName,
		Certificate: Certificate{RootSecretName: deploy.RootSecretName, IntermediateSecretName: deploy.IntermediateSecretName,
			ServiceCertValidityDuration: 24 * time.Hour},
		Federation: Federation{Network: mesh.DefaultNetwork, BindAddress: "0.0.0.0", BindPort: deploy.PortGossip,
			GossipKeySecretName: "meshfed-gossip-key", WithdrawAfter: 30 * time.Second},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if got.TrustDomainOr("") != trust.DefaultTrustDomain || got.TrustDomainOr("flag.example") != "flag.example" {
		t.Fatalf("TrustDomainOr: %q, %q", got.TrustDomainOr(""), got.TrustDomainOr("flag.example"))
	}
	if got.Federation.AdvertisedPort() != deploy.PortGossip {
		t.Fatalf("advertised port %d", got.Federation.AdvertisedPort())
	}
}

func TestEveryFieldIsRead(t *testing.T) {
	got, err := Parse(object(map[string]any{
		"meshName": "m2", "clusterName": "east", "trustDomain": "example.org",
		"traffic":     map[string]any{"enablePermissiveTrafficPolicyMode": true},
		"certificate": map[string]any{"serviceCertValidityDuration": "2h", "rootSecretName": "r", "intermediateSecretName": "i"},
		"federation": map[string]any{"enabled": true, "network": "net-a", "bindAddress": "10.0.0.1", "bindPort": int64(8000),
			"advertiseAddress": "1.2.3.4", "advertisePort": int64(9000), "peers": []any{"a:1", "b:2"}, "gossipKeySecretName": "gk",
			"withdrawAfter": "1m", "failStatic": true, "clusterSetLocalFirst": true, "gatewayAddresses": []any{"192.0.2.10:15443"}},
		"observability": map[string]any{"logLevel": "debug"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{
		MeshName: "m2", ClusterName: "east", TrustDomain: "example.org",
		Traffic:     Traffic{EnablePermissiveTrafficPolicyMode: true},
		Certificate: Certificate{RootSecretName: "r", IntermediateSecretName: "i", ServiceCertValidityDuration: 2 * time.Hour},
		Federation: Federation{Enabled: true, Network: "net-a", ClusterSetLocalFirst: true, BindAddress: "10.0.0.1", BindPort: 8000,
			AdvertiseAddress: "1.2.3.4", AdvertisePort: 9000, Peers: []string{"a:1", "b:2"}, GossipKeySecretName: "gk",
			WithdrawAfter: time.Minute, FailStatic: true, GatewayAddresses: []string{"192.0.2.10:15443"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if got.TrustDomainOr("") != "example.org" || got.Federation.AdvertisedPort() != 9000 {
		t.Fatalf("TrustDomainOr %q, advertised port %d", got.TrustDomainOr(""), got.Federation.AdvertisedPort())
	}
}

// Every wrong field is named; the right ones are still read, the wrong
// ones keep their defaults.
func TestWrongFieldsAreNamedAndTheRestIsRead(t *testing.T) {
	got, err := Parse(object(map[string]any{
		"clusterName": "east",
		"traffic":     map[string]any{"enablePermissiveTrafficPolicyMode": true},
		"certificate": map[string]any{"serviceCertValidityDuration": "-1h"},
		"federation": map[string]any{"withdrawAfter": "soon", "bindPort": int64(70000), "advertisePort": int64(-1),
			"gatewayAddresses": []any{"gateway.example:15443", "192.0.2.10:15443"}},
	}))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`spec.certificate.serviceCertValidityDuration "-1h": must be positive`, `spec.federation.withdrawAfter "soon"`,
		"spec.federation.bindPort 70000: not a port", "spec.federation.advertisePort -1: not a port",
		`spec.federation.gatewayAddresses "gateway.example:15443": not IP:port`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if got.ClusterName != "east" || !got.Traffic.EnablePermissiveTrafficPolicyMode || !reflect.DeepEqual(got.Federation.GatewayAddresses, []string{"192.0.2.10:15443"}) {
		t.Errorf("the right fields were not read: %+v", got)
	}
	if got.Federation.WithdrawAfter != DefaultWithdrawAfter || got.Federation.BindPort != deploy.PortGossip ||
		got.Certificate.ServiceCertValidityDuration != DefaultSVIDTTL {
		t.Errorf("wrong fields did not keep their defaults: %+v", got)
	}
}

func TestMalformedObjectsAreRefused(t *testing.T) {
	for name, u := range map[string]*unstructured.Unstructured{
		"no spec":            object(nil),
		"spec not an object": {Object: map[string]any{"spec": "yes"}},
		"port not a number":  object(map[string]any{"federation": map[string]any{"bindPort": "abc"}}),
		"peers not a list":   object(map[string]any{"federation": map[string]any{"peers": "a:1"}}),
	} {
		got, err := Parse(u)
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		if !reflect.DeepEqual(got, Default()) {
			t.Errorf("%s: got %+v, want the defaults", name, got)
		}
	}
}
