package mesh

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
)

// Errors that problems wrap, for errors.Is.
var (
	ErrNoSuchService   = errors.New("no such service")
	ErrNoSuchRoute     = errors.New("no such route")
	ErrInvalidRegex    = errors.New("invalid regular expression")
	ErrInvalidWeights  = errors.New("invalid weights")
	ErrNamespace       = errors.New("namespace mismatch")
	ErrInvalidObject   = errors.New("invalid object")
	ErrDuplicateObject = errors.New("duplicate object")
)

// Validate returns every problem in s, one per object that cannot be served
// (an object may appear more than once if it has several problems). It does
// not change s.
func Validate(s *State) []Problem {
	_, problems := sanitize(s)
	return problems
}

// Sanitize returns a copy of s without the objects Validate reports, and
// those problems. Objects that depend on a removed object (a TrafficTarget
// naming an HTTPRouteGroup with a bad regex) are removed too. s is not
// changed; the result shares unchanged slices with s.
func Sanitize(s State) (State, []Problem) {
	return sanitize(&s)
}

func sanitize(s *State) (State, []Problem) {
	out := *s
	var problems []Problem
	report := func(kind ObjectKind, ns, name string, err error) {
		problems = append(problems, Problem{Kind: kind, Namespace: ns, Name: name, Err: err})
	}
	if s.Settings.TrustDomain == "" {
		report(ObjectSettings, "", s.Settings.MeshName, fmt.Errorf("%w: trust domain is empty", ErrInvalidObject))
	}

	out.Services = filter(s.Services, func(svc Service) error { return validateService(svc) }, func(svc Service, err error) {
		report(ObjectService, svc.Namespace, svc.Name, err)
	})
	services := make(map[NamespacedName]bool, len(out.Services))
	for _, svc := range out.Services {
		services[svc.Key()] = true
	}

	out.HTTPRouteGroups = filter(s.HTTPRouteGroups, validateHTTPRouteGroup, func(g HTTPRouteGroup, err error) {
		report(ObjectHTTPRouteGroup, g.Namespace, g.Name, err)
	})
	groups := make(map[NamespacedName]HTTPRouteGroup, len(out.HTTPRouteGroups))
	for _, g := range out.HTTPRouteGroups {
		groups[NamespacedName{g.Namespace, g.Name}] = g
	}
	tcpRoutes := make(map[NamespacedName]bool, len(s.TCPRoutes))
	for _, r := range s.TCPRoutes {
		tcpRoutes[NamespacedName{r.Namespace, r.Name}] = true
	}

	out.TrafficTargets = filter(s.TrafficTargets, func(t TrafficTarget) error {
		return validateTrafficTarget(t, groups, tcpRoutes)
	}, func(t TrafficTarget, err error) { report(ObjectTrafficTarget, t.Namespace, t.Name, err) })

	roots := map[NamespacedName]string{}
	out.TrafficSplits = filter(s.TrafficSplits, func(ts TrafficSplit) error {
		if err := validateTrafficSplit(s, ts, services); err != nil {
			return err
		}
		root := NamespacedName{ts.Namespace, ts.Service}
		if other, ok := roots[root]; ok {
			return fmt.Errorf("%w: service %s is already split by %s", ErrDuplicateObject, ts.Service, other)
		}
		roots[root] = ts.Name
		return nil
	}, func(ts TrafficSplit, err error) { report(ObjectTrafficSplit, ts.Namespace, ts.Name, err) })
	return out, problems
}

// filter returns the items for which check returns nil, calling bad for
// the others. It returns in unchanged when every item passes.
func filter[T any](in []T, check func(T) error, bad func(T, error)) []T {
	var out []T
	for i, item := range in {
		if err := check(item); err != nil {
			bad(item, err)
			if out == nil {
				out = append(make([]T, 0, len(in)-1), in[:i]...)
			}
			continue
		}
		if out != nil {
			out = append(out, item)
		}
	}
	if out == nil {
		return in
	}
	return out
}

// Validate reports every problem of the service alone, as Validate(State)
// would report it (a service's validity does not depend on other objects).
func (svc Service) Validate() error { return validateService(svc) }

func validateService(svc Service) error {
	var errs []error
	if svc.Namespace == "" || svc.Name == "" {
		errs = append(errs, fmt.Errorf("%w: namespace and name are required", ErrInvalidObject))
	}
	seen := map[uint32]bool{}
	for _, p := range svc.Ports {
		if p.Port == 0 || p.Port > 65535 || p.Target() > 65535 {
			errs = append(errs, fmt.Errorf("%w: port %q: number %d out of range", ErrInvalidObject, p.Name, p.Port))
		}
		if seen[p.Port] {
			errs = append(errs, fmt.Errorf("%w: port %d listed twice", ErrInvalidObject, p.Port))
		}
		seen[p.Port] = true
	}
	for _, id := range svc.Identities {
		if err := id.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, e := range svc.Endpoints {
		if _, err := netip.ParseAddr(e.Address); err != nil {
			errs = append(errs, fmt.Errorf("%w: endpoint %q: %w", ErrInvalidObject, e.Address, err))
		}
		if e.Identity != "" {
			if err := e.Identity.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("endpoint %s: %w", e.Address, err))
			}
		}
	}
	return errors.Join(errs...)
}

func validateHTTPRouteGroup(g HTTPRouteGroup) error {
	var errs []error
	names := map[string]bool{}
	for _, m := range g.Matches {
		if m.Name == "" {
			errs = append(errs, fmt.Errorf("%w: a match has no name", ErrInvalidObject))
		}
		if names[m.Name] {
			errs = append(errs, fmt.Errorf("%w: match %q listed twice", ErrInvalidObject, m.Name))
		}
		names[m.Name] = true
		if _, err := regexp.Compile(m.PathRegex); err != nil {
			errs = append(errs, fmt.Errorf("match %q: pathRegex: %w: %w", m.Name, ErrInvalidRegex, err))
		}
		for h, v := range m.Headers {
			if _, err := regexp.Compile(v); err != nil {
				errs = append(errs, fmt.Errorf("match %q: header %q: %w: %w", m.Name, h, ErrInvalidRegex, err))
			}
		}
	}
	return errors.Join(errs...)
}

func validateTrafficTarget(t TrafficTarget, groups map[NamespacedName]HTTPRouteGroup, tcpRoutes map[NamespacedName]bool) error {
	var errs []error
	if err := t.Destination.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("destination: %w", err))
	} else if t.Destination.Namespace() != t.Namespace {
		errs = append(errs, fmt.Errorf("%w: destination %s is not in the target's namespace %s", ErrNamespace, t.Destination, t.Namespace))
	}
	if len(t.Sources) == 0 {
		errs = append(errs, fmt.Errorf("%w: no sources", ErrInvalidObject))
	}
	for _, src := range t.Sources {
		if err := src.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("source: %w", err))
		}
	}
	if len(t.Rules) == 0 {
		errs = append(errs, fmt.Errorf("%w: no rules", ErrInvalidObject))
	}
	for _, r := range t.Rules {
		key := NamespacedName{t.Namespace, r.Name}
		switch r.Kind {
		case KindHTTPRouteGroup:
			g, ok := groups[key]
			if !ok {
				errs = append(errs, fmt.Errorf("rule %s %s: %w (missing or invalid)", r.Kind, r.Name, ErrNoSuchRoute))
				continue
			}
			for _, name := range r.Matches {
				if !hasMatch(g, name) {
					errs = append(errs, fmt.Errorf("rule %s %s: match %q: %w", r.Kind, r.Name, name, ErrNoSuchRoute))
				}
			}
		case KindTCPRoute:
			if !tcpRoutes[key] {
				errs = append(errs, fmt.Errorf("rule %s %s: %w", r.Kind, r.Name, ErrNoSuchRoute))
			}
		default:
			errs = append(errs, fmt.Errorf("%w: rule %s: unknown kind %q", ErrInvalidObject, r.Name, r.Kind))
		}
	}
	return errors.Join(errs...)
}

func hasMatch(g HTTPRouteGroup, name string) bool {
	for _, m := range g.Matches {
		if m.Name == name {
			return true
		}
	}
	return false
}

func validateTrafficSplit(s *State, ts TrafficSplit, local map[NamespacedName]bool) error {
	var errs []error
	if !local[NamespacedName{ts.Namespace, ts.Service}] {
		errs = append(errs, fmt.Errorf("root service %s: %w in this cluster (clients reach a split by its root Service's name: create the Service here)", ts.Service, ErrNoSuchService))
	}
	if len(ts.Backends) == 0 {
		errs = append(errs, fmt.Errorf("%w: no backends", ErrInvalidWeights))
	}
	var total int64
	seen := map[string]bool{}
	for _, b := range ts.Backends {
		name := b.Service
		if b.Cluster != "" {
			name += "@" + b.Cluster
		}
		if b.Weight < 0 {
			errs = append(errs, fmt.Errorf("backend %s: %w: weight %d is negative", name, ErrInvalidWeights, b.Weight))
		}
		total += b.Weight
		if seen[name] {
			errs = append(errs, fmt.Errorf("%w: backend %s listed twice", ErrInvalidObject, name))
		}
		seen[name] = true
		var ok bool
		if b.Cluster == "" || b.Cluster == s.Settings.ClusterName {
			ok = local[NamespacedName{ts.Namespace, b.Service}]
		} else {
			_, ok = s.RemoteService(b.Cluster, ts.Namespace, b.Service)
		}
		if !ok {
			errs = append(errs, fmt.Errorf("backend %s: %w", name, ErrNoSuchService))
		}
	}
	if len(ts.Backends) > 0 && total <= 0 {
		errs = append(errs, fmt.Errorf("%w: all weights are zero", ErrInvalidWeights))
	}
	return errors.Join(errs...)
}

// IsMissingReference reports whether err (a Problem's, possibly several
// joined) says only that objects it names do not exist (ErrNoSuchService,
// ErrNoSuchRoute), nothing about the object itself. Such a problem may go
// away when the named object is created or another cluster exports it.
func IsMissingReference(err error) bool {
	switch {
	case err == nil:
		return false
	case err == ErrNoSuchService || err == ErrNoSuchRoute:
		return true
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		for _, e := range errs {
			if !IsMissingReference(e) {
				return false
			}
		}
		return len(errs) > 0
	}
	return IsMissingReference(errors.Unwrap(err))
}
