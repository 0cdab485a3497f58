package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
)

// SecretSource gives the server the SDS secrets of an identity. cmd wires
// trust/ to it (AuthoritySecrets).
//
// Secrets returns what Envoy sidecars authenticated as id are served: id's
// own certificate chain and private key, named generate.SDSIdentitySecret,
// and the trust bundle's validation context, named
// generate.SDSTrustBundleSecret (both *tlsv3.Secret). It must never return
// a key for any identity other than id. It should return the very same
// resources while they are current (cache them per identity), and new ones
// when the certificate is due for renewal or the CA or bundle changed: the
// server pushes a proxy its secrets whenever their content differs from
// what it last published.
//
// Secrets is called from the server's one secrets goroutine, never under
// the server's lock; it may block while it issues a certificate and must
// not call back into the Server.
type SecretSource interface {
	Secrets(id mesh.Identity) ([]types.Resource, error)
}

// sdsNames are the only secret names a sidecar is served.
var sdsNames = map[string]bool{generate.SDSIdentitySecret: true, generate.SDSTrustBundleSecret: true}

// RefreshSecrets makes the server re-read the secrets of every connected
// sidecar identity now rather than at the next Config.SecretCheckInterval
// tick; call it after rotating the CA or the trust bundle. It does not
// block; the refresh happens on the secrets goroutine (while Run runs).
func (s *Server) RefreshSecrets() {
	s.secretsMu.Lock()
	s.secretsAll = true
	s.secretsMu.Unlock()
	s.wakeSecrets()
}

// wantSecrets asks the secrets goroutine to fetch id's secrets (a new
// sidecar key).
func (s *Server) wantSecrets(id mesh.Identity) {
	if s.cfg.Secrets == nil {
		s.cfg.Logger.Warn("xds: no secret source; sidecar proxies are not served", "identity", id)
		return
	}
	s.secretsMu.Lock()
	s.secretsPending[id] = true
	s.secretsMu.Unlock()
	s.wakeSecrets()
}

func (s *Server) wakeSecrets() {
	select {
	case s.secretsWake <- struct{}{}:
	default:
	}
}

// runSecrets owns calls to the SecretSource: it fetches the secrets of new
// sidecar identities when woken and re-reads every connected sidecar
// identity's secrets each SecretCheckInterval (renewal, CA rotation). It
// returns when ctx ends.
func (s *Server) runSecrets(ctx context.Context) {
	tick := time.NewTicker(s.cfg.SecretCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.secretsWake:
		case <-tick.C:
			s.secretsMu.Lock()
			s.secretsAll = true
			s.secretsMu.Unlock()
		}
		s.refreshSecrets()
	}
}

// refreshSecrets fetches the secrets of the pending identities (or of every
// connected sidecar identity) and republishes the snapshots whose secrets
// changed.
func (s *Server) refreshSecrets() {
	s.secretsMu.Lock()
	pending, all := s.secretsPending, s.secretsAll
	s.secretsPending, s.secretsAll = map[mesh.Identity]bool{}, false
	s.secretsMu.Unlock()
	if all {
		s.mu.Lock()
		for key := range s.keys {
			if key.kind == KindSidecar {
				pending[key.id] = true
			}
		}
		s.mu.Unlock()
	}
	for id := range pending {
		res, err := s.cfg.Secrets.Secrets(id)
		if err == nil {
			err = checkSecrets(res)
		}
		if err != nil {
			s.metrics.secretErrors.Inc()
			s.cfg.Logger.Error("xds: cannot get secrets; the identity's sidecars keep their last ones", "identity", id, "err", err)
			continue
		}
		s.setSecrets(proxyKey{id: id, kind: KindSidecar}, res)
	}
}

// checkSecrets checks that res is what a SecretSource must return: valid
// secrets with the two SDS names.
func checkSecrets(res []types.Resource) error {
	if err := generate.Validate(res); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, r := range res {
		name := cachev3.GetResourceName(r)
		if !sdsNames[name] || seen[name] {
			return fmt.Errorf("secret source returned secret %q (want exactly %s and %s)", name, generate.SDSIdentitySecret, generate.SDSTrustBundleSecret)
		}
		seen[name] = true
	}
	if len(seen) != len(sdsNames) {
		return errors.New("secret source did not return both " + generate.SDSIdentitySecret + " and " + generate.SDSTrustBundleSecret)
	}
	return nil
}

// setSecrets makes res key's secrets and republishes its snapshot if they
// changed.
func (s *Server) setSecrets(key proxyKey, res []types.Resource) {
	defer s.flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.keys[key]
	if ks == nil || !s.builder.setSecrets(ks, res) || s.builder.ix == nil {
		return
	}
	_ = s.publish(key, ks) // logged
}

// setSecrets records res as ks's secrets; it reports whether they differ
// from the last ones.
func (b *builder) setSecrets(ks *keyState, res []types.Resource) bool {
	if ks.hasSecrets && sameResources(ks.secrets.items, res) {
		return false
	}
	ks.hasSecrets = true
	return b.setVersioned(&ks.secrets, res, hashResources(res))
}

func sameResources(a, b []types.Resource) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// refusedSecrets counts and logs the secret names a proxy asked for that it
// will never be served: another identity's, or any secret for a proxyless
// client (it reads its SVID from the agent's files). Called under s.mu with
// the names new to the key.
func (s *Server) refusedSecrets(key proxyKey, names map[string]struct{}, ks *keyState) {
	for n := range names {
		if ks.subs[types.Secret][n] || (key.kind == KindSidecar && sdsNames[n]) {
			continue
		}
		s.metrics.refusedSecrets.Inc()
		s.cfg.Logger.Warn("xds: proxy asked for a secret it is not served", "proxy", key.String(), "secret", n)
	}
}

// secretsPart returns the secrets of a sidecar snapshot and checks that
// every SDS name its listeners and clusters use (the shared ones in shared,
// its own in extra) resolves to one of them.
func (b *builder) checkSecretRefs(key proxyKey, shared *sharedKind, extra typeSet, ks *keyState) error {
	have := generate.ItemSet(ks.secrets.res.Items)
	var errs []error
	for i := range shared.secretRefs {
		if err := generate.CheckSecretRefs(&shared.secretRefs[i], have); err != nil {
			errs = append(errs, err)
		}
	}
	for _, t := range []types.ResponseType{types.Listener, types.Cluster} {
		for _, r := range extra[t] {
			refs, err := generate.ReferencesOf(r, "")
			if err == nil {
				err = generate.CheckSecretRefs(&refs, have)
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("proxy %s: %w", key, err)
	}
	return nil
}
