// Package agent keeps a workload's X.509-SVID on disk for proxyless gRPC: it
// makes a key and CSR in the workload, asks meshfed's issuer for a
// certificate with the workload's projected ServiceAccount token, writes
// certificate.pem, private_key.pem and ca_certificate.pem where grpc-go's
// file_watcher certificate provider reads them, and renews at half the
// certificate's lifetime, re-reading the token each time (the kubelet
// rotates it).
//
// Files are replaced atomically as a set: each version is written into a new
// hidden directory and a "..data" symlink is swapped to it with one rename,
// the way the kubelet updates projected volumes. The three file names are
// symlinks through "..data". A reader never sees a half-written file; a
// reader that opens the certificate before a swap and the key after it sees a
// mismatched pair, which grpc-go's file_watcher skips until its next refresh.
//
// The agent does not serve anything; it only talks to the issuer.
package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/issuer"
)

// Config configures the agent. The string and duration fields map one to one
// to command-line flags.
type Config struct {
	// IssuerAddress is the issuer's host:port
	// (meshfed-controller.meshfed-system.svc:9443 in a cluster).
	IssuerAddress string
	// IssuerID is the SPIFFE ID the issuer must present. Empty means the
	// controller of MeshNamespace (trust.ControllerID); the agent refuses to
	// run when both are empty, so its token never goes to another workload
	// of the trust domain posing as the issuer.
	IssuerID string
	// MeshNamespace is the control plane's namespace, from which the
	// default IssuerID is derived. Default "meshfed-system".
	MeshNamespace string
	// TrustDomain is the federation's SPIFFE trust domain.
	TrustDomain string
	// TokenFile is the projected ServiceAccount token (audience "meshfed").
	// Read again before every request. Ignored when TokenSource is set.
	TokenFile string
	// BundleFile holds the trust bundle used to verify the issuer before the
	// agent has one of its own (the meshfed-ca-bundle ConfigMap, mounted).
	// The bundle from the last response (in OutputDir) is trusted as well.
	BundleFile string
	// OutputDir receives certificate.pem, private_key.pem and
	// ca_certificate.pem.
	OutputDir string
	// RenewFraction is the fraction of the SVID lifetime after which it is
	// renewed (0.5: at half life).
	RenewFraction float64
	// MinRetry and MaxRetry bound the backoff after a failed request.
	MinRetry, MaxRetry time.Duration

	// TokenSource, when set, supplies the token instead of TokenFile.
	TokenSource func(ctx context.Context) (string, error) `json:"-"`
	// OnUpdate, when set, is called from Run's goroutine after each new
	// SVID is on disk. It must not block for long.
	OnUpdate func(*x509svid.SVID, *x509bundle.Bundle) `json:"-"`
	// Log receives renewals and failures; nil discards.
	Log *slog.Logger `json:"-"`
}

// DefaultConfig returns the in-cluster defaults.
func DefaultConfig() Config {
	return Config{
		IssuerAddress: "meshfed-controller.meshfed-system.svc:9443",
		TrustDomain:   "meshfed.local",
		MeshNamespace: "meshfed-system",
		TokenFile:     "/var/run/secrets/meshfed/token",
		BundleFile:    "/var/run/meshfed/bundle/ca.crt",
		OutputDir:     "/var/run/meshfed/certs",
		RenewFraction: 0.5,
		MinRetry:      time.Second,
		MaxRetry:      time.Minute,
	}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.IssuerAddress == "" {
		errs = append(errs, errors.New("issuer address is empty"))
	}
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		errs = append(errs, fmt.Errorf("trust domain %q: %w", c.TrustDomain, err))
	}
	if !td.IsZero() {
		if _, err := c.issuerID(td); err != nil {
			errs = append(errs, err)
		}
	}
	if c.TokenFile == "" && c.TokenSource == nil {
		errs = append(errs, errors.New("token file is empty and no token source is set"))
	}
	if c.BundleFile == "" {
		errs = append(errs, errors.New("bundle file is empty"))
	}
	if c.OutputDir == "" {
		errs = append(errs, errors.New("output directory is empty"))
	}
	if c.RenewFraction <= 0 || c.RenewFraction >= 1 {
		errs = append(errs, fmt.Errorf("renew fraction %v: must be between 0 and 1", c.RenewFraction))
	}
	if c.MinRetry <= 0 || c.MaxRetry < c.MinRetry {
		errs = append(errs, fmt.Errorf("retry %v..%v: must be positive and ordered", c.MinRetry, c.MaxRetry))
	}
	return errors.Join(errs...)
}

// Run fetches an SVID, writes it and renews it until ctx ends. Failures are
// retried with backoff; Run returns an error only for an invalid Config, and
// nil once ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	backoff := cfg.MinRetry
	for {
		fetched := time.Now()
		svid, bundle, err := FetchOnce(ctx, cfg)
		var wait time.Duration
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("agent: SVID request failed", "err", err, "retry", backoff)
			wait, backoff = backoff, min(2*backoff, cfg.MaxRetry)
		} else {
			backoff = cfg.MinRetry
			if err := WriteFiles(cfg.OutputDir, svid, bundle); err != nil {
				log.Error("agent: writing SVID failed", "dir", cfg.OutputDir, "err", err)
				wait = cfg.MinRetry
			} else {
				leaf := svid.Certificates[0]
				// Measured from the request, not NotBefore, which the CA backdates.
				wait = time.Until(fetched.Add(time.Duration(float64(leaf.NotAfter.Sub(fetched)) * cfg.RenewFraction)))
				log.Info("agent: SVID written", "id", svid.ID, "expires", leaf.NotAfter, "renew_in", wait)
				if cfg.OnUpdate != nil {
					cfg.OnUpdate(svid, bundle)
				}
			}
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// FetchOnce makes a key and CSR, sends them with the current token and
// returns the verified SVID and the trust bundle from the response.
func FetchOnce(ctx context.Context, cfg Config) (*x509svid.SVID, *x509bundle.Bundle, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: trust domain: %w", err)
	}
	issuerID, err := cfg.issuerID(td)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	token, err := readToken(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	trusted, err := trustedBundle(td, cfg)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: generate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: create CSR: %w", err)
	}
	cc, err := issuer.Dial(cfg.IssuerAddress, trusted, td, issuerID)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	defer cc.Close()
	resp, err := issuer.NewClient(cc).Sign(ctx, token, csr)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: issuer %s: %w", cfg.IssuerAddress, err)
	}
	chain, roots, err := resp.Parse()
	if err != nil {
		return nil, nil, fmt.Errorf("agent: issuer %s: %w", cfg.IssuerAddress, err)
	}
	bundle := x509bundle.FromX509Authorities(td, roots)
	id, _, err := x509svid.Verify(chain, bundle)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: issuer %s returned an SVID that does not verify: %w", cfg.IssuerAddress, err)
	}
	if !id.MemberOf(td) {
		return nil, nil, fmt.Errorf("agent: issuer %s returned an SVID for %s, outside trust domain %q", cfg.IssuerAddress, id, td.Name())
	}
	if !keyMatchesLeaf(key, chain[0]) {
		return nil, nil, fmt.Errorf("agent: issuer %s returned a certificate for another key", cfg.IssuerAddress)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, bundle, nil
}

// issuerID is the one SPIFFE ID the issuer may present: IssuerID, or the
// controller of MeshNamespace. Never empty: an empty ID would let any SVID of
// the trust domain pose as the issuer and receive the token.
func (c Config) issuerID(td spiffeid.TrustDomain) (spiffeid.ID, error) {
	if c.IssuerID == "" {
		if c.MeshNamespace == "" {
			return spiffeid.ID{}, errors.New("issuer id is empty and no mesh namespace to derive it from: set the issuer's SPIFFE ID (the controller's, spiffe://<trust-domain>/ns/<mesh-namespace>/sa/meshfed-controller)")
		}
		id, err := trust.ControllerID(td, c.MeshNamespace)
		if err != nil {
			return spiffeid.ID{}, fmt.Errorf("issuer id from mesh namespace %q: %w", c.MeshNamespace, err)
		}
		return id, nil
	}
	id, err := spiffeid.FromString(c.IssuerID)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("issuer id %q: %w", c.IssuerID, err)
	}
	if !id.MemberOf(td) {
		return spiffeid.ID{}, fmt.Errorf("issuer id %q: not in trust domain %q", c.IssuerID, td.Name())
	}
	return id, nil
}

func keyMatchesLeaf(key *ecdsa.PrivateKey, leaf *x509.Certificate) bool {
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	return ok && key.PublicKey.Equal(pub)
}

func readToken(ctx context.Context, cfg Config) (string, error) {
	if cfg.TokenSource != nil {
		t, err := cfg.TokenSource(ctx)
		if err != nil {
			return "", fmt.Errorf("agent: token source: %w", err)
		}
		return t, nil
	}
	b, err := os.ReadFile(cfg.TokenFile)
	if err != nil {
		return "", fmt.Errorf("agent: token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("agent: token file %s is empty", cfg.TokenFile)
	}
	return t, nil
}

// trustedBundle is the bootstrap bundle plus the one last written, so the
// agent keeps reaching the issuer across a root rotation whichever of the
// two was updated first.
func trustedBundle(td spiffeid.TrustDomain, cfg Config) (*x509bundle.Bundle, error) {
	var bundles []*x509bundle.Bundle
	var errs []error
	for _, path := range []string{cfg.BundleFile, cfg.OutputDir + "/" + CACertificateFile} {
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		parsed, err := ca.ParseBundle(td, b, time.Now())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		bundles = append(bundles, parsed)
	}
	if len(bundles) == 0 {
		return nil, fmt.Errorf("agent: no trust bundle to verify the issuer: %w", errors.Join(errs...))
	}
	return ca.Union(bundles...)
}

// IssuerIdentity is the SPIFFE ID the issuer must present (IssuerID, or
// the controller of MeshNamespace): the controller, which also serves xDS.
func (c Config) IssuerIdentity() (spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("trust domain %q: %w", c.TrustDomain, err)
	}
	return c.issuerID(td)
}
