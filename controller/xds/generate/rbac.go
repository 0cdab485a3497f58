package generate

import (
	"sort"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/meshfed/meshfed/mesh"
)

// PermissivePolicyName names the policy that admits every authenticated
// peer of a meshed namespace in permissive mode.
const PermissivePolicyName = "meshfed-permissive"

// accessRules returns the RBAC rules for traffic to the workloads of dest:
// an ALLOW list with one policy per TrafficTarget naming dest (principals by
// URI SAN = source identity, permissions from the rule's routes) — so an
// empty list denies everything — plus, in permissive mode, a policy that
// admits any peer whose SPIFFE ID is in a meshed namespace (never the whole
// trust domain: a Pod outside the mesh, in kube-system say, is not admitted
// even if it holds an SVID).
func accessRules(ix *Index, dest mesh.Identity) *rbacv3.RBAC {
	policies := map[string]*rbacv3.Policy{}
	for _, t := range ix.targets[dest] {
		policies[t.Namespace+"/"+t.Name] = &rbacv3.Policy{
			Principals:  principals(t.Sources),
			Permissions: permissions(ix, t),
		}
	}
	if ix.State.Settings.PermissiveTrafficPolicy {
		policies[PermissivePolicyName] = &rbacv3.Policy{
			Principals:  meshedPrincipals(&ix.State),
			Permissions: []*rbacv3.Permission{anyPermission()},
		}
	}
	return &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: policies}
}

// meshedPrincipals matches the identities of meshed namespaces:
// spiffe://<td>/ns/<ns>/sa/ for each local meshed namespace and each
// namespace another cluster exports services from. With none it matches
// nobody (RBAC needs at least one principal).
func meshedPrincipals(s *mesh.State) []*rbacv3.Principal {
	set := map[string]bool{}
	add := func(ns string) {
		// Only namespace names can be identity segments; anything else
		// (from another cluster's catalog) would widen the prefix.
		if mesh.IsDNS1123Label(ns) {
			set[ns] = true
		}
	}
	for _, ns := range s.MeshedNamespaces {
		add(ns)
	}
	for _, cat := range s.Remote {
		for _, svc := range cat.Services {
			add(svc.Namespace)
		}
	}
	namespaces := make([]string, 0, len(set))
	for ns := range set {
		namespaces = append(namespaces, ns)
	}
	sort.Strings(namespaces)
	prefix := mesh.TrustDomainPrefix(s.Settings.TrustDomain)
	out := make([]*rbacv3.Principal, 0, len(namespaces))
	for _, ns := range namespaces {
		out = append(out, authenticated(&matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix + "ns/" + ns + "/sa/"},
		}))
	}
	if len(out) == 0 {
		out = append(out, &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}}})
	}
	return out
}

func authenticated(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
		Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m},
	}}
}

func principals(sources []mesh.Identity) []*rbacv3.Principal {
	ids := append([]mesh.Identity(nil), sources...)
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	out := make([]*rbacv3.Principal, 0, len(ids))
	for _, id := range ids {
		out = append(out, authenticated(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: string(id)}}))
	}
	return out
}

func anyPermission() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}

func orPermissions(ps []*rbacv3.Permission) *rbacv3.Permission {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func andPermissions(ps []*rbacv3.Permission) *rbacv3.Permission {
	switch len(ps) {
	case 0:
		return anyPermission()
	case 1:
		return ps[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func regexMatcher(re string) *matcherv3.RegexMatcher {
	return &matcherv3.RegexMatcher{Regex: re}
}

// permissions turns a TrafficTarget's rules into RBAC permissions (OR'd).
func permissions(ix *Index, t *mesh.TrafficTarget) []*rbacv3.Permission {
	var out []*rbacv3.Permission
	for _, r := range t.Rules {
		key := mesh.NamespacedName{Namespace: t.Namespace, Name: r.Name}
		switch r.Kind {
		case mesh.KindHTTPRouteGroup:
			g := ix.groups[key]
			want := map[string]bool{}
			for _, m := range r.Matches {
				want[m] = true
			}
			for _, m := range g.Matches {
				if len(want) > 0 && !want[m.Name] {
					continue
				}
				out = append(out, httpMatchPermission(m))
			}
		case mesh.KindTCPRoute:
			route := ix.tcp[key]
			if len(route.Ports) == 0 {
				out = append(out, anyPermission())
				continue
			}
			var ports []*rbacv3.Permission
			for _, p := range route.Ports {
				ports = append(ports, &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: p}})
			}
			out = append(out, orPermissions(ports))
		}
	}
	if len(out) == 0 {
		// Every rule selected nothing: the target allows nothing. RBAC
		// needs at least one permission, so use one that never matches.
		out = append(out, &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: anyPermission()}})
	}
	return out
}

// httpMatchPermission is path AND method AND every header of one match.
func httpMatchPermission(m mesh.HTTPMatch) *rbacv3.Permission {
	var and []*rbacv3.Permission
	if m.PathRegex != "" && m.PathRegex != ".*" {
		and = append(and, &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regexMatcher(m.PathRegex)},
			}},
		}}})
	}
	var methods []*rbacv3.Permission
	for _, method := range m.Methods {
		if method == "*" {
			methods = nil
			break
		}
		methods = append(methods, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
			Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: method},
		}}})
	}
	if len(methods) > 0 {
		and = append(and, orPermissions(methods))
	}
	names := make([]string, 0, len(m.Headers))
	for h := range m.Headers {
		names = append(names, h)
	}
	sort.Strings(names)
	for _, h := range names {
		and = append(and, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
			Name: h, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regexMatcher(m.Headers[h])},
			}},
		}}})
	}
	return andPermissions(and)
}
