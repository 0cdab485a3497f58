package mesh

import (
	"maps"
	"slices"
)

// Equal reports whether e and o are the same endpoint.
func (e Endpoint) Equal(o Endpoint) bool {
	return e.Address == o.Address && e.Cluster == o.Cluster && e.Network == o.Network &&
		e.Locality == o.Locality && e.Ready == o.Ready && e.Terminating == o.Terminating &&
		e.Identity == o.Identity && e.Pod == o.Pod && e.Stands == o.Stands && maps.Equal(e.TargetPorts, o.TargetPorts)
}

// SameEndpoints reports whether a and b hold the same endpoints in the same
// order. It is cheap when they share their backing array (a producer that
// reuses an unchanged service's slice makes the comparison O(1)).
func SameEndpoints(a, b []Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// SameShape reports whether a and b are the same service apart from its
// endpoints' addresses, ports, health and locality: same name, cluster,
// ports and declared identities, and the same endpoint identities in the
// same order of first appearance (so ServerIdentities is the same).
// Consumers use it to tell an endpoint-only change from one that changes
// what clients are configured with.
func (s *Service) SameShape(o *Service) bool {
	if s.Namespace != o.Namespace || s.Name != o.Name || s.Cluster != o.Cluster ||
		!slices.Equal(s.Ports, o.Ports) || !slices.Equal(s.Identities, o.Identities) {
		return false
	}
	if SameEndpoints(s.Endpoints, o.Endpoints) {
		return true
	}
	// Whether a service has any ready endpoint decides its weight as a
	// split backend (an empty backend gets none of the traffic), so a
	// change of it is a change of shape.
	return s.HasReady() == o.HasReady() && slices.Equal(s.EndpointIdentities(), o.EndpointIdentities())
}

// HasReady reports whether any endpoint of the service is ready.
func (s *Service) HasReady() bool {
	for _, e := range s.Endpoints {
		if e.Ready {
			return true
		}
	}
	return false
}

// EndpointIdentities returns the distinct identities of the endpoints in
// order of first appearance.
func (s *Service) EndpointIdentities() []Identity {
	var out []Identity
	for _, e := range s.Endpoints {
		if e.Identity != "" && !slices.Contains(out, e.Identity) {
			out = append(out, e.Identity)
		}
	}
	return out
}
