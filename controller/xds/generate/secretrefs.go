package generate

import (
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// SDS references: the Envoy TLS contexts of sidecar listeners (downstream)
// and clusters (upstream) name their certificate and validation context by
// SDS. Every name must resolve to a secret in the same proxy's snapshot,
// which the xDS server adds per proxy (the names are the same for every
// sidecar, SDSIdentitySecret and SDSTrustBundleSecret, so the listeners and
// clusters can be shared by every identity; what a name resolves to is the
// proxy's own identity's secret).

// listenerSecretRefs returns the SDS names of l's filter chains' TLS
// contexts.
func listenerSecretRefs(l *listenerv3.Listener) ([]string, error) {
	var out []string
	chains := l.GetFilterChains()
	if d := l.GetDefaultFilterChain(); d != nil {
		chains = append(chains[:len(chains):len(chains)], d)
	}
	for _, fc := range chains {
		names, err := transportSocketSecretRefs(fc.GetTransportSocket(), true)
		if err != nil {
			return nil, fmt.Errorf("%w: listener %s: filter chain %s: %w", ErrInconsistent, l.GetName(), fc.GetName(), err)
		}
		out = appendNew(out, names...)
	}
	return out, nil
}

// transportSocketSecretRefs returns the SDS names a TLS transport socket
// refers to; downstream says which TLS context it holds.
func transportSocketSecretRefs(ts *corev3.TransportSocket, downstream bool) ([]string, error) {
	if ts.GetName() != tlsTransportName || ts.GetTypedConfig() == nil {
		return nil, nil
	}
	var common *tlsv3.CommonTlsContext
	if downstream {
		d := &tlsv3.DownstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(d); err != nil {
			return nil, err
		}
		common = d.GetCommonTlsContext()
	} else {
		u := &tlsv3.UpstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(u); err != nil {
			return nil, err
		}
		common = u.GetCommonTlsContext()
	}
	var out []string
	for _, c := range common.GetTlsCertificateSdsSecretConfigs() {
		out = appendNew(out, c.GetName())
	}
	if v := common.GetValidationContextSdsSecretConfig(); v != nil {
		out = appendNew(out, v.GetName())
	}
	if v := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); v != nil {
		out = appendNew(out, v.GetName())
	}
	return out, nil
}

func appendNew(out []string, names ...string) []string {
	for _, n := range names {
		found := false
		for _, o := range out {
			if o == n {
				found = true
				break
			}
		}
		if !found {
			out = append(out, n)
		}
	}
	return out
}

// CheckSecretRefs checks that every SDS name in refs is in secrets (the
// names of the secrets in the same proxy's snapshot).
func CheckSecretRefs(refs *Refs, secrets NameSet) error {
	var errs []error
	for _, n := range refs.Secrets {
		if !secrets.Has(n) {
			errs = append(errs, fmt.Errorf("%w: %s: secret %s is missing", ErrInconsistent, refs.Owner, n))
		}
	}
	return errors.Join(errs...)
}
