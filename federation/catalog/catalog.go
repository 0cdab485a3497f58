// Package catalog defines the wire form of a cluster's exported service
// catalog as meshfed federation members exchange it, and how it is signed and
// verified.
//
// It owns: the versioned catalog types, their encoding (JSON, gzip), the
// signature envelope, the owner's signed head and content digest, deltas
// between versions (delta.go, head.go), the rule that ties a signing certificate to the
// cluster it may speak for, and the bounds on what a receiver spends
// decoding one (Limits: inflated size, services, endpoints, strings,
// nesting). It judges a catalog's header, not its services: receivers
// check each service on its own (mesh.Service.ValidateRemote). It does not own membership, transport or policy
// (package federation) nor the certificate authority (package trust): the
// caller hands in a crypto.Signer with its chain and the trust roots.
//
// The identity rule: a catalog for cluster C in trust domain TD must be
// signed by a key whose leaf certificate chains to the federation's trust
// roots and carries exactly one URI SAN, equal to
// spiffe://TD/meshfed/cluster/C (see ClusterID).
package catalog

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/meshfed/meshfed/mesh"
)

// FormatVersion is the version of the catalog wire format. A receiver
// rejects catalogs of a format it does not know.
const FormatVersion = 1

// Catalog is what one cluster publishes about itself. Only the owning
// cluster writes it; every receiver verifies its signature.
type Catalog struct {
	// Format is FormatVersion.
	Format int `json:"format"`
	// Cluster is the publishing cluster's name (a DNS label).
	Cluster string `json:"cluster"`
	// Network is the name of the network the cluster's endpoints live on.
	Network string `json:"network,omitempty"`
	// Gateways are the addresses (IP:port) of the cluster's east-west
	// gateway, through which clients on other networks reach its
	// services.
	Gateways []string `json:"gateways,omitempty"`
	// Version increases strictly with every publication by the owner.
	Version uint64 `json:"version"`
	// GeneratedAt is when the owner signed this version.
	GeneratedAt time.Time `json:"generatedAt"`
	// TrustBundleFingerprint is the hex SHA-256 fingerprint of the trust
	// bundle the owner uses (informational; shown by `meshfed cluster list`).
	TrustBundleFingerprint string `json:"trustBundleFingerprint,omitempty"`
	// Services are the exported services, sorted by namespace then name.
	Services []ExportedService `json:"services"`
}

// ExportedService is one service a cluster exports (an MCS ServiceExport).
type ExportedService struct {
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
	Ports     []Port     `json:"ports,omitempty"`
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// FailStatic, when set, overrides the receiver's policy for this
	// service: true keeps its endpoints while the owner is dead or its
	// catalog stale, false withdraws them after the receiver's WithdrawAfter.
	FailStatic *bool `json:"failStatic,omitempty"`
	// ExportedAt is when the owner's ServiceExport was created. MCS
	// conflict resolution gives precedence to the oldest export (ties: the
	// smaller cluster name). Zero: unknown (counts as newest).
	ExportedAt time.Time `json:"exportedAt,omitempty"`
	// Headless is true for a headless service (MCS ServiceImport type
	// Headless instead of ClusterSetIP).
	Headless bool `json:"headless,omitempty"`
}

// Port is a service port.
type Port struct {
	Name string `json:"name,omitempty"`
	Port uint16 `json:"port"`
	// Protocol is e.g. "TCP", "HTTP", "GRPC".
	Protocol string `json:"protocol,omitempty"`
	// TargetPort is the port the endpoints listen on; 0 means Port.
	TargetPort uint16 `json:"targetPort,omitempty"`
}

// Endpoint is one backend address of an exported service.
type Endpoint struct {
	Address string `json:"address"`
	Ready   bool   `json:"ready"`
	Zone    string `json:"zone,omitempty"`
	// Identity is the SPIFFE ID the endpoint serves as.
	Identity string `json:"identity,omitempty"`
}

// Key is "namespace/name".
func (s ExportedService) Key() string { return s.Namespace + "/" + s.Name }

// ValidClusterName reports whether name is usable as a cluster name: a DNS
// label (RFC 1123), at most 63 characters.
func ValidClusterName(name string) bool { return mesh.IsDNS1123Label(name) }

// maxProblems bounds the problems Validate lists; the rest are counted.
const maxProblems = 10

// problems collects at most maxProblems errors and counts the rest.
type problems struct {
	errs []error
	more int
}

func (p *problems) add(err error) {
	if len(p.errs) < maxProblems {
		p.errs = append(p.errs, err)
		return
	}
	p.more++
}

func (p *problems) err() error {
	if p.more > 0 {
		p.errs = append(p.errs, fmt.Errorf("and %d more problems", p.more))
	}
	return errors.Join(p.errs...)
}

// validateHeader checks what the whole catalog stands or falls by: its
// format, its cluster's name and its version.
func (c *Catalog) validateHeader(p *problems) {
	if c.Format != FormatVersion {
		p.add(fmt.Errorf("format %d: want %d", c.Format, FormatVersion))
	}
	if !ValidClusterName(c.Cluster) {
		p.add(fmt.Errorf("cluster name %+q: not a DNS label", c.Cluster))
	}
	if c.Version == 0 {
		p.add(errors.New("version 0: versions start at 1"))
	}
	if len(c.Gateways) > MaxGateways {
		p.add(fmt.Errorf("%d gateway addresses: at most %d", len(c.Gateways), MaxGateways))
	}
}

// MaxGateways bounds the gateway addresses of one catalog.
const MaxGateways = 16

// Validate checks the catalog's own consistency, as its owner does before
// signing. It lists at most ten problems and counts the rest. Receivers
// check only the header this way (Verify); they judge each service on its
// own (mesh.Service.ValidateRemote), so that one bad service costs only
// itself.
func (c *Catalog) Validate() error {
	var p problems
	c.validateHeader(&p)
	for _, g := range c.Gateways {
		if err := mesh.CheckGatewayAddress(g); err != nil {
			p.add(fmt.Errorf("gateway %+q: %w", g, err))
		}
	}
	seen := make(map[string]bool, len(c.Services))
	for _, s := range c.Services {
		if s.Namespace == "" || s.Name == "" {
			p.add(fmt.Errorf("service %+q: namespace and name are required", s.Key()))
			continue
		}
		if seen[s.Key()] {
			p.add(fmt.Errorf("service %+q: listed twice", s.Key()))
		}
		seen[s.Key()] = true
		for _, pt := range s.Ports {
			if pt.Port == 0 {
				p.add(fmt.Errorf("service %+q: port %+q: port number 0", s.Key(), pt.Name))
			}
		}
		for _, e := range s.Endpoints {
			if e.Address == "" {
				p.add(fmt.Errorf("service %+q: endpoint with empty address", s.Key()))
			}
		}
	}
	return p.err()
}

// encode returns the gzip-compressed JSON of c.
func encode(c *Catalog) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	if err := json.NewEncoder(zw).Encode(c); err != nil {
		return nil, fmt.Errorf("catalog %s v%d: encode: %w", c.Cluster, c.Version, err)
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
