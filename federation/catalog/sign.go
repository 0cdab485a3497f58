package catalog

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Rejection reasons. Verify wraps exactly one of them; Reason maps an error
// to a short label for metrics.
var (
	ErrDecode    = errors.New("catalog does not decode")
	ErrOversize  = errors.New("catalog over the size limit")
	ErrSignature = errors.New("catalog signature invalid")
	ErrChain     = errors.New("catalog signer does not chain to the trust roots")
	ErrIdentity  = errors.New("catalog signer does not name the catalog's cluster")
	ErrInvalid   = errors.New("catalog content invalid")
)

// Reason returns a metric label for a Verify error: decode, oversize,
// signature, chain, identity, invalid or other.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrOversize):
		return "oversize"
	case errors.Is(err, ErrDecode):
		return "decode"
	case errors.Is(err, ErrSignature):
		return "signature"
	case errors.Is(err, ErrChain):
		return "chain"
	case errors.Is(err, ErrIdentity):
		return "identity"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	}
	return "other"
}

// ClusterID is the SPIFFE ID that a catalog signer for cluster must carry as
// its only URI SAN: spiffe://<trustDomain>/meshfed/cluster/<cluster>.
func ClusterID(trustDomain, cluster string) string {
	return "spiffe://" + trustDomain + "/meshfed/cluster/" + cluster
}

var magic = [4]byte{'M', 'F', 'S', 'C'}

// Bounds of the envelope header: a signer's chain is a leaf, its cluster's
// intermediate and perhaps a root, a few KiB.
const (
	maxHeaderBytes = 64 << 10
	maxChain       = 8
)

// header precedes the compressed catalog in a signed envelope. Cluster and
// Version repeat the catalog's own so that a receiver can skip an old
// version before inflating it; after inflating they must match.
type header struct {
	Cluster string   `json:"cluster"`
	Version uint64   `json:"version"`
	Chain   [][]byte `json:"chain"` // DER, leaf first
	Sig     []byte   `json:"sig"`   // over SHA-256 of the payload
}

// Signed is a signed, encoded catalog as it travels between members.
type Signed struct {
	Cluster string
	Version uint64
	// Digest is the SHA-256 of the compressed payload: two envelopes with
	// the same digest carry the same catalog.
	Digest [32]byte
	// Bytes is the envelope: magic, format, header length, header, payload.
	Bytes []byte
}

// ShortDigest is the first 8 bytes of Digest in hex.
func (s *Signed) ShortDigest() string { return hex.EncodeToString(s.Digest[:8]) }

// Sign encodes c and signs it with key, whose certificate is chain[0].
func Sign(c *Catalog, key crypto.Signer, chain []*x509.Certificate) (*Signed, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("catalog %s v%d: %w: %w", c.Cluster, c.Version, ErrInvalid, err)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("catalog %s: empty certificate chain", c.Cluster)
	}
	payload, err := encode(c)
	if err != nil {
		return nil, err
	}
	return seal(c.Cluster, c.Version, payload, key, chain)
}

// seal signs an encoded catalog and wraps it in an envelope.
func seal(cluster string, version uint64, payload []byte, key crypto.Signer, chain []*x509.Certificate) (*Signed, error) {
	digest := sha256.Sum256(payload)
	sig, err := signDigest(key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("catalog %s v%d: sign: %w", cluster, version, err)
	}
	h := header{Cluster: cluster, Version: version, Sig: sig}
	for _, cert := range chain {
		h.Chain = append(h.Chain, cert.Raw)
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	return &Signed{Cluster: cluster, Version: version, Digest: digest, Bytes: frame(magic, hb, payload)}, nil
}

// frame is the wire form of an envelope or a delta: its magic, the format
// version, the header's length (4 bytes, big-endian), the header, the
// payload.
func frame(magic [4]byte, header, payload []byte) []byte {
	b := make([]byte, 0, 9+len(header)+len(payload))
	b = append(b, magic[:]...)
	b = append(b, FormatVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(header)))
	b = append(b, header...)
	return append(b, payload...)
}

func signDigest(key crypto.Signer, digest []byte) ([]byte, error) {
	switch key.Public().(type) {
	case ed25519.PublicKey:
		// Ed25519 signs the message itself; the message is the digest.
		return key.Sign(rand.Reader, digest, crypto.Hash(0))
	case *rsa.PublicKey:
		return key.Sign(rand.Reader, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	default:
		return key.Sign(rand.Reader, digest, crypto.SHA256)
	}
}

func verifyDigest(pub crypto.PublicKey, digest, sig []byte) bool {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(k, digest, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPSS(k, crypto.SHA256, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest, sig)
	}
	return false
}

// Peek reads the envelope's claimed cluster and version without verifying
// anything; use it only to decide whether Verify is worth running.
func Peek(b []byte) (cluster string, version uint64, err error) {
	h, _, err := split(b)
	if err != nil {
		return "", 0, err
	}
	return h.Cluster, h.Version, nil
}

func split(b []byte) (*header, []byte, error) {
	if len(b) < 9 || !bytes.Equal(b[:4], magic[:]) {
		return nil, nil, fmt.Errorf("%w: no envelope magic", ErrDecode)
	}
	if b[4] != FormatVersion {
		return nil, nil, fmt.Errorf("%w: envelope format %d", ErrDecode, b[4])
	}
	n := binary.BigEndian.Uint32(b[5:9])
	if uint64(n) > uint64(len(b)-9) {
		return nil, nil, fmt.Errorf("%w: header length %d past end", ErrDecode, n)
	}
	if n > maxHeaderBytes {
		return nil, nil, fmt.Errorf("%w: header of %d bytes, limit %d", ErrOversize, n, maxHeaderBytes)
	}
	var h header
	if err := json.Unmarshal(b[9:9+n], &h); err != nil {
		return nil, nil, fmt.Errorf("%w: header: %v", ErrDecode, err)
	}
	if !ValidClusterName(h.Cluster) {
		return nil, nil, fmt.Errorf("%w: header names cluster %+q, not a DNS label", ErrDecode, h.Cluster)
	}
	if len(h.Chain) > maxChain {
		return nil, nil, fmt.Errorf("%w: %d certificates, limit %d", ErrOversize, len(h.Chain), maxChain)
	}
	return &h, b[9+n:], nil
}

// VerifyOptions say what a receiver trusts.
type VerifyOptions struct {
	// Roots are the federation's trust roots.
	Roots *x509.CertPool
	// TrustDomain is the federation's SPIFFE trust domain.
	TrustDomain string
	// MaxBytes is the largest envelope accepted, in bytes.
	MaxBytes int
	// MaxInflatedBytes is the largest catalog JSON accepted after
	// decompression, in bytes (zero: Limits). Whatever it says, a
	// catalog may inflate to at most InflateRatio times MaxBytes.
	MaxInflatedBytes int64
	// Limits bound the decoding of the catalog (zero fields: DefaultLimits).
	Limits Limits
	// Now is the time certificates are checked at (zero: time.Now()).
	Now time.Time
}

// ClusterCACommonName is the subject common name of a cluster's
// intermediate CA, as trust/ca issues it. A catalog-signing certificate
// must be issued by the intermediate of the cluster it names (or by a root
// directly): every cluster holds an intermediate that could mint a
// certificate with any URI SAN, so the chain, not the leaf alone, says who
// may speak for a cluster.
func ClusterCACommonName(cluster string) string { return "meshfed intermediate CA " + cluster }

// issuedForCluster reports whether some verified chain has the leaf issued
// directly by a root, or by cluster's own intermediate.
func issuedForCluster(chains [][]*x509.Certificate, cluster string) bool {
	for _, ch := range chains {
		if len(ch) == 2 || (len(ch) > 2 && ch[1].Subject.CommonName == ClusterCACommonName(cluster)) {
			return true
		}
	}
	return false
}

// limits returns the decoding limits: Limits with defaults, the inflated
// size lowered to MaxInflatedBytes and to InflateRatio times MaxBytes.
func (o VerifyOptions) limits() Limits {
	lim := o.Limits.withDefaults()
	if o.MaxInflatedBytes > 0 && o.Limits.MaxInflatedBytes <= 0 {
		lim.MaxInflatedBytes = o.MaxInflatedBytes
	}
	if o.MaxBytes > 0 {
		lim.MaxInflatedBytes = min(lim.MaxInflatedBytes, InflateRatio*int64(o.MaxBytes))
	}
	return lim
}

// SignDigest signs a SHA-256 digest with a cluster's catalog-signing key,
// as catalogs are signed; VerifySigner checks such a signature.
func SignDigest(key crypto.Signer, digest []byte) ([]byte, error) { return signDigest(key, digest) }

// VerifySigner checks that sig is a signature of digest by the leaf of
// chain (DER, leaf first), that the leaf chains to roots at now (zero:
// time.Now()), was issued by cluster's own intermediate CA (or by a root)
// and names exactly cluster's catalog identity. It is the one check of who
// may speak for a cluster, for catalogs and for everything else a cluster
// signs about itself. Its errors wrap ErrDecode, ErrSignature, ErrChain or
// ErrIdentity.
func VerifySigner(digest, sig []byte, chain [][]byte, cluster string, roots *x509.CertPool, trustDomain string, now time.Time) error {
	if len(chain) == 0 {
		return fmt.Errorf("%w: no certificate", ErrChain)
	}
	certs := make([]*x509.Certificate, 0, len(chain))
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("%w: certificate: %v", ErrDecode, err)
		}
		certs = append(certs, c)
	}
	leaf := certs[0]
	if !verifyDigest(leaf.PublicKey, digest, sig) {
		return ErrSignature
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if now.IsZero() {
		now = time.Now()
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrChain, err)
	}
	if !issuedForCluster(chains, cluster) {
		return fmt.Errorf("%w: signer's certificate was not issued by %s's intermediate CA (%q) or by a root",
			ErrIdentity, cluster, ClusterCACommonName(cluster))
	}
	want := ClusterID(trustDomain, cluster)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		got := make([]string, 0, len(leaf.URIs))
		for _, u := range leaf.URIs {
			got = append(got, u.String())
		}
		return fmt.Errorf("%w: signer has URI SANs %v, want exactly %s", ErrIdentity, got, want)
	}
	return nil
}

// Verify checks an envelope: size, signature, chain to opts.Roots, that the
// leaf names the cluster the catalog claims and was issued by that
// cluster's intermediate. Only then does it inflate and decode the catalog,
// within opts' limits (see Limits), and check its header (format, cluster,
// version). It does not judge the services: each is for the receiver to
// check on its own (mesh.Service.ValidateRemote), so that one bad service
// is skipped rather than the whole catalog. It returns the catalog and its
// Signed form, or an error wrapping one of the Err* reasons.
func Verify(b []byte, opts VerifyOptions) (*Catalog, *Signed, error) {
	if opts.MaxBytes > 0 && len(b) > opts.MaxBytes {
		return nil, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrOversize, len(b), opts.MaxBytes)
	}
	h, payload, err := split(b)
	if err != nil {
		return nil, nil, err
	}
	digest := sha256.Sum256(payload)
	if err := VerifySigner(digest[:], h.Sig, h.Chain, h.Cluster, opts.Roots, opts.TrustDomain, opts.Now); err != nil {
		return nil, nil, fmt.Errorf("catalog %s v%d: %w", h.Cluster, h.Version, err)
	}
	c, err := decode(payload, opts.limits())
	if err != nil {
		return nil, nil, fmt.Errorf("catalog %s v%d: %w", h.Cluster, h.Version, err)
	}
	if c.Cluster != h.Cluster || c.Version != h.Version {
		return nil, nil, fmt.Errorf("catalog %s v%d: %w: envelope says %+q v%d", h.Cluster, h.Version, ErrIdentity, c.Cluster, c.Version)
	}
	var p problems
	c.validateHeader(&p)
	if err := p.err(); err != nil {
		return nil, nil, fmt.Errorf("catalog %s v%d: %w: %w", h.Cluster, h.Version, ErrInvalid, err)
	}
	return c, &Signed{Cluster: c.Cluster, Version: c.Version, Digest: digest, Bytes: b}, nil
}
