// Package meshconfig is meshfed's MeshConfig (config.meshfed.io/v1alpha1)
// as Go reads it: one type, its defaults, its validation and its
// conversion from the API object. The controller, the federation lifecycle,
// the Kubernetes watcher, the installer and the CLI all read a MeshConfig
// through Parse, so a default is written once.
package meshconfig

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/trust"
)

// Defaults of the fields a MeshConfig may leave out.
const (
	DefaultGossipKeySecret = "meshfed-gossip-key"
	DefaultBindAddress     = "0.0.0.0"
	DefaultWithdrawAfter   = 30 * time.Second
	DefaultSVIDTTL         = 24 * time.Hour
)

// Spec is a MeshConfig's spec with every default applied.
type Spec struct {
	MeshName string
	// ClusterName and TrustDomain are empty when the MeshConfig names none:
	// the controller's flags may name them instead (TrustDomainOr).
	ClusterName string
	TrustDomain string
	Traffic     Traffic
	Certificate Certificate
	Federation  Federation
}

// Traffic is spec.traffic.
type Traffic struct {
	EnablePermissiveTrafficPolicyMode bool
}

// Certificate is spec.certificate.
type Certificate struct {
	RootSecretName         string
	IntermediateSecretName string
	// ServiceCertValidityDuration is how long workload SVIDs live.
	ServiceCertValidityDuration time.Duration
}

// Federation is spec.federation.
type Federation struct {
	Enabled bool
	Network string
	// GatewayAddresses are where clusters on other networks reach this
	// one's east-west gateway (IP:port).
	GatewayAddresses     []string
	ClusterSetLocalFirst bool
	BindAddress          string
	BindPort             int
	AdvertiseAddress     string
	AdvertisePort        int
	Peers                []string
	GossipKeySecretName  string
	WithdrawAfter        time.Duration
	FailStatic           bool
}

// AdvertisedPort is the gossip port other clusters dial: advertisePort,
// else bindPort.
func (f Federation) AdvertisedPort() int {
	if f.AdvertisePort != 0 {
		return f.AdvertisePort
	}
	return f.BindPort
}

// TrustDomainOr returns override if it is set, else the MeshConfig's
// trust domain, else trust.DefaultTrustDomain.
func (s Spec) TrustDomainOr(override string) string {
	switch {
	case override != "":
		return override
	case s.TrustDomain != "":
		return s.TrustDomain
	}
	return trust.DefaultTrustDomain
}

// raw is the spec as the API stores it.
type raw struct {
	MeshName    string `json:"meshName"`
	ClusterName string `json:"clusterName"`
	TrustDomain string `json:"trustDomain"`
	Traffic     struct {
		EnablePermissiveTrafficPolicyMode bool `json:"enablePermissiveTrafficPolicyMode"`
		EnableEgress                      bool `json:"enableEgress"`
	} `json:"traffic"`
	Certificate struct {
		ServiceCertValidityDuration string `json:"serviceCertValidityDuration"`
		RootSecretName              string `json:"rootSecretName"`
		IntermediateSecretName      string `json:"intermediateSecretName"`
	} `json:"certificate"`
	Federation struct {
		Enabled              bool     `json:"enabled"`
		Network              string   `json:"network"`
		GatewayAddresses     []string `json:"gatewayAddresses"`
		BindAddress          string   `json:"bindAddress"`
		BindPort             int64    `json:"bindPort"`
		AdvertiseAddress     string   `json:"advertiseAddress"`
		AdvertisePort        int64    `json:"advertisePort"`
		Peers                []string `json:"peers"`
		GossipKeySecretName  string   `json:"gossipKeySecretName"`
		WithdrawAfter        string   `json:"withdrawAfter"`
		FailStatic           bool     `json:"failStatic"`
		ClusterSetLocalFirst bool     `json:"clusterSetLocalFirst"`
	} `json:"federation"`
	Observability struct {
		LogLevel string `json:"logLevel"`
	} `json:"observability"`
}

// Default returns the spec of a MeshConfig that sets nothing.
func Default() Spec {
	return Spec{
		MeshName: deploy.DefaultMeshName,
		Certificate: Certificate{RootSecretName: deploy.RootSecretName, IntermediateSecretName: deploy.IntermediateSecretName,
			ServiceCertValidityDuration: DefaultSVIDTTL},
		Federation: Federation{Network: mesh.DefaultNetwork, BindAddress: DefaultBindAddress, BindPort: deploy.PortGossip,
			GossipKeySecretName: DefaultGossipKeySecret, WithdrawAfter: DefaultWithdrawAfter},
	}
}

// Parse reads a MeshConfig object over the defaults. The error names
// every field that is wrong (the caller adds which object); the fields
// that are right are still read, so a caller that must go on can use them.
func Parse(u *unstructured.Unstructured) (Spec, error) {
	s := Default()
	specObj, ok := u.Object["spec"].(map[string]any)
	if !ok {
		return s, errors.New("no spec")
	}
	var r raw
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(specObj, &r); err != nil {
		return s, fmt.Errorf("spec: %w", err)
	}
	var errs []error
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&s.MeshName, r.MeshName)
	set(&s.ClusterName, r.ClusterName)
	set(&s.TrustDomain, r.TrustDomain)
	s.Traffic.EnablePermissiveTrafficPolicyMode = r.Traffic.EnablePermissiveTrafficPolicyMode
	set(&s.Certificate.RootSecretName, r.Certificate.RootSecretName)
	set(&s.Certificate.IntermediateSecretName, r.Certificate.IntermediateSecretName)
	duration := func(dst *time.Duration, field, v string) {
		if v == "" {
			return
		}
		d, err := time.ParseDuration(v)
		if err == nil && d <= 0 {
			err = errors.New("must be positive")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.%s %q: %w", field, v, err))
			return
		}
		*dst = d
	}
	duration(&s.Certificate.ServiceCertValidityDuration, "certificate.serviceCertValidityDuration", r.Certificate.ServiceCertValidityDuration)

	f, rf := &s.Federation, r.Federation
	f.Enabled, f.FailStatic, f.ClusterSetLocalFirst = rf.Enabled, rf.FailStatic, rf.ClusterSetLocalFirst
	f.Peers = rf.Peers
	set(&f.Network, rf.Network)
	set(&f.BindAddress, rf.BindAddress)
	set(&f.AdvertiseAddress, rf.AdvertiseAddress)
	set(&f.GossipKeySecretName, rf.GossipKeySecretName)
	port := func(dst *int, field string, v int64) {
		if v == 0 {
			return
		}
		if v < 0 || v > 65535 {
			errs = append(errs, fmt.Errorf("spec.federation.%s %d: not a port (1-65535)", field, v))
			return
		}
		*dst = int(v)
	}
	port(&f.BindPort, "bindPort", rf.BindPort)
	port(&f.AdvertisePort, "advertisePort", rf.AdvertisePort)
	duration(&f.WithdrawAfter, "federation.withdrawAfter", rf.WithdrawAfter)
	for _, g := range rf.GatewayAddresses {
		if err := mesh.CheckGatewayAddress(g); err != nil {
			errs = append(errs, fmt.Errorf("spec.federation.gatewayAddresses %q: %w", g, err))
			continue
		}
		f.GatewayAddresses = append(f.GatewayAddresses, g)
	}
	return s, errors.Join(errs...)
}
