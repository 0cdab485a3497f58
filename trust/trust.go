// Package trust owns meshfed's workload identity: the SPIFFE IDs meshfed gives
// to Kubernetes ServiceAccounts and the constants shared by its subpackages.
//
// The work is split into small packages:
//
//   - trust/ca: the federation root, each cluster's intermediate CA, SVID
//     signing, trust bundles and the Kubernetes Secrets that hold them.
//   - trust/issuer: the authenticated CSR endpoint (gRPC over TLS) that checks
//     a ServiceAccount token with TokenReview and signs only for that identity.
//   - trust/agent: the workload-side client that keeps certificate files for
//     grpc-go's file_watcher certificate provider up to date.
//   - trust/sds: Envoy SDS Secret resources for one proxy identity.
//   - trust/mtls: crypto/tls configurations that authenticate peers by SPIFFE
//     trust domain, and a rotating in-memory SVID/bundle source.
//
// This package does not talk to the API server or the network.
package trust

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultAudience is the audience a projected ServiceAccount token must carry
// to be accepted by meshfed's issuer. Tokens for the API server's default
// audience are refused, so a token stolen from elsewhere cannot buy an SVID.
const DefaultAudience = "meshfed"

// DefaultTrustDomain is the trust domain a federation uses unless the user
// names another one at install time.
const DefaultTrustDomain = "meshfed.local"

// ControllerServiceAccount is the ServiceAccount meshfed's controller runs
// as; its SVID (ControllerID) is the identity the issuer and the xDS server
// present to workloads.
const ControllerServiceAccount = "meshfed-controller"

// ControllerID returns the SPIFFE ID of the controller of the mesh whose
// control plane runs in namespace: spiffe://<td>/ns/<namespace>/sa/meshfed-controller.
// Agents require the issuer to present exactly this ID.
func ControllerID(td spiffeid.TrustDomain, namespace string) (spiffeid.ID, error) {
	return WorkloadID(td, namespace, ControllerServiceAccount)
}

// WorkloadID returns spiffe://<td>/ns/<namespace>/sa/<serviceAccount>.
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, errors.New("workload identity: empty trust domain")
	}
	if namespace == "" || serviceAccount == "" {
		return spiffeid.ID{}, fmt.Errorf("workload identity %q/%q: namespace and service account are required", namespace, serviceAccount)
	}
	id, err := spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("workload identity %s/%s: %w", namespace, serviceAccount, err)
	}
	return id, nil
}

// ParseWorkloadID returns the namespace and service account named by a
// workload SPIFFE ID of the form spiffe://<td>/ns/<ns>/sa/<sa>.
func ParseWorkloadID(id spiffeid.ID) (namespace, serviceAccount string, err error) {
	parts := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" {
		return "", "", fmt.Errorf("spiffe id %s: not a workload identity of the form spiffe://<td>/ns/<ns>/sa/<sa>", id)
	}
	return parts[1], parts[3], nil
}
