package catalog

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// A Head is what an owner signs about one version of its catalog: the
// cluster, the version and the content digest of the whole catalog (see
// ContentDigest). Whoever relays a catalog or a delta sends the owner's
// signed head with it; the receiver rebuilds the catalog, recomputes the
// digest and accepts only if it matches, so a relay cannot change a byte
// of what the owner published. docs/decisions/0004-catalog-deltas-and-relays.md.
type Head struct {
	Cluster string `json:"c"`
	Version uint64 `json:"v"`
	// Digest is ContentDigest of the catalog at Version.
	Digest []byte `json:"d"`
}

// SignedHead is a verified (or freshly signed) head and its wire form.
type SignedHead struct {
	Head
	// Bytes is the head as it travels: JSON of signedHead.
	Bytes []byte
}

// ShortDigest is the first 8 bytes of the content digest in hex.
func (h *SignedHead) ShortDigest() string {
	return hex.EncodeToString(h.Digest[:min(8, len(h.Digest))])
}

// signedHead is a head on the wire: the head's JSON, the signer's chain
// and the signature over the SHA-256 of the head's JSON.
type signedHead struct {
	Head  []byte   `json:"head"`
	Chain [][]byte `json:"chain"` // DER, leaf first
	Sig   []byte   `json:"sig"`
}

// MaxHeadBytes bounds a signed head: a few hundred bytes of head and a
// chain of a few KiB.
const MaxHeadBytes = 32 << 10

// SignHead signs h with a cluster's catalog-signing key (chain[0] is its
// certificate), as catalogs are signed.
func SignHead(h Head, key crypto.Signer, chain []*x509.Certificate) (*SignedHead, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("head of catalog %s v%d: empty certificate chain", h.Cluster, h.Version)
	}
	body, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("head of catalog %s v%d: %w", h.Cluster, h.Version, err)
	}
	digest := sha256.Sum256(body)
	sig, err := signDigest(key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("head of catalog %s v%d: sign: %w", h.Cluster, h.Version, err)
	}
	sh := signedHead{Head: body, Sig: sig}
	for _, c := range chain {
		sh.Chain = append(sh.Chain, c.Raw)
	}
	b, err := json.Marshal(sh)
	if err != nil {
		return nil, err
	}
	return &SignedHead{Head: h, Bytes: b}, nil
}

// VerifyHead checks a signed head as Verify checks a catalog: size, that
// the signer chains to roots, was issued by the named cluster's
// intermediate (or a root) and names exactly that cluster, and that the
// head is well formed. Errors wrap ErrOversize, ErrDecode, ErrSignature,
// ErrChain or ErrIdentity.
func VerifyHead(b []byte, roots *x509.CertPool, trustDomain string, now time.Time) (*SignedHead, error) {
	if len(b) > MaxHeadBytes {
		return nil, fmt.Errorf("%w: signed head of %d bytes, limit %d", ErrOversize, len(b), MaxHeadBytes)
	}
	var sh signedHead
	if err := json.Unmarshal(b, &sh); err != nil {
		return nil, fmt.Errorf("%w: signed head: %v", ErrDecode, err)
	}
	if len(sh.Chain) > maxChain {
		return nil, fmt.Errorf("%w: signed head with %d certificates, limit %d", ErrOversize, len(sh.Chain), maxChain)
	}
	var h Head
	if err := json.Unmarshal(sh.Head, &h); err != nil {
		return nil, fmt.Errorf("%w: head: %v", ErrDecode, err)
	}
	if !ValidClusterName(h.Cluster) || h.Version == 0 || len(h.Digest) != sha256.Size {
		return nil, fmt.Errorf("%w: head of cluster %+q version %d with a digest of %d bytes", ErrDecode, h.Cluster, h.Version, len(h.Digest))
	}
	digest := sha256.Sum256(sh.Head)
	if err := VerifySigner(digest[:], sh.Sig, sh.Chain, h.Cluster, roots, trustDomain, now); err != nil {
		return nil, fmt.Errorf("head of catalog %s v%d: %w", h.Cluster, h.Version, err)
	}
	return &SignedHead{Head: h, Bytes: b}, nil
}

// ServiceHash is the SHA-256 of a service's canonical encoding (its
// encoding/json form, which is how the catalog carries it).
func ServiceHash(s *ExportedService) ([32]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return [32]byte{}, fmt.Errorf("service %s: encode: %w", s.Key(), err)
	}
	return sha256.Sum256(b), nil
}

// ServiceHashes returns ServiceHash of each of c's services, in order.
func ServiceHashes(c *Catalog) ([][32]byte, error) {
	out := make([][32]byte, len(c.Services))
	for i := range c.Services {
		h, err := ServiceHash(&c.Services[i])
		if err != nil {
			return nil, fmt.Errorf("catalog %s v%d: %w", c.Cluster, c.Version, err)
		}
		out[i] = h
	}
	return out, nil
}

// digestDomain separates content digests from every other SHA-256 meshfed
// computes.
const digestDomain = "meshfed catalog content v1\n"

// ContentDigest is the digest an owner signs in its head: SHA-256 over the
// canonical encoding of the catalog's header (every field but the
// services), the number of services, and each service's ServiceHash in
// the catalog's order. It commits to the whole catalog as a hash of its
// canonical encoding does, but a receiver that applies a delta hashes
// only the services that changed. hashes must be ServiceHashes(c).
func ContentDigest(c *Catalog, hashes [][32]byte) ([32]byte, error) {
	if len(hashes) != len(c.Services) {
		return [32]byte{}, fmt.Errorf("catalog %s v%d: %d service hashes for %d services", c.Cluster, c.Version, len(hashes), len(c.Services))
	}
	hdr := *c
	hdr.Services = nil
	hb, err := json.Marshal(&hdr)
	if err != nil {
		return [32]byte{}, fmt.Errorf("catalog %s v%d: encode header: %w", c.Cluster, c.Version, err)
	}
	d := sha256.New()
	d.Write([]byte(digestDomain))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(hb)))
	d.Write(n[:])
	d.Write(hb)
	binary.BigEndian.PutUint64(n[:], uint64(len(hashes)))
	d.Write(n[:])
	for i := range hashes {
		d.Write(hashes[i][:])
	}
	var out [32]byte
	d.Sum(out[:0])
	return out, nil
}

// EqualDigest reports whether a head's digest is d.
func (h *Head) EqualDigest(d [32]byte) bool { return bytes.Equal(h.Digest, d[:]) }

// Canonicalize replaces invalid UTF-8 in c's strings the way encoding/json
// writes it (each bad byte becomes U+FFFD), so that the owner's content
// digest is the one receivers compute from the catalog they decode. It
// changes c in place; call it on the owner's own copy before signing.
func Canonicalize(c *Catalog) {
	fix := func(s *string) {
		if !utf8.ValidString(*s) {
			*s = toValidUTF8(*s)
		}
	}
	fix(&c.Cluster)
	fix(&c.Network)
	fix(&c.TrustBundleFingerprint)
	for i := range c.Gateways {
		fix(&c.Gateways[i])
	}
	for i := range c.Services {
		s := &c.Services[i]
		fix(&s.Namespace)
		fix(&s.Name)
		for j := range s.Ports {
			fix(&s.Ports[j].Name)
			fix(&s.Ports[j].Protocol)
		}
		for j := range s.Endpoints {
			e := &s.Endpoints[j]
			fix(&e.Address)
			fix(&e.Zone)
			fix(&e.Identity)
		}
	}
}

// toValidUTF8 replaces each byte of s that is not part of a valid UTF-8
// sequence with U+FFFD, as encoding/json does.
func toValidUTF8(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// EncodePayload returns c encoded as a catalog travels (gzip JSON),
// without a signature: a relay sends it with the owner's signed head.
func EncodePayload(c *Catalog) ([]byte, error) { return encode(c) }

// DecodePayload decodes an unsigned catalog payload within opts' size and
// decoding limits and checks its header, as Verify does after checking
// the signature. The caller must then check its ContentDigest against the
// owner's signed head. Errors wrap ErrOversize, ErrDecode or ErrInvalid.
func DecodePayload(b []byte, opts VerifyOptions) (*Catalog, error) {
	if opts.MaxBytes > 0 && len(b) > opts.MaxBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrOversize, len(b), opts.MaxBytes)
	}
	c, err := decode(b, opts.limits())
	if err != nil {
		return nil, err
	}
	var p problems
	c.validateHeader(&p)
	if err := p.err(); err != nil {
		return nil, fmt.Errorf("catalog %s v%d: %w: %w", c.Cluster, c.Version, ErrInvalid, err)
	}
	return c, nil
}

// PeekHead returns the cluster and version a signed head claims, without
// verifying anything, for reporting a head that fails VerifyHead.
func PeekHead(b []byte) (cluster string, version uint64) {
	var sh struct {
		Head []byte `json:"head"`
	}
	var h Head
	if len(b) <= MaxHeadBytes && json.Unmarshal(b, &sh) == nil && json.Unmarshal(sh.Head, &h) == nil {
		return h.Cluster, h.Version
	}
	return "", 0
}

// ServiceHashAndSize is ServiceHash and the length of the encoding hashed,
// which is what the service adds to the catalog's JSON.
func ServiceHashAndSize(s *ExportedService) ([32]byte, int, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return [32]byte{}, 0, fmt.Errorf("service %s: encode: %w", s.Key(), err)
	}
	return sha256.Sum256(b), len(b), nil
}

// EncodedSize is the length of c's JSON as a catalog carries it, given the
// lengths of its services' encodings (ServiceHashAndSize), without
// encoding the services again.
func EncodedSize(c *Catalog, sizes []int) (int64, error) {
	hdr := *c
	hdr.Services = nil
	hb, err := json.Marshal(&hdr)
	if err != nil {
		return 0, fmt.Errorf("catalog %s v%d: encode header: %w", c.Cluster, c.Version, err)
	}
	// The encoder adds a newline; "services":null stays null for a nil
	// slice and otherwise becomes "services":[s1,s2,...].
	n := int64(len(hb)) + 1
	if c.Services != nil {
		n += 2 - int64(len("null")) + int64(max(len(sizes)-1, 0))
	}
	for _, s := range sizes {
		n += int64(s)
	}
	return n, nil
}

// CheckBounds checks what a receiver's decoder bounds over a whole catalog
// (services, endpoints, inflated size) against opts, from the catalog
// itself and its encoded size: an owner publishing a delta checks the
// whole catalog this way instead of decoding it. Errors wrap ErrOversize.
func CheckBounds(c *Catalog, encodedSize int64, opts VerifyOptions) error {
	lim := opts.limits()
	if len(c.Services) > lim.MaxServices {
		return fmt.Errorf("%w: more than %d services", ErrOversize, lim.MaxServices)
	}
	endpoints := 0
	for i := range c.Services {
		endpoints += len(c.Services[i].Endpoints)
	}
	if endpoints > lim.MaxEndpoints {
		return fmt.Errorf("%w: more than %d endpoints in the catalog", ErrOversize, lim.MaxEndpoints)
	}
	if encodedSize > lim.MaxInflatedBytes {
		return fmt.Errorf("%w: inflates to more than %d bytes", ErrOversize, lim.MaxInflatedBytes)
	}
	return nil
}

// SameService reports whether a and b certainly encode alike: every field
// equal, times compared as values (so equal instants in different
// locations count as different). It is a fast way to reuse a hash.
func SameService(a, b *ExportedService) bool {
	if a.Namespace != b.Namespace || a.Name != b.Name || a.Headless != b.Headless || a.ExportedAt != b.ExportedAt ||
		!slices.Equal(a.Ports, b.Ports) || !slices.Equal(a.Endpoints, b.Endpoints) {
		return false
	}
	if (a.FailStatic == nil) != (b.FailStatic == nil) {
		return false
	}
	return a.FailStatic == nil || *a.FailStatic == *b.FailStatic
}
